// Strict UTF-8 for what clients send. Node's Buffer#toString('utf8') turns every invalid byte into U+FFFD, so a
// request with a stray Latin-1 byte would be stored with a replacement character (while Postgres itself refuses
// invalid UTF-8). Bodies and websocket messages are decoded with a fatal decoder instead, and a refusal names the
// first bad byte's offset.

const fatal = new TextDecoder('utf-8', { fatal: true });

/**
 * Offset of the first byte that starts an invalid (or truncated) UTF-8 sequence, or undefined when `bytes` is valid.
 * The rules are the WHATWG decoder's, which TextDecoder follows: no overlong forms, no surrogates, nothing above
 * U+10FFFF.
 */
export function invalidUtf8Offset(bytes: Uint8Array): number | undefined {
  let i = 0;
  const n = bytes.length;
  while (i < n) {
    const b = bytes[i]!;
    if (b < 0x80) {
      i += 1;
      continue;
    }
    let need: number;
    let lo = 0x80;
    let hi = 0xbf;
    if (b >= 0xc2 && b <= 0xdf) need = 1;
    else if (b >= 0xe0 && b <= 0xef) {
      need = 2;
      if (b === 0xe0) lo = 0xa0;
      if (b === 0xed) hi = 0x9f;
    } else if (b >= 0xf0 && b <= 0xf4) {
      need = 3;
      if (b === 0xf0) lo = 0x90;
      if (b === 0xf4) hi = 0x8f;
    } else return i;
    for (let k = 1; k <= need; k++) {
      const c = bytes[i + k];
      if (c === undefined || c < (k === 1 ? lo : 0x80) || c > (k === 1 ? hi : 0xbf)) return i;
    }
    i += need + 1;
  }
  return undefined;
}

export class InvalidUtf8Error extends Error {
  readonly offset: number;
  readonly byte: string;
  constructor(what: string, bytes: Uint8Array) {
    const offset = invalidUtf8Offset(bytes) ?? 0;
    const byte = `0x${(bytes[offset] ?? 0).toString(16).padStart(2, '0')}`;
    super(`${what} is not valid UTF-8: the byte at offset ${offset} (${byte}) does not start a valid UTF-8 sequence; send the text encoded as UTF-8`);
    this.name = 'InvalidUtf8Error';
    this.offset = offset;
    this.byte = byte;
  }
}

/** `bytes` as a string; throws InvalidUtf8Error naming `what` and the first bad byte when they are not UTF-8. */
export function decodeUtf8(bytes: Uint8Array, what: string): string {
  try {
    return fatal.decode(bytes);
  } catch {
    throw new InvalidUtf8Error(what, bytes);
  }
}
