// The worker's hot path (execution core v2): a local queue of claimed steps, filled and drained in batches.
//
// One round trip, ballast.settle_and_claim, records every outcome that finished since the last one (successes and
// failures) and claims the next steps, in one transaction. Up to two such calls are in flight per worker, each on
// its own connection: while Postgres works on one batch, the worker runs the steps the other brought, so the
// database and the worker overlap (on two cores: 0.76 x graphile-worker with one in flight, 0.99 x with two; see
// docs/hot-path.md). At low load a call carries one outcome and leaves immediately (no batching delay); under load
// it carries everything that finished since the last one left (and, while other steps are still running, up to
// `gatherMs` more). Claims go to a local queue (see capacity()): a slot that frees up starts the next step without
// a round trip, and each call claims at most its share of the queue (capacity / maxInFlight), so that the next call
// can claim while the steps of this one run.
//
// When to claim: after a notification on `ballast_queue` (a statement queued a step), after a round trip that
// came back full (there may be more), and on a poll (`pollIntervalMs`, default 1 s) that also picks up retries
// that fell due. A lost notification therefore delays a step by at most one poll; nothing can strand it.
// Scheduled steps (a delayed start, migration 0039) start on time: a round trip whose claim came back short also
// says in how many ms the next one falls due (nextDueMs), and the engine sets a timer for then (dueTimer).
// A connection lost during a round trip is retried with backoff for CONNECTION_RETRY_MS, keeping the outcomes: the
// work is done and only its record is missing. The batch is one transaction, so a retry after a commit whose reply
// was lost finds the attempts finished and answers them 'stale'.
import pg from 'pg';
import type { Logger } from 'pino';
import type { BallastDb, Claim, StepError } from '../db/api.ts';
import type { Settler } from './runner.ts';
import { storable, storableError } from './storable.ts';
import { connectionLost, CONNECTION_RETRY_MS } from '../db/retry.ts';
import { CHANNELS } from '../db/event-notifications.ts';

interface Pending<T> {
  attemptId: string;
  value: T;
  resolve: (r: { stepStatus: string } | undefined) => void;
  reject: (err: unknown) => void;
}

export interface StepEngineOptions {
  db: BallastDb;
  connectionString: string;
  workerId: string;
  /** Task identifiers (pipeline@version) this worker has code for. */
  tasks: string[];
  concurrency: number;
  leaseMs: number;
  pollIntervalMs: number;
  /** How long a round trip waits for steps still running to finish, so it carries them too (ms; 0: never). */
  gatherMs: number;
  /** Round trips in flight at once (the worker uses 2: Postgres works on one batch while the worker runs another's steps). */
  maxInFlight: number;
  log: Logger;
  /** Starts a claimed attempt; resolves when the handler is done (its slot free). */
  run: (claim: Claim) => { handlerDone: Promise<void>; settled: Promise<void> };
}

/** BALLAST_ENGINE_STATS=1: per round trip [start ms, duration ms, outcomes, asked, claimed], printed at stop. */
const STATS: number[][] | undefined = process.env.BALLAST_ENGINE_STATS === '1' ? [] : undefined;
if (STATS) {
  process.on('exit', () => {
    if (STATS.length < 2) return;
    const busy = STATS.reduce((a, r) => a + r[1]!, 0);
    const span = STATS.at(-1)![0]! + STATS.at(-1)![1]! - STATS[0]![0]!;
    const outcomes = STATS.reduce((a, r) => a + r[2]!, 0);
    process.stderr.write(`engine: ${STATS.length} round trips over ${span.toFixed(0)} ms, in flight ${(100 * busy / span).toFixed(0)}% of it, ` +
      `avg ${(busy / STATS.length).toFixed(2)} ms, ${(outcomes / STATS.length).toFixed(1)} outcomes and ` +
      `${(STATS.reduce((a, r) => a + r[4]!, 0) / STATS.length).toFixed(1)} claims per round trip\n`);
  });
}

/** The largest number of steps claimed in one round trip. */
const MAX_CLAIM = 200;
/** The most claimed steps a worker holds when its steps are short (unless 2 x concurrency is more): see capacity(). */
const MAX_HELD = 200;

export class StepEngine implements Settler {
  private readonly o: StepEngineOptions;
  private readonly queue: Claim[] = [];
  private running = 0;
  private ok: Pending<unknown>[] = [];
  private failed: Pending<StepError>[] = [];
  /** Round trips in flight (at most `maxInFlight`), and the claims they asked for. */
  private readonly flushing = new Set<Promise<void>>();
  private claimsInFlight = 0;
  private gathering: NodeJS.Timeout | undefined;
  /** Moving averages (ms) of a handler's run and of a round trip: they size the local queue (capacity()). */
  private avgStepMs: number | undefined;
  private avgRttMs: number | undefined;
  private gathered = false;
  private claimWanted = true;
  private claiming = true;
  private stopped = false;
  private listener: pg.Client | undefined;
  private listenRetry: NodeJS.Timeout | undefined;
  private poll: NodeJS.Timeout | undefined;
  /** Wakes the engine when the next scheduled step falls due (dueAt: when, performance.now() ms). */
  private dueTimer: NodeJS.Timeout | undefined;
  private dueAt = Infinity;
  private readonly settling = new Set<Promise<void>>();

  constructor(options: StepEngineOptions) {
    this.o = options;
  }

  async start(): Promise<void> {
    await this.listen().catch((err) => this.o.log.warn({ err: (err as Error).message }, 'could not LISTEN ballast_queue and ballast_gates; polling only'));
    this.poll = setInterval(() => this.wake(), this.o.pollIntervalMs);
    this.poll.unref();
    this.wake();
  }

  /** Attempt ids this worker holds: running, or claimed and waiting in the local queue (their leases are renewed). */
  heldAttemptIds(): string[] {
    return this.queue.map((c) => c.attemptId);
  }

  /** Drops claims of the local queue (cancelled, reclaimed): they will not run. */
  drop(attemptIds: Iterable<string>): void {
    const ids = new Set(attemptIds);
    for (let i = this.queue.length - 1; i >= 0; i--) if (ids.has(this.queue[i]!.attemptId)) this.queue.splice(i, 1);
  }

  /** The worker was declared dead: every claim it held was reclaimed. */
  dropAll(): void {
    this.queue.length = 0;
  }

  /** A notification or a poll: claim when there is room. */
  wake(): void {
    this.claimWanted = true;
    this.kick();
  }

  complete(attemptId: string, output: unknown): Promise<{ stepStatus: string } | undefined> {
    return new Promise((resolve, reject) => {
      this.ok.push({ attemptId, value: output, resolve, reject });
      this.kick();
    });
  }

  fail(attemptId: string, error: StepError): Promise<{ stepStatus: string } | undefined> {
    return new Promise((resolve, reject) => {
      this.failed.push({ attemptId, value: error, resolve, reject });
      this.kick();
    });
  }

  /**
   * Stops claiming; gives back the claims that have not started (uncharged: another worker takes them at once);
   * returns when every running step has finished and every outcome is recorded (or given up).
   */
  async stopClaiming(): Promise<void> {
    this.claiming = false;
    const unstarted = this.queue.splice(0).map((c) => c.attemptId);
    if (unstarted.length > 0) {
      await this.o.db.releaseAttempts(this.o.workerId, unstarted, 'worker shutting down; not started')
        .catch((err) => this.o.log.warn({ err: (err as Error).message }, 'could not release unstarted claims; their leases will expire'));
    }
  }

  /**
   * A key was paused or a limit set (ballast_gates): the claims of the local queue passed the claim's gate before it
   * changed, so give them back (uncharged) and claim again; what the gate now holds back stays queued in Postgres.
   * This is what makes a pause stop every worker within a second, however deep its local queue.
   */
  async returnUnstarted(): Promise<void> {
    const unstarted = this.queue.splice(0).map((c) => c.attemptId);
    if (unstarted.length > 0) {
      await this.o.db.releaseAttempts(this.o.workerId, unstarted, 'a key was paused or a limit set; not started')
        .catch((err) => this.o.log.warn({ err: (err as Error).message }, 'could not give back unstarted claims; their leases will expire'));
    }
    this.wake();
  }

  /** Waits for running steps and their outcomes. */
  async drain(): Promise<void> {
    for (;;) {
      if (this.settling.size > 0) {
        await Promise.allSettled([...this.settling]);
        continue;
      }
      if (this.flushing.size === 0 && this.ok.length + this.failed.length === 0) return;
      this.kick();
      // (A round trip may be waiting for its gather timer: wait on a timer, never spin on resolved promises.)
      if (this.flushing.size > 0) await Promise.allSettled([...this.flushing]);
      else await new Promise((resolve) => setTimeout(resolve, 10));
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.poll) clearInterval(this.poll);
    if (this.dueTimer) clearTimeout(this.dueTimer);
    if (this.gathering) clearTimeout(this.gathering);
    if (this.listenRetry) clearTimeout(this.listenRetry);
    const l = this.listener;
    this.listener = undefined;
    await l?.end().catch(() => {});
  }

  /**
   * Sets the due timer to wake the engine in `ms` (the next scheduled step's start), unless it already wakes sooner.
   * Steps due within a poll only: later ones are seen again by the polls before them. A step due already (another
   * claim held it) is looked at again after 10 ms, so that a step nobody can take does not make the engine spin.
   */
  private wakeAt(ms: number): void {
    if (this.stopped || ms > this.o.pollIntervalMs) return;
    const delay = ms <= 0 ? 10 : Math.ceil(ms);
    const at = performance.now() + delay;
    if (this.dueTimer && at >= this.dueAt) return;
    if (this.dueTimer) clearTimeout(this.dueTimer);
    this.dueAt = at;
    this.dueTimer = setTimeout(() => {
      this.dueTimer = undefined;
      this.dueAt = Infinity;
      this.wake();
    }, delay);
    this.dueTimer.unref();
  }

  private async listen(): Promise<void> {
    const client = new pg.Client({ connectionString: this.o.connectionString, application_name: `ballast-queue ${this.o.workerId}`, keepAlive: true });
    client.on('notification', (n) => (n.channel === CHANNELS.gates ? void this.returnUnstarted() : this.wake()));
    client.on('error', (err) => {
      if (!this.stopped) this.o.log.warn({ err: err.message }, 'queue listener connection failed; reconnecting (polling meanwhile)');
    });
    client.on('end', () => {
      if (this.listener !== client || this.stopped) return;
      this.listener = undefined;
      this.listenRetry = setTimeout(() => {
        this.listenRetry = undefined;
        // Anything queued while we were not listening: claim now.
        this.listen().then(() => this.wake(), () => client.emit('end'));
      }, 250);
      this.listenRetry.unref();
    });
    await client.connect();
    await client.query(`listen ${CHANNELS.queue}; listen ${CHANNELS.gates}`);
    this.listener = client;
  }

  /** Starts queued claims while slots are free. */
  private dispatch(): void {
    while (this.running < this.o.concurrency && this.queue.length > 0 && this.claiming) {
      const claim = this.queue.shift()!;
      this.running++;
      const started = performance.now();
      const { handlerDone, settled } = this.o.run(claim);
      let freed = false;
      const free = () => {
        if (freed) return;
        freed = true;
        this.avgStepMs = ewma(this.avgStepMs, performance.now() - started);
        this.running--;
        this.dispatch();
        this.kick();
      };
      handlerDone.then(free, free);
      const s = settled.catch((err) => this.o.log.error({ err: (err as Error).message, attempt_id: claim.attemptId }, 'attempt failed unexpectedly'))
        .finally(() => {
          free();
          this.settling.delete(s);
        });
      this.settling.add(s);
    }
  }

  /** How many claims the next round trip asks for. */
  private room(): number {
    if (!this.claiming || this.stopped) return 0;
    return Math.min(MAX_CLAIM, Math.max(0, this.capacity() - this.running - this.queue.length - this.claimsInFlight));
  }

  /**
   * How many claimed steps this worker holds at most (running and in the local queue): 2 x concurrency, and more
   * when its steps are shorter than a round trip: concurrency x (2 + round trip / step), up to MAX_HELD (or
   * 2 x concurrency if that is more). Short steps need the deeper queue to keep the slots busy while a round trip
   * is out, and larger batches cost less per step in Postgres (one client, noop3 jobs: 191 us per step in batches
   * of 50, 144 in batches of 100, 134 in batches of 200); a claim waits in the queue for about one round trip.
   * Steps that take longer than a round trip (model calls, I/O) keep the default: claiming more would only hold work
   * that another worker could start.
   */
  private capacity(): number {
    const c = this.o.concurrency;
    if (this.avgStepMs === undefined || this.avgRttMs === undefined || this.avgStepMs >= this.avgRttMs) return c * 2;
    return Math.max(c * 2, Math.min(MAX_HELD, c * (2 + Math.ceil(this.avgRttMs / Math.max(this.avgStepMs, 0.1)))));
  }

  private kick(): void {
    if (this.flushing.size >= this.o.maxInFlight || this.gathering) return;
    const hasOutcomes = this.ok.length + this.failed.length > 0;
    if (!hasOutcomes && !(this.claimWanted && this.room() > 0)) return;
    // Steps that started in the same dispatch usually finish within a millisecond of each other: while some are
    // still running, wait up to `gatherMs` for them so that one round trip carries them all (at low load nothing
    // else runs and the round trip leaves at once).
    if (this.running > 0 && this.o.gatherMs > 0 && !this.gathered) {
      this.gathering = setTimeout(() => {
        this.gathering = undefined;
        this.gathered = true;
        this.kick();
      }, this.o.gatherMs);
      return;
    }
    this.gathered = false;
    const f: Promise<void> = this.flush().finally(() => {
      this.flushing.delete(f);
      // Outcomes that arrived during the round trip, or room that opened: go again at once.
      this.kick();
    });
    this.flushing.add(f);
  }

  private async flush(): Promise<void> {
    const ok = this.ok.splice(0);
    const failed = this.failed.splice(0);
    // A success may have queued the steps that depend on it: claim with it, so they start in this round trip.
    const n = this.claimWanted || ok.length > 0 ? Math.min(this.room(), Math.ceil(this.capacity() / this.o.maxInFlight)) : 0;
    this.claimWanted = false;
    if (ok.length + failed.length === 0 && n === 0) return;
    this.claimsInFlight += n;
    try {
      await this.roundTrip(ok, failed, n);
    } finally {
      this.claimsInFlight -= n;
    }
  }

  private async roundTrip(ok: Pending<unknown>[], failed: Pending<StepError>[], n: number): Promise<void> {
    const oks: unknown[] = [];
    const okIds: string[] = [];
    for (const p of ok) {
      const text = storable(p.value);
      if (typeof text === 'string') {
        okIds.push(p.attemptId);
        oks.push(text);
      } else {
        // An output JSON or Postgres cannot carry is a permanent failure of the attempt, recorded with its reason.
        failed.push({ attemptId: p.attemptId, value: { class: 'unstorable_output', message: text.problem, retryable: false }, resolve: p.resolve, reject: p.reject });
      }
    }
    // Every error as Postgres can store it: one \u0000 in one message would make the whole batch's parameter fail.
    for (const p of failed) p.value = storableError(p.value);
    const okPending = ok.filter((p) => okIds.includes(p.attemptId));
    const until = Date.now() + CONNECTION_RETRY_MS;
    for (let delay = 100; ; delay = Math.min(delay * 2, 2000)) {
      try {
        const t0 = performance.now();
        const r = await this.o.db.settleAndClaim({
          workerId: this.o.workerId, ok: okIds, outputs: oks as string[],
          failed: failed.map((p) => p.attemptId), errors: failed.map((p) => p.value),
          tasks: this.o.tasks, n, leaseMs: this.o.leaseMs,
        });
        this.avgRttMs = ewma(this.avgRttMs, performance.now() - t0);
        if (STATS) STATS.push([t0, performance.now() - t0, okIds.length + failed.length, n, r.claims.length]);
        const status = new Map(r.settled.map(([id, s]) => [String(id), s]));
        for (const p of [...okPending, ...failed]) {
          const s = status.get(p.attemptId);
          if (!s || s === 'stale') {
            this.o.log.warn({ attempt_id: p.attemptId }, 'result discarded: the attempt no longer owns its step');
            p.resolve(undefined);
          } else if (s.startsWith('refused')) {
            p.reject(new Error(`ballast refused the outcome of attempt ${p.attemptId}: ${s}`));
          } else {
            p.resolve({ stepStatus: s });
          }
        }
        if (r.claims.length > 0 && !this.claiming) {
          // Claimed while the worker began to stop (stopClaiming gave back the queue before this call returned).
          await this.o.db.releaseAttempts(this.o.workerId, r.claims.map((c) => c.attemptId), 'worker shutting down; not started')
            .catch((err) => this.o.log.warn({ err: (err as Error).message }, 'could not release unstarted claims; their leases will expire'));
        } else if (r.claims.length > 0) {
          this.queue.push(...r.claims);
          this.dispatch();
        }
        // A full batch: there may be more waiting.
        if (n > 0 && r.claims.length === n) this.claimWanted = true;
        else if (r.nextDueMs != null) this.wakeAt(r.nextDueMs);
        return;
      } catch (err) {
        // Two round trips of this worker (or of two workers) can deadlock on the same jobs' rows in rare orders;
        // Postgres then aborts one, whose whole batch is rolled back: it is simply sent again.
        const retryable = connectionLost(err) || (err as { code?: string }).code === '40P01';
        if (!retryable || Date.now() + delay > until) {
          for (const p of [...okPending, ...failed]) p.reject(err);
          if (n > 0) this.claimWanted = true;
          if (!connectionLost(err)) this.o.log.error({ err: (err as Error).message }, 'settle_and_claim failed');
          return;
        }
        this.o.log.warn({ err: (err as Error).message, retry_ms: delay, outcomes: okIds.length + failed.length },
          'could not record outcomes (database connection lost); retrying');
        await new Promise((resolve) => setTimeout(resolve, delay));
      }
    }
  }
}

/** An exponentially weighted moving average (weight 0.1 for the new sample). */
function ewma(avg: number | undefined, sample: number): number {
  return avg === undefined ? sample : avg + 0.1 * (sample - avg);
}

