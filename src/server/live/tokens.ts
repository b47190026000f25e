// modelTokens(stepId, fromOffset): the text a streaming model step sends, live, over the same websocket machinery as
// the event feeds (protocol.ts, connection.ts). One subscription follows the step, not an attempt: through retries,
// re-asks, fallbacks and a worker that died mid-stream, until the step ends.
//
// TokenHub, one per API process, holds one LISTEN ballast_tokens connection (opened with the first subscription) and
// reads a step's new rows once per notification batch for all of that step's subscribers (at most one read per step
// at a time; a notification meanwhile causes one more). Each subscriber keeps the seq of the last row it was sent and
// takes only rows after it, so nothing is sent twice.
//
// Opening, read after listen: the caller must see the step (row-level security, as for a query; NOT_FOUND
// otherwise). The subscription registers with the event hub (to learn when the step ends) and with the TokenHub
// (LISTEN in effect), then reads its backlog under the caller's role (the rows from fromOffset, merged per call),
// sends it, takes the last seq of that read as its position, and reads once more: a row committed while the backlog
// was read is found by that read or announced after it. No gap, no duplicate.
//
// Messages: `tokens` (a batch of text; newSegment on a call's first), `attempt_end` (an attempt's streaming ended:
// the worker's end row; an attempt whose worker died has none, the next attempt's first batch follows), and the last
// one, `done`, with the step's status. The end is the step's status, never a row: ENDING_STATUSES (final, or
// needs_review: no model runs again until a person decides, and a decision runs none). A worker writes every row of
// an attempt before it records the attempt's outcome, so once the step's status ends the subscription (seen by the
// event hub, or by the backlog read in the same snapshot as the rows) one more read finds every row; then `done`.
import pg from 'pg';
import type { Logger } from 'pino';
import { parseTokensNotice, readAfter, readBacklog, TOKENS_CHANNEL, type TokenChunk } from '../../db/token-stream.ts';
import { FINAL_STEP_STATUSES } from '../../statuses.ts';
import type { Caller } from '../auth.ts';
import { clientError } from '../errors.ts';
import type { LiveSubscription } from './connection.ts';
import type { EventHub, GroupSpec, HubSubscriber } from './hub.ts';
import type { Queryable } from '../../db/verbs.ts';
import { project, type CompiledSubscription } from './selection.ts';

/** Rows read per live read; a longer run of rows takes several. */
const READ_LIMIT = 1000;
/** A backlog message holds at most this many characters (a call's rows are merged up to it). */
const MERGE_CHARS = 16_384;

/** A step in one of these streams no more: final statuses, and needs_review (a decision runs no model). */
export const ENDING_STATUSES: ReadonlySet<string> = new Set([...FINAL_STEP_STATUSES, 'needs_review']);

/** A TokenBatch as the GraphQL schema declares it (token-subscriptions.ts). */
export interface TokenBatch {
  type: 'tokens' | 'attempt_end' | 'done';
  stepId: string;
  offset: number;
  text: string;
  attemptId: string | null;
  segment: number | null;
  rung: string | null;
  model: string | null;
  newSegment: boolean;
  done: boolean;
  replayed: boolean;
  /** On `done`: the step's status that ended the subscription. */
  stepStatus: string | null;
}

interface TokenSubscriber {
  /** The seq of the last row sent; null while the backlog is read. */
  lastSeq: bigint | null;
  /** Sends the rows after lastSeq (rows at or below it are skipped, so overlapping reads are harmless). */
  deliver(rows: TokenChunk[]): void;
}

export class TokenHub {
  readonly #o: { connectionString: string; log: Logger };
  #client: pg.Client | undefined;
  #connecting: Promise<pg.Client> | undefined;
  readonly #steps = new Map<string, Set<TokenSubscriber>>();
  readonly #reads = new Map<string, { again: boolean; done: Promise<boolean> }>();
  #stopped = false;

  constructor(o: { connectionString: string; log: Logger }) {
    this.#o = o;
  }

  /** Adds `sub` to `stepId`'s subscribers once LISTEN is in effect; returns its removal. */
  async register(stepId: string, sub: TokenSubscriber): Promise<() => void> {
    await this.#listen();
    let subs = this.#steps.get(stepId);
    if (!subs) this.#steps.set(stepId, (subs = new Set()));
    subs.add(sub);
    return () => {
      const current = this.#steps.get(stepId);
      current?.delete(sub);
      if (current?.size === 0) this.#steps.delete(stepId);
    };
  }

  /**
   * Reads the step's new rows for its subscribers; resolves once that read (and any it caused) is over: true if it
   * read to the end of the log, false if it could not (no LISTEN connection, a failed query).
   */
  read(stepId: string): Promise<boolean> {
    const running = this.#reads.get(stepId);
    if (running) {
      running.again = true;
      return running.done;
    }
    const state = { again: false, done: Promise.resolve(true) };
    state.done = this.#readLoop(stepId, state).finally(() => this.#reads.delete(stepId));
    this.#reads.set(stepId, state);
    return state.done;
  }

  async #readLoop(stepId: string, state: { again: boolean }): Promise<boolean> {
    do {
      state.again = false;
      const subs = [...(this.#steps.get(stepId) ?? [])].filter((s) => s.lastSeq !== null);
      if (subs.length === 0) return true;
      if (!this.#client) return false;
      const from = subs.reduce((m, s) => (s.lastSeq! < m ? s.lastSeq! : m), subs[0]!.lastSeq!);
      let rows: TokenChunk[];
      try {
        rows = await readAfter(this.#client, stepId, String(from), READ_LIMIT);
      } catch (err) {
        this.#o.log.warn({ err: (err as Error).message, step_id: stepId }, 'reading live tokens failed; the next notification reads again');
        return false;
      }
      for (const s of subs) s.deliver(rows);
      if (rows.length === READ_LIMIT) state.again = true;
    } while (state.again && !this.#stopped);
    return !this.#stopped;
  }

  async #listen(): Promise<pg.Client> {
    if (this.#client) return this.#client;
    this.#connecting ??= this.#connect().finally(() => (this.#connecting = undefined));
    return this.#connecting;
  }

  async #connect(): Promise<pg.Client> {
    const client = new pg.Client({ connectionString: this.#o.connectionString, application_name: 'ballast-graphql-tokens', keepAlive: true });
    client.on('notification', (msg) => {
      const notice = msg.channel === TOKENS_CHANNEL ? parseTokensNotice(msg.payload) : null;
      if (notice && this.#steps.has(notice.stepId)) void this.read(notice.stepId);
    });
    const lost = (err: Error) => {
      if (this.#client !== client) return;
      this.#client = undefined;
      client.end().catch(() => {});
      this.#o.log.warn({ err: err.message }, 'LISTEN connection for live tokens lost; reconnecting');
      if (!this.#stopped) setTimeout(() => void this.#reconnect(), 500).unref();
    };
    client.on('error', lost);
    client.on('end', () => lost(new Error('connection ended')));
    await client.connect();
    await client.query(`listen ${TOKENS_CHANNEL}`);
    this.#client = client;
    return client;
  }

  async #reconnect(): Promise<void> {
    if (this.#stopped || this.#steps.size === 0) return;
    try {
      await this.#listen();
      for (const step of this.#steps.keys()) void this.read(step);
    } catch (err) {
      this.#o.log.warn({ err: (err as Error).message }, 'live tokens: reconnecting failed; trying again');
      setTimeout(() => void this.#reconnect(), 2000).unref();
    }
  }

  /** Subscriptions registered (tests). */
  get size(): number {
    let n = 0;
    for (const subs of this.#steps.values()) n += subs.size;
    return n;
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    this.#steps.clear();
    const client = this.#client;
    this.#client = undefined;
    await Promise.allSettled([...this.#reads.values()].map((r) => r.done));
    await client?.end().catch(() => {});
  }
}

const cp = (s: string) => [...s].length;

function batchOf(r: TokenChunk, replayed: boolean): TokenBatch {
  return {
    type: r.done ? 'attempt_end' : 'tokens', stepId: r.stepId, offset: r.startOffset, text: r.text, attemptId: r.attemptId,
    segment: r.segment, rung: r.rung, model: r.model, newSegment: r.first, done: false, replayed, stepStatus: null,
  };
}

/** The backlog as messages: a call's consecutive rows merged (up to MERGE_CHARS); attempt ends kept. */
function mergeBacklog(rows: TokenChunk[]): TokenBatch[] {
  const out: TokenBatch[] = [];
  for (const r of rows) {
    const prev = out.at(-1);
    if (prev && !r.done && !r.first && prev.type === 'tokens' && prev.attemptId === r.attemptId && prev.segment === r.segment
      && prev.text.length + r.text.length <= MERGE_CHARS) {
      prev.text += r.text;
      continue;
    }
    out.push(batchOf(r, true));
  }
  return out;
}

/** What a token feed needs of the feeds' context (feeds.ts): the hubs, and statements run as the caller. */
export interface TokenFeedContext {
  hub: EventHub;
  tokens: TokenHub | undefined;
  asCaller<T>(caller: Caller, fn: (c: Queryable) => Promise<T>): Promise<T>;
}

/** Opens a modelTokens subscription for `caller` (see the header). */
export async function openTokenFeed(ctx: TokenFeedContext, caller: Caller, compiled: CompiledSubscription, sub: LiveSubscription): Promise<void> {
  if (!ctx.tokens) throw clientError('NOT_AVAILABLE', 'live tokens are not served by this server');
  const tokens = ctx.tokens;
  const stepId = String(compiled.args.stepId);
  const fromOffset = Number(compiled.args.fromOffset ?? 0);
  if (!Number.isInteger(fromOffset) || fromOffset < 0) {
    throw clientError('BAD_USER_INPUT', `fromOffset must be 0 or more (the offset of the first character you want), got ${fromOffset}`);
  }
  const render = (b: TokenBatch) => Buffer.from(JSON.stringify({ data: { [compiled.key]: project(b as unknown as Record<string, unknown>, compiled.shape) } }));
  const jobId = await ctx.asCaller(caller, async (c) => {
    const { rows } = await c.query<{ job_id: string }>({ text: 'select job_id::text as job_id from ballast.steps where id = $1', values: [stepId] });
    return rows[0]?.job_id;
  });
  if (!jobId) throw clientError('NOT_FOUND', `step ${stepId} does not exist`);

  // Where a resume starts after the last message sent (SUBSCRIBER_TOO_SLOW tells it).
  let end = fromOffset;
  sub.resumeOffset = fromOffset;
  const send = (b: TokenBatch) => {
    if (b.type === 'tokens') end = b.offset + cp(b.text);
    sub.sendTokens(render(b), end);
  };
  const tokenSub: TokenSubscriber = {
    lastSeq: null,
    deliver(rows) {
      for (const r of rows) {
        if (!sub.active || tokenSub.lastSeq === null || BigInt(r.seq) <= tokenSub.lastSeq) continue;
        tokenSub.lastSeq = BigInt(r.seq);
        send(batchOf(r, false));
      }
    },
  };
  // The end: the step's ending status, from the event stream (its job's events, from now on) or the backlog read;
  // acted on once the backlog is sent. The rows written before it are read first (the shared read; the caller's own
  // if that one could not read), then the last message.
  let ready = false;
  let ending: string | null = null;
  let finishing = false;
  const finish = async () => {
    if (finishing || !sub.active) return;
    finishing = true;
    if (!(await tokens.read(stepId)) && sub.active) {
      tokenSub.deliver(await ctx.asCaller(caller, (c) => readAfter(c, stepId, String(tokenSub.lastSeq), 100_000)));
    }
    if (!sub.active) return;
    send({ type: 'done', stepId, offset: end, text: '', attemptId: null, segment: null, rung: null, model: null, newSegment: false, done: true, replayed: false, stepStatus: ending });
    sub.complete();
  };
  const onEnding = (status: string) => {
    ending ??= status;
    if (ready) finish().catch((err: Error) => sub.fail({
      message: `reading the last live tokens of step ${stepId} failed (${err.message}); subscribe again with \`fromOffset: ${end}\``,
      extensions: { code: 'INTERNAL_SERVER_ERROR', resumeFromOffset: end },
    }));
  };
  const eventSub = stepStatusWatcher(stepId, onEnding);
  const spec: GroupSpec = {
    topic: { job: jobId }, rootKey: 't', shape: [{ key: 'stepId', field: 'stepId' }, { key: 'status', field: 'status' }],
    shapeKey: 'modelTokens:step-status', jobsOnly: false, progressEveryMs: null,
  };
  eventSub.from = ctx.hub.position;
  const unregisterEvents = ctx.hub.register(spec, eventSub);
  // Set before each await: a subscription that fails to open (or ends meanwhile) leaves nothing registered.
  sub.unregister = unregisterEvents;
  const unregisterTokens = await tokens.register(stepId, tokenSub);
  sub.unregister = () => {
    unregisterEvents();
    unregisterTokens();
  };
  if (!sub.active) return sub.unregister();

  const backlog = await ctx.asCaller(caller, (c) => readBacklog(c, stepId, fromOffset));
  if (!sub.active) return;
  if (backlog.stepStatus === null) throw clientError('NOT_FOUND', `step ${stepId} does not exist`);
  for (const b of mergeBacklog(backlog.chunks)) send(b);
  tokenSub.lastSeq = backlog.lastSeq === null ? 0n : BigInt(backlog.lastSeq);
  ready = true;
  if (ENDING_STATUSES.has(backlog.stepStatus)) ending ??= backlog.stepStatus;
  if (ending !== null) return finish();
  await tokens.read(stepId);
}

/** A hub subscriber that only watches one step's status changes (its messages are {"t":{stepId,status}}). */
function stepStatusWatcher(stepId: string, onEnding: (status: string) => void): HubSubscriber {
  return {
    from: null,
    buffer: [],
    send(bytes) {
      const change = (JSON.parse(bytes.toString()) as { data: { t: { stepId: string | null; status: string | null } } }).data.t;
      if (change.stepId === stepId && change.status !== null && ENDING_STATUSES.has(change.status)) onEnding(change.status);
    },
  };
}
