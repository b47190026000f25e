// What Postgres can store of a step's outcome, decided before the round trip that records it (engine.ts): an
// output that JSON or jsonb cannot carry fails its attempt as `unstorable_output` with the reason; an error's texts
// are made storable (a \u0000 shown escaped, a lone surrogate replaced, long messages cut at MAX_ERROR_MESSAGE
// characters, saying so). One bad value must never fail the batch it travels in.
import { createHash } from 'node:crypto';
import type { StepError } from '../db/api.ts';

/** The longest error message recorded (characters); a longer one is cut, saying how long it was. */
export const MAX_ERROR_MESSAGE = 8000;
/** The longest error class or code recorded (characters). */
const MAX_ERROR_LABEL = 200;

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;

/** `text` with every lone UTF-16 surrogate replaced by U+FFFD (String.prototype.toWellFormed). */
const wellFormed = (text: string) => text.replace(LONE_SURROGATE, '\uFFFD');

/** `text` as Postgres can store it: no \u0000 (shown as \\u0000), no lone surrogate (U+FFFD), at most `max` characters. */
export function storableText(text: string, max: number): string {
  let t = text.includes('\u0000') ? text.replaceAll('\u0000', '\\u0000') : text;
  t = wellFormed(t);
  if (t.length > max) {
    const note = ` ... (cut: ${t.length} characters)`;
    t = wellFormed(t.slice(0, max - note.length)) + note;
  }
  return t;
}

/** The longest raw model output kept in a trace row (characters). */
export const MAX_RAW_OUTPUT = 65_536;

/**
 * A model's raw output as a trace keeps it: storable (see storableText) and at most MAX_RAW_OUTPUT characters; a
 * longer one is cut, with its length and the SHA-256 of the whole text, so that it can still be recognised.
 */
export function rawOutputText(text: string | null): string | null {
  if (text === null) return null;
  const safe = storableText(text, Number.MAX_SAFE_INTEGER);
  if (safe.length <= MAX_RAW_OUTPUT) return safe;
  const sha = createHash('sha256').update(text).digest('hex');
  const note = ` ... (cut: ${text.length} characters, sha256 ${sha})`;
  return wellFormed(safe.slice(0, MAX_RAW_OUTPUT - note.length)) + note;
}

/** A StepError every field of which Postgres can store (see storableText); fail_step's limits met. */
export function storableError(e: StepError): StepError {
  const label = (v: unknown, fallback: string) => storableText(typeof v === 'string' && v !== '' ? v : fallback, MAX_ERROR_LABEL);
  const out: StepError = { ...e, class: label(e.class, 'error'), message: storableText(typeof e.message === 'string' && e.message !== '' ? e.message : 'error', MAX_ERROR_MESSAGE) };
  if (e.code !== undefined) out.code = label(e.code, 'error');
  return out;
}

/** Deepest nesting of arrays and objects a stored output may have (Postgres' parser stops far deeper, on its stack). */
export const MAX_OUTPUT_DEPTH = 1000;

/** How deeply arrays and objects nest in JSON `text` (brackets outside strings). */
function nesting(text: string): number {
  let depth = 0;
  let max = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 92) i++; // backslash: skip the escaped character
      else if (c === 34) inString = false;
    } else if (c === 34) inString = true;
    else if (c === 123 || c === 91) max = Math.max(max, ++depth);
    else if (c === 125 || c === 93) depth--;
  }
  return max;
}

/**
 * The JSON text of a step's output, or why Postgres cannot store it: JSON.stringify fails (BigInt, a cycle, nesting
 * deeper than the stack), it nests deeper than MAX_OUTPUT_DEPTH, or the text holds \u0000 (jsonb refuses it) or a
 * lone surrogate.
 */
export function storable(value: unknown): string | { problem: string } {
  let text: string | undefined;
  try {
    text = JSON.stringify(value === undefined ? null : value);
  } catch (err) {
    return { problem: `the step's output cannot be stored as JSON: ${(err as Error).message}` };
  }
  if (text === undefined) return 'null';
  const depth = nesting(text);
  if (depth > MAX_OUTPUT_DEPTH) {
    return { problem: `the step's output is nested ${depth} levels deep; ballast stores at most ${MAX_OUTPUT_DEPTH}` };
  }
  if (text.includes('\\u0000')) return { problem: 'the step\'s output holds a \\u0000 character, which Postgres jsonb cannot store' };
  if (/\\ud[89ab][0-9a-f]{2}(?!\\ud[c-f])|(?<!\\ud[89ab][0-9a-f]{2})\\ud[c-f][0-9a-f]{2}/i.test(text)) {
    return { problem: 'the step\'s output holds a lone UTF-16 surrogate, which Postgres jsonb cannot store' };
  }
  return text;
}
