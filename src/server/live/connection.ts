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
// message written to it; the queued frames are dropped. Memory per socket stays bounded by those two numbers.
import type { WebSocket } from 'ws';
import type { Position, StreamEvent } from '../../db/event-stream.ts';
import type { Caller } from '../auth.ts';
import type { HubSubscriber } from './hub.ts';

export interface LiveLimits {
  /** Bytes waiting in a socket's send buffer beyond which its subscriptions end with SUBSCRIBER_TOO_SLOW. */
  maxBufferedBytes: number;
  /** Messages waiting in a socket's outbox beyond which the same happens. */
  maxQueued: number;
}

export const DEFAULT_LIVE_LIMITS: LiveLimits = { maxBufferedBytes: 4 * 1024 * 1024, maxQueued: 10_000 };

/** Connections written per turn of the event loop. */
export const FLUSH_PER_TURN = 50;

const SUFFIX = Buffer.from('}');

interface Frame {
  /** null: `bytes` is a whole protocol message (error, complete). */
  sub: LiveSubscription | null;
  bytes: Buffer;
  eventId: string | null;
}

export class LiveSubscription implements HubSubscriber {
  from: Position | null = null;
  buffer: StreamEvent[] = [];
  seen: Set<number> | null = null;
  readonly id: string;
  readonly prefix: Buffer;
  /** The eventId of the last message written to the socket: where the client resumes. */
  lastEventId: string | null;
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
    const socket = (this.ws as unknown as { _socket?: { cork(): void; uncork(): void } })._socket;
    socket?.cork();
    try {
      for (const f of frames) {
        if (f.sub === null) {
          this.ws.send(f.bytes, { binary: false });
          continue;
        }
        if (!f.sub.active) continue;
        this.ws.send(Buffer.concat([f.sub.prefix, f.bytes, SUFFIX]), { binary: false });
        if (f.eventId !== null) f.sub.lastEventId = f.eventId;
      }
    } finally {
      socket?.uncork();
    }
  }

  private tooSlow(frames: Frame[]): void {
    // Protocol messages already queued (errors, completes) still go out; every live subscription ends.
    const control = frames.filter((f) => f.sub === null);
    for (const f of control) this.ws.send(f.bytes, { binary: false });
    for (const sub of [...this.subs.values()]) {
      this.end(sub, {
        id: sub.id, type: 'error', payload: [{
          message: `this connection read its messages more slowly than they arrived (more than ${this.limits.maxQueued} waiting or ${this.limits.maxBufferedBytes} bytes unsent); subscribe again with \`after\` set to ${sub.lastEventId === null ? 'the newest eventId of the state you read' : `"${sub.lastEventId}"`}`,
          extensions: { code: 'SUBSCRIBER_TOO_SLOW', resumeAfter: sub.lastEventId },
        }],
      });
    }
    // The error messages just queued go out at once.
    const errors = this.outbox;
    this.outbox = [];
    for (const f of errors) this.ws.send(f.bytes, { binary: false });
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
    const batch = this.dirty.splice(0, FLUSH_PER_TURN);
    for (const conn of batch) conn.flush();
    if (this.dirty.length > 0) setImmediate(() => this.run());
    else this.scheduled = false;
  }

  /** Writes everything marked now (tests, shutdown). */
  flushAll(): void {
    while (this.dirty.length > 0) for (const conn of this.dirty.splice(0)) conn.flush();
  }
}
