// Opening a subscription: who may follow what, the catch-up it owes, and its place in the hub.
//
//   jobUpdated(jobId, after, jobsOnly, progressEveryMs)   one job: the events after `after` (replayed), then a
//       `snapshot` (the job and its steps), then every change live; progress reports of its steps (every one by
//       default, or at most one per step every progressEveryMs, the latest).
//   tenantEvents(tenantId, after, jobsOnly, progressEveryMs)   every job (and step) change of a tenant (a client:
//       its own; operators and reporters: the one named, or all): the events after `after`, then live; progress
//       reports only when progressEveryMs is given.
//
// Authorization happens here, under the caller's role and tenant: the job must be visible to the caller
// (row-level security; another tenant's job is NOT_FOUND, as by query), a client follows only its own tenant, and
// an `after` the caller cannot see is NOT_FOUND. Catch-up statements run on a pool of their own, so a storm of
// resubscriptions cannot take the connections HTTP queries need.
import type pg from 'pg';
import { eventsAfter, jobSnapshot, type Queryable, type ReplayedEvent } from '../../db/verbs.ts';
import { isAfter, type Position, type StreamEvent } from '../../db/event-stream.ts';
import { pgSettingsFor, type Caller } from '../auth.ts';
import { clientError } from '../errors.ts';
import { howToGetToken } from '../guidance.ts';
import type { LiveSubscription } from './connection.ts';
import { changeOf, type Change, type EventHub, type GroupSpec, type Topic } from './hub.ts';
import type { CompiledSubscription } from './selection.ts';
import { openTokenFeed, type TokenHub } from './tokens.ts';

/** Most events jobUpdated replays from `after` (in the snapshot's statement); beyond, REPLAY_TOO_LARGE. */
export const REPLAY_LIMIT = 1000;
/** tenantEvents replays from `after` in pages of this many, waiting for the socket to drain between pages... */
export const REPLAY_PAGE = 1000;
/** ...up to this many events; beyond, REPLAY_TOO_LARGE (read the state instead). */
export const REPLAY_MAX = 100_000;

/** Shortest progressEveryMs accepted (0 means every report). */
export const MIN_PROGRESS_MS = 50;

export interface FeedContext {
  hub: EventHub;
  /** Live tokens of streaming model steps (modelTokens, tokens.ts). */
  tokens?: TokenHub;
  /** The catch-up pool. */
  pool: pg.Pool;
  statementTimeoutMs: number;
}

const idText = (v: unknown) => (v === null || v === undefined ? null : String(v));

/** Runs `fn` in a transaction with the caller's role, tenant and actor, as PostGraphile runs a query. */
async function asCaller<T>(ctx: FeedContext, caller: Caller, fn: (c: Queryable) => Promise<T>): Promise<T> {
  const client = await ctx.pool.connect();
  try {
    await client.query('begin');
    const settings = { ...pgSettingsFor(caller), statement_timeout: String(ctx.statementTimeoutMs) };
    await client.query(`select set_config(k, v, true) from json_each_text($1::json) as s(k, v)`, [JSON.stringify(settings)]);
    const result = await fn(client);
    await client.query('commit');
    return result;
  } catch (err) {
    await client.query('rollback').catch(() => {});
    throw err;
  } finally {
    client.release();
  }
}

const replayedEvent = (r: ReplayedEvent): StreamEvent => ({
  id: Number(r.id), tx: BigInt(r.tx), job_id: Number(r.job_id), step_id: r.step_id === null ? null : Number(r.step_id), type: r.type,
  status: r.status, tenant_id: r.tenant_id, step_name: r.step_name, at: r.at,
});

function progressOption(args: Record<string, unknown>, byDefault: number | null): number | null {
  const v = args.progressEveryMs;
  if (v === null || v === undefined) return byDefault;
  const n = Number(v);
  if (n !== 0 && n < MIN_PROGRESS_MS) {
    throw clientError('BAD_USER_INPUT', `progressEveryMs must be 0 (every report) or at least ${MIN_PROGRESS_MS}, got ${n}`);
  }
  return n;
}

/**
 * Opens `compiled` for `sub` as `caller`: registers it with the hub, sends its catch-up and makes it live. Throws
 * a client error (NOT_FOUND, FORBIDDEN, REPLAY_TOO_LARGE, ...) for a subscription it refuses; the caller sends it.
 */
export async function openFeed(ctx: FeedContext, caller: Caller, compiled: CompiledSubscription, sub: LiveSubscription): Promise<void> {
  if (caller.role === 'anonymous') {
    throw clientError('FORBIDDEN', `anonymous callers cannot subscribe: connect with connectionParams { authorization: "Bearer <token>" }; ${howToGetToken(undefined, ['client', 'operator'])}`,
      { roles: ['client', 'operator', 'reporter'] });
  }
  if (compiled.field === 'modelTokens') {
    return openTokenFeed({ hub: ctx.hub, tokens: ctx.tokens, asCaller: (who, fn) => asCaller(ctx, who, fn) }, caller, compiled, sub);
  }
  const args = compiled.args;
  const after = idText(args.after);
  const jobsOnly = args.jobsOnly === true;
  const base = { rootKey: compiled.key, shape: compiled.shape, shapeKey: compiled.shapeKey, jobsOnly };
  if (compiled.field === 'jobUpdated') {
    const spec: GroupSpec = { ...base, topic: { job: String(args.jobId) }, progressEveryMs: progressOption(args, 0) };
    return openJob(ctx, caller, spec, String(args.jobId), after, sub);
  }
  let tenant = idText(args.tenantId);
  if (caller.role === 'client') {
    if (tenant !== null && tenant !== caller.tenantId) {
      throw clientError('FORBIDDEN', `a client of tenant ${caller.tenantId} cannot follow tenant ${tenant}: leave tenantId out to follow ` +
        `your own tenant; following another needs an operator or reporter token (${howToGetToken(undefined, ['reporter'])})`, { roles: ['operator', 'reporter'] });
    }
    tenant = caller.tenantId;
  }
  const topic: Topic = tenant === null ? 'all' : { tenant };
  const spec: GroupSpec = { ...base, topic, progressEveryMs: progressOption(args, null) };
  return openTenant(ctx, caller, spec, tenant, after, sub);
}

interface CatchUp {
  /** The watermark of the catch-up's (last) statement: it covered every final event below it. */
  watermark: string;
  /** The position it replayed up to, if above the watermark: `after` itself when `after` is not final yet. */
  last: Position | null;
}

/**
 * Registers with a buffer, runs `catchUp`, sends its messages, then goes live from the later of its watermark and
 * the last position it covered (an `after` that is not final yet lies above the watermark: live delivery must not
 * send it, nor anything before it, again).
 */
async function withCatchUp(ctx: FeedContext, spec: GroupSpec, sub: LiveSubscription,
  catchUp: (render: (c: Change) => Buffer) => Promise<CatchUp>): Promise<void> {
  sub.from = null;
  sub.unregister = ctx.hub.register(spec, sub);
  const render = ctx.hub.groupOf(spec);
  const { watermark, last } = await catchUp(render);
  if (!sub.active) return;
  const mark: Position = { tx: BigInt(watermark), id: 0 };
  sub.from = last !== null && isAfter(last, mark) ? last : mark;
  const pending = sub.buffer;
  sub.buffer = [];
  for (const e of pending) {
    if (e.type === 'step_progress') {
      sub.send(render(changeOf(e, false)), null);
      continue;
    }
    if (!isAfter(e as Position, sub.from)) continue;
    sub.send(render(changeOf(e, false)), String(e.id));
  }
}

const positionOf = (tx: string | null, id: string | null): Position | null =>
  tx === null || id === null ? null : { tx: BigInt(tx), id: Number(id) };

function accepts(spec: GroupSpec, e: StreamEvent): boolean {
  return !(spec.jobsOnly && e.step_id !== null);
}

async function openJob(ctx: FeedContext, caller: Caller, spec: GroupSpec, jobId: string, after: string | null, sub: LiveSubscription) {
  await withCatchUp(ctx, spec, sub, async (render) => {
    const snap = await asCaller(ctx, caller, (c) => jobSnapshot(c, jobId, after, REPLAY_LIMIT + 1));
    // Row-level security hides other tenants' jobs; the tenant check repeats it for clients, defence in depth.
    if (!snap.job || (caller.role === 'client' && snap.job.tenantId !== caller.tenantId)) {
      throw clientError('NOT_FOUND', `job ${jobId} does not exist`);
    }
    if (snap.replay.length > REPLAY_LIMIT) {
      throw clientError('REPLAY_TOO_LARGE', `job ${jobId} has more than ${REPLAY_LIMIT} events after ${after}; read the job's current state (or its events with the events query) and subscribe again with a later \`after\``);
    }
    for (const r of snap.replay) {
      const e = replayedEvent(r);
      if (accepts(spec, e)) sub.send(render(changeOf(e, true)), r.id);
    }
    const job = snap.job;
    const snapshot: Change = {
      type: 'snapshot', eventId: snap.lastEventId, jobId: String(job.id), tenantId: (job.tenantId as string) ?? null, stepId: null,
      stepName: null, status: (job.status as string) ?? null, at: (job.updatedAt as string) ?? null, progress: null, replayed: false,
      job: { ...job, steps: snap.steps },
    };
    sub.send(render(snapshot), snap.lastEventId);
    // Events the snapshot already reflects but that were not final yet (a transaction older than theirs was still
    // open) follow it live: the events a client receives are exactly those a resume from the same point returns.
    return { watermark: snap.watermark, last: positionOf(snap.afterTx, after) };
  });
}

async function openTenant(ctx: FeedContext, caller: Caller, spec: GroupSpec, tenant: string | null, after: string | null, sub: LiveSubscription) {
  if (after === null) {
    // From now: the stream's position is where the past ends.
    sub.from = ctx.hub.position;
    sub.unregister = ctx.hub.register(spec, sub);
    return;
  }
  await withCatchUp(ctx, spec, sub, async (render) => {
    // Page by page: each page's statement returns the final events after the previous page's last one, below its
    // own watermark; the last (short) page's watermark is where live delivery takes over.
    let cursor = after;
    let total = 0;
    for (;;) {
      const page = await asCaller(ctx, caller, (c) => eventsAfter(c, cursor, tenant, REPLAY_PAGE));
      for (const r of page.events) {
        const e = replayedEvent(r);
        if (accepts(spec, e)) sub.send(render(changeOf(e, true)), r.id);
      }
      total += page.events.length;
      const lastRow = page.events.at(-1);
      const last = lastRow ? { tx: BigInt(lastRow.tx), id: Number(lastRow.id) } : positionOf(page.afterTx, cursor);
      if (page.events.length < REPLAY_PAGE) return { watermark: page.watermark, last };
      if (total >= REPLAY_MAX) {
        throw clientError('REPLAY_TOO_LARGE', `more than ${REPLAY_MAX} events happened after ${after}; read the current state (or ballast.events_after in pages) and subscribe again with a later \`after\``);
      }
      cursor = page.events.at(-1)!.id;
      if (!(await sub.writable())) return { watermark: page.watermark, last };
    }
  });
}
