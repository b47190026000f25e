// Live tokens, the worker's side: the text a streaming model call receives goes to the step's token log
// (migrations/0043_live_tokens.sql) in batches, for GraphQL subscribers (modelTokens) and `ballast watch --tokens`.
//
// Batching: deltas are gathered and flushed every FLUSH_MS (100 ms) after the first unflushed one, or at once when
// MAX_CHARS (2,000) are waiting, whichever comes first: one INSERT and one NOTIFY per flush (append_tokens), never
// one per token. Flushes run one at a time, in order. A call's first flush starts a new segment (`first`); the end of
// the attempt's streaming is a `done` row, written before the attempt's outcome is recorded: by streamTokens once
// the ladder returns, or by the ladder itself (close()) before it settles the attempt on its own (review, a pause).
//
// Live tokens are a view of the work, never a condition of it: a failed flush is logged once and the stream stops
// writing; the model call and the step go on. An attempt that lost its step (append_tokens returns null) stops too.
// Only model steps with `stream: true` get a token stream (kinds/model.ts): nothing here runs for any other step.
//
// Pruning (TokenSweeper, one per database handle): KEEP_MS (plus a second) after this process's last stream ended,
// one call of ballast.prune_token_chunks deletes the logs of final steps older than KEEP_MS (also other workers'
// leftovers) and of any step whose last batch is an hour old (a stream whose worker died); the retention service
// runs it too. Each stream that ends re-arms the one timer (unref'd: it never keeps a process alive).
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
  #closed = false;
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
    if (this.#stopped || this.#closed || delta === '') return;
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

  /** Flushes what is pending and ends the attempt's streaming (a done row); resolves once written. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return this.#chain;
    this.#closed = true;
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
    tokenSweeper(a.db, a.ctx.log).schedule();
  }
}

export interface TokenSweeperOptions {
  /** How long after the last stream ended the sweep runs (default KEEP_MS plus a second). */
  delayMs?: number;
  /** A final step's token log older than this is deleted (default KEEP_MS). */
  keepMs?: number;
}

/** The sweep of token logs for one database handle: schedule() after each stream, runOnce() to drive it by hand. */
export class TokenSweeper {
  readonly #db: BallastDb;
  readonly #log: Logger;
  readonly #delayMs: number;
  readonly #keepMs: number;
  #timer: NodeJS.Timeout | undefined;
  /** Sweeps run (tests). */
  runs = 0;

  constructor(db: BallastDb, log: Logger, o: TokenSweeperOptions = {}) {
    this.#db = db;
    this.#log = log;
    this.#delayMs = o.delayMs ?? KEEP_MS + 1000;
    this.#keepMs = o.keepMs ?? KEEP_MS;
  }

  /** (Re)arms the one sweep: delayMs from now. */
  schedule(): void {
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.runOnce().catch((err: Error) => this.#log.warn({ err: err.message }, 'live tokens: pruning the token logs failed (the next stream or retention tries again)'));
    }, this.#delayMs);
    this.#timer.unref();
  }

  /** A sweep is armed. */
  get scheduled(): boolean {
    return this.#timer !== undefined;
  }

  /** One sweep now: returns the rows deleted. */
  async runOnce(): Promise<number> {
    const n = await pruneTokenChunks(this.#db, this.#keepMs);
    this.runs++;
    return n;
  }

  stop(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
  }
}

const sweepers = new WeakMap<BallastDb, TokenSweeper>();

/** The sweeper of `db` (made with the defaults on first use). */
export function tokenSweeper(db: BallastDb, log: Logger): TokenSweeper {
  let s = sweepers.get(db);
  if (!s) sweepers.set(db, (s = new TokenSweeper(db, log)));
  return s;
}
