// Live tokens, the worker's side: the text a streaming model call receives goes to the step's token log
// (migrations/0043_live_tokens.sql) in batches, for GraphQL subscribers (modelTokens) and `ballast watch --tokens`.
//
// Batching: deltas are gathered and flushed every FLUSH_MS (100 ms) after the first unflushed one, or at once when
// MAX_CHARS (2,000) are waiting, whichever comes first: one INSERT and one NOTIFY per flush (append_tokens), never
// one per token. Flushes run one at a time, in order. A call's first flush starts a new segment (`first`); the end of
// the attempt's streaming is a `done` row, written before the attempt's outcome is recorded.
//
// Live tokens are a view of the work, never a condition of it: a failed flush is logged once and the stream stops
// writing; the model call and the step go on. An attempt that lost its step (append_tokens returns null) stops too.
// Only model steps with `stream: true` get a token stream (kinds/model.ts): nothing here runs for any other step.
//
// Pruning: PRUNE_AFTER_MS after this process's last stream ended, one call of ballast.prune_token_chunks deletes the
// logs of final steps (also other workers' leftovers); the retention service runs it too.
import type { Logger } from 'pino';
import type { BallastDb } from '../db/api.ts';
import { appendTokens, pruneTokenChunks } from '../db/token-stream.ts';
import type { AttemptRun, StepEnd, TokenSink } from '../pipeline/protocol.ts';

/** Flush this long after the first unflushed delta... */
export const FLUSH_MS = 100;
/** ...or as soon as this many characters wait. */
export const MAX_CHARS = 2000;
/** How long a final step's token log is kept for late subscribers before a sweep deletes it. */
export const KEEP_MS = 60_000;

export interface TokenStreamOptions {
  flushMs?: number;
  maxChars?: number;
}

export class TokenStream implements TokenSink {
  readonly #db: BallastDb;
  readonly #attemptId: string;
  readonly #log: Logger;
  readonly #flushMs: number;
  readonly #maxChars: number;
  #segment = 0;
  #rung: string | null = null;
  #model: string | null = null;
  #pending = '';
  #first = false;
  #timer: NodeJS.Timeout | undefined;
  #chain: Promise<void> = Promise.resolve();
  #stopped = false;
  /** Flushes written (tests and logs). */
  flushes = 0;

  constructor(db: BallastDb, attemptId: string, log: Logger, o: TokenStreamOptions = {}) {
    this.#db = db;
    this.#attemptId = attemptId;
    this.#log = log;
    this.#flushMs = o.flushMs ?? FLUSH_MS;
    this.#maxChars = o.maxChars ?? MAX_CHARS;
  }

  /** A new call begins (a re-ask, a fallback): returns the hook its text deltas go to. */
  segment(rung: string, model: string): (delta: string) => void {
    this.flush();
    this.#segment++;
    this.#rung = rung;
    this.#model = model;
    this.#first = true;
    return (delta) => this.#add(delta);
  }

  #add(delta: string): void {
    if (this.#stopped || delta === '') return;
    this.#pending += delta;
    if (this.#pending.length >= this.#maxChars) this.flush();
    else this.#timer ??= setTimeout(() => this.flush(), this.#flushMs);
  }

  /** Queues what is pending as one batch. */
  flush(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#pending === '' || this.#stopped) return;
    const batch = { segment: this.#segment, rung: this.#rung, model: this.#model, text: this.#pending, first: this.#first, done: false };
    this.#pending = '';
    this.#first = false;
    this.#write(batch);
  }

  #write(batch: Parameters<typeof appendTokens>[2]): void {
    this.#chain = this.#chain.then(async () => {
      if (this.#stopped) return;
      try {
        const end = await appendTokens(this.#db, this.#attemptId, batch);
        this.flushes++;
        if (end === null) this.#stopped = true;
      } catch (err) {
        this.#stopped = true;
        this.#log.warn({ err: (err as Error).message }, 'live tokens: a flush failed; this attempt streams no more tokens (the call goes on)');
      }
    });
  }

  /** Flushes what is pending and ends the attempt's streaming (a done row); resolves once written. */
  async close(): Promise<void> {
    this.flush();
    this.#write({ segment: Math.max(this.#segment, 1), rung: null, model: null, text: '', first: false, done: true });
    await this.#chain;
    this.#stopped = true;
  }
}

/**
 * Runs one attempt of a streaming model step with a token stream (`run(withTokens)`), and ends the stream before the
 * attempt's outcome is recorded, however it ended.
 */
export async function streamTokens(a: AttemptRun, run: (a: AttemptRun) => Promise<StepEnd>): Promise<StepEnd> {
  const tokens = new TokenStream(a.db, a.attemptId, a.ctx.log);
  try {
    return await run({ ...a, tokens });
  } finally {
    await tokens.close();
    schedulePrune(a.db, a.ctx.log);
  }
}

const pruneTimers = new WeakMap<BallastDb, NodeJS.Timeout>();

/** One sweep KEEP_MS (plus a second) after this process's last stream on `db` ended. */
function schedulePrune(db: BallastDb, log: Logger): void {
  clearTimeout(pruneTimers.get(db));
  const timer = setTimeout(() => {
    pruneTimers.delete(db);
    pruneTokenChunks(db, KEEP_MS).catch((err: Error) => log.warn({ err: err.message }, 'live tokens: pruning the token logs failed (the next stream or retention tries again)'));
  }, KEEP_MS + 1000);
  timer.unref();
  pruneTimers.set(db, timer);
}
