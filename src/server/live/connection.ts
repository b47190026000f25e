// One websocket's live subscriptions and its outbox.
//
// The hub hands a subscription a rendered message (a Buffer shared by every subscriber of its group); the
// connection queues it with the subscription and writes it later, in a flush that frames each message for this
// socket ({"id":"<op id>","type":"next","payload":<message>}) and writes all queued frames of the socket in one
// corked write. A Flusher writes dirty connections in rounds of FLUSH_PER_TURN per turn of the event loop, so a busy
// fan-out yields to HTTP requests between rounds.
//
// Backpressure: a socket whose client reads slower than its events arrive fills its send buffer
// (ws.bufferedAmount). Before writing, a flush checks it: past maxBufferedBytes, or with more than maxQueued frames
// waiting, every subscription of the socket ends with SUBSCRIBER_TOO_SLOW and `resumeAfter`, the eventId of the last
// message written to it (for a modelTokens subscription, `resumeFromOffset` instead: the end of the last batch
// written to it); the queued frames are dropped. Memory per socket stays bounded by those two numbers.
import type { WebSocket } from 'ws';
import type { Position, StreamEvent } from '../../db/event-stream.ts';
import type { Caller } from '../auth.ts';
import type { HubSubscriber } from './hub.ts';
import { FLUSH_PER_TURN, TURN_BUDGET_MS } from './turn.ts';

export interface LiveLimits {
  /** Bytes waiting in a socket's send buffer beyond which its subscriptions end with SUBSCRIBER_TOO_SLOW. */
  maxBufferedBytes: number;
  /** Messages waiting in a socket's outbox beyond which the same happens. */
  maxQueued: number;
  /** Subscriptions one socket may hold (TOO_MANY_SUBSCRIPTIONS beyond). */
  maxSubscriptions: number;
}

const SUFFIX = Buffer.from('}');

/** The header of an unmasked, final text frame (RFC 6455 5.2) of `length` bytes. */
function frameHeader(length: number): Buffer {
  if (length < 126) return Buffer.from([0x81, length]);
  if (length < 65536) {
    const h = Buffer.allocUnsafe(4);
    h[0] = 0x81;
    h[1] = 126;
    h.writeUInt16BE(length, 2);
    return h;
  }
  const h = Buffer.allocUnsafe(10);
  h[0] = 0x81;
  h[1] = 127;
  h.writeBigUInt64BE(BigInt(length), 2);
  return h;
}

/** The TCP socket under a ws WebSocket, when ws exposes it and no extension (compression) transforms frames. */
function rawSocket(ws: WebSocket): { write(b: Buffer): boolean } | undefined {
  const any = ws as unknown as { _socket?: { write(b: Buffer): boolean; writable: boolean }; extensions?: string };
  if (!any._socket || !any._socket.writable || (any.extensions && any.extensions.length > 0)) return undefined;
  return any._socket;
}

interface Frame {
  /** null: `bytes` is a whole protocol message (error, complete). */
  sub: LiveSubscription | null;
  bytes: Buffer;
  eventId: string | null;
  /** A modelTokens message: the offset a resume starts from once this message is written. */
  resumeOffset?: number;
}

export class LiveSubscription implements HubSubscriber {
  from: Position | null = null;
  buffer: StreamEvent[] = [];
  readonly id: string;
  readonly prefix: Buffer;
  /** The eventId of the last message written to the socket: where the client resumes. */
  lastEventId: string | null;
  /** modelTokens only: where the client resumes (fromOffset) after the last message written; null for event feeds. */
  resumeOffset: number | null = null;
  active = true;
  unregister: () => void = () => {};
  private readonly conn: LiveConnection;

  constructor(conn: LiveConnection, id: string, after: string | null) {
    this.conn = conn;
    this.id = id;
    this.prefix = Buffer.from(`{"id":${JSON.stringify(id)},"type":"next","payload":`);
    this.lastEventId = after;
  }

  send(bytes: Buffer, eventId: string | null): void {
    if (this.active) this.conn.enqueue({ sub: this, bytes, eventId });
  }

  /** A modelTokens message, after which a resume starts at `resumeOffset` (fromOffset). */
  sendTokens(bytes: Buffer, resumeOffset: number): void {
    if (this.active) this.conn.enqueue({ sub: this, bytes, eventId: null, resumeOffset });
  }

  /** Its messages already queued still go out after it ended (it completed; it did not fail or get cut). */
  keepQueued = false;

  /** Ends the subscription from the server's side: what it queued goes out, then a `complete` message. */
  complete(): void {
    if (!this.active) return;
    this.keepQueued = true;
    this.conn.end(this, { id: this.id, type: 'complete' });
  }

  /** Ends the subscription with an error message (after what it queued: nothing queued is taken back). */
  fail(error: { message: string; extensions: Record<string, unknown> }): void {
    if (!this.active) return;
    this.keepQueued = true;
    this.conn.end(this, { id: this.id, type: 'error', payload: [error] });
  }

  /** Resolves true once the socket has room again (a long catch-up waits between pages); false if it ended. */
  writable(): Promise<boolean> {
    return this.conn.writable().then((ok) => ok && this.active);
  }
}

export class LiveConnection {
  readonly ws: WebSocket;
  readonly subs = new Map<string, LiveSubscription>();
  caller: Caller | null = null;
  private outbox: Frame[] = [];
  private marked = false;
  private readonly flusher: Flusher;
  private readonly limits: LiveLimits;

  constructor(ws: WebSocket, flusher: Flusher, limits: LiveLimits) {
    this.ws = ws;
    this.flusher = flusher;
    this.limits = limits;
  }

  get queued(): number {
    return this.outbox.length;
  }

  enqueue(frame: Frame): void {
    this.outbox.push(frame);
    if (!this.marked) {
      this.marked = true;
      this.flusher.mark(this);
    }
  }

  /** Resolves true once the outbox is written and the send buffer is under half its limit; false if it closed. */
  async writable(): Promise<boolean> {
    const deadline = Date.now() + 60_000;
    while (this.ws.readyState === this.ws.OPEN && Date.now() < deadline) {
      if (this.outbox.length === 0 && this.ws.bufferedAmount <= this.limits.maxBufferedBytes / 2) return true;
      await new Promise((r) => setTimeout(r, 10));
    }
    return false;
  }

  /** Queues a whole protocol message after what is already queued. */
  message(message: unknown): void {
    this.enqueue({ sub: null, bytes: Buffer.from(JSON.stringify(message)), eventId: null });
  }

  /** Ends one subscription: removed from the hub at once, `final` (an error or complete message) sent in order. */
  end(sub: LiveSubscription, final?: unknown): void {
    if (!sub.active) return;
    sub.active = false;
    sub.unregister();
    if (this.subs.get(sub.id) === sub) this.subs.delete(sub.id);
    if (final !== undefined) this.message(final);
  }

  /** Ends every subscription without a message (the socket closed). */
  closeAll(): void {
    for (const sub of [...this.subs.values()]) this.end(sub);
    this.outbox = [];
  }

  /** Writes the outbox (the Flusher calls it). */
  flush(): void {
    this.marked = false;
    const frames = this.outbox;
    if (frames.length === 0) return;
    this.outbox = [];
    if (this.ws.readyState !== this.ws.OPEN) return;
    if (this.ws.bufferedAmount > this.limits.maxBufferedBytes || frames.length > this.limits.maxQueued) {
      this.tooSlow(frames);
      return;
    }
    // Every queued message of this socket framed into one buffer and written with one call: a text frame per
    // message (the server does not mask; no permessage-deflate, ws.ts turns it off), written to the TCP socket
    // under ws. Each write holds whole frames, so they interleave safely with ws's own (pings, graphql-ws replies),
    // and ws.bufferedAmount still counts them.
    const socket = rawSocket(this.ws);
    const parts: Buffer[] = [];
    for (const f of frames) {
      if (f.sub === null) {
        parts.push(frameHeader(f.bytes.length), f.bytes);
        continue;
      }
      if (!f.sub.active && !f.sub.keepQueued) continue;
      parts.push(frameHeader(f.sub.prefix.length + f.bytes.length + 1), f.sub.prefix, f.bytes, SUFFIX);
      if (f.eventId !== null) f.sub.lastEventId = f.eventId;
      if (f.resumeOffset !== undefined) f.sub.resumeOffset = f.resumeOffset;
    }
    if (parts.length === 0) return;
    if (socket) {
      socket.write(parts.length === 1 ? parts[0]! : Buffer.concat(parts));
      return;
    }
    // No raw socket to write to (another ws version): message by message through ws.
    for (let i = 0; i < parts.length;) {
      const header = parts[i]!;
      const n = header.length === 2 ? header[1]! & 0x7f : header.length === 4 ? header.readUInt16BE(2) : Number(header.readBigUInt64BE(2));
      let len = 0;
      const body: Buffer[] = [];
      for (i++; len < n; i++) {
        body.push(parts[i]!);
        len += parts[i]!.length;
      }
      this.ws.send(Buffer.concat(body), { binary: false });
    }
  }

  private tooSlow(frames: Frame[]): void {
    // Protocol messages already queued (errors, completes) still go out; every live subscription ends.
    const control = frames.filter((f) => f.sub === null);
    for (const f of control) this.ws.send(f.bytes, { binary: false });
    for (const sub of [...this.subs.values()]) this.end(sub, { id: sub.id, type: 'error', payload: [this.tooSlowError(sub)] });
    // The error messages just queued go out at once.
    const errors = this.outbox;
    this.outbox = [];
    for (const f of errors) this.ws.send(f.bytes, { binary: false });
  }

  /** The error that ends `sub`, with where it resumes: `after` for an event feed, `fromOffset` for modelTokens. */
  private tooSlowError(sub: LiveSubscription): { message: string; extensions: Record<string, unknown> } {
    const why = `this connection read its messages more slowly than they arrived (more than ${this.limits.maxQueued} waiting or ${this.limits.maxBufferedBytes} bytes unsent)`;
    if (sub.resumeOffset !== null) {
      return {
        message: `${why}; subscribe again with \`fromOffset: ${sub.resumeOffset}\` (the offset of the last batch you received plus the length of its text)`,
        extensions: { code: 'SUBSCRIBER_TOO_SLOW', resumeFromOffset: sub.resumeOffset },
      };
    }
    return {
      message: `${why}; subscribe again with \`after\` set to ${sub.lastEventId === null ? 'the newest eventId of the state you read' : `"${sub.lastEventId}"`}`,
      extensions: { code: 'SUBSCRIBER_TOO_SLOW', resumeAfter: sub.lastEventId },
    };
  }
}

/** Writes marked connections, FLUSH_PER_TURN per turn of the event loop. */
export class Flusher {
  private dirty: LiveConnection[] = [];
  private scheduled = false;

  mark(conn: LiveConnection): void {
    this.dirty.push(conn);
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => this.run());
    }
  }

  private run(): void {
    // At most FLUSH_PER_TURN connections or TURN_BUDGET_MS of work, whichever comes first, then the event loop
    // turns (HTTP requests, /health) before the next round.
    const began = performance.now();
    let n = 0;
    let i = 0;
    for (; i < this.dirty.length && n < FLUSH_PER_TURN; i++, n++) {
      this.dirty[i]!.flush();
      if (performance.now() - began > TURN_BUDGET_MS) {
        i++;
        break;
      }
    }
    this.dirty.splice(0, i);
    if (this.dirty.length > 0) setImmediate(() => this.run());
    else this.scheduled = false;
  }

  /** Writes everything marked now (tests, shutdown). */
  flushAll(): void {
    while (this.dirty.length > 0) for (const conn of this.dirty.splice(0)) conn.flush();
  }
}
