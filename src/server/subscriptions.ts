// Subscriptions over graphql-ws, driven by NOTIFY ballast_events through the process's one LISTEN (hub.ts).
//
//   jobUpdated(jobId, after)      one job: [events after `after`, replayed from ballast.events, oldest first],
//                                 then a `snapshot` (the job and its steps), then every change live.
//   tenantEvents(tenantId, after) every job and step change of a tenant (a client: its own; operators and
//                                 reporters: the one named, or all): [events after `after`], then live.
//
// Each message carries the state of one event (the event row the hub read once for the notification that announced
// it, or the snapshot's rows), never a row re-read per subscriber. Gap-free: the subscription registers with the hub
// *before* it reads the snapshot/replay (one SQL statement as the caller); events of notifications arriving
// meanwhile are buffered, then delivered unless that statement already included them (dropped by event id). So a
// client that refreshes reads the current state (or passes the last eventId it processed as `after`) and then
// follows every later change; if the server's LISTEN connection drops, the subscription ends with
// SUBSCRIPTION_INTERRUPTED instead of silently missing events.
//
// Authorization happens at subscribe time under the caller's role and tenant: the job must be visible to the caller
// (row-level security; another tenant's job is NOT_FOUND, as by query), and a client can only follow its own tenant.
import { constant, context, lambda, listen, type FieldArgs, type Step } from 'postgraphile/grafast';
import { extendSchema, gql } from 'postgraphile/utils';
import { eventsAfter, jobSnapshot, type EventPayload, type JobSnapshotRow, type Queryable } from '../db/caller.ts';
import type { Caller } from './auth.ts';
import { clientError } from './errors.ts';
import type { EventHub, HubListener, Topic } from './hub.ts';
import { Feed } from './feed.ts';

/** Most events a subscription replays from `after`; beyond, read them with the events query first. */
export const REPLAY_LIMIT = 1000;

export interface Change {
  type: string;
  eventId: string | null;
  jobId: string;
  tenantId: string | null;
  stepId: string | null;
  stepName: string | null;
  status: string | null;
  at: string | null;
  progress: unknown;
  replayed: boolean;
  job: (Record<string, unknown> & { steps: Record<string, unknown>[] }) | null;
}

const idText = (v: number | string | null | undefined) => (v === null || v === undefined ? null : String(v));

function change(p: EventPayload, replayed: boolean): Change {
  return {
    type: p.type, eventId: idText(p.id), jobId: String(p.job_id), tenantId: p.tenant_id ?? null, stepId: idText(p.step_id),
    stepName: p.step_name ?? null, status: p.status ?? null, at: p.at ?? null, progress: p.progress ?? null, replayed, job: null,
  };
}

function snapshotChange(s: JobSnapshotRow): Change {
  const job = s.job!;
  return {
    type: 'snapshot', eventId: s.lastEventId, jobId: String(job.id), tenantId: (job.tenantId as string) ?? null, stepId: null,
    stepName: null, status: (job.status as string) ?? null, at: (job.updatedAt as string) ?? null, progress: null, replayed: false,
    job: { ...job, steps: s.steps },
  };
}

type WithPgClient = <T>(pgSettings: Record<string, string> | null, fn: (client: Queryable) => Promise<T>) => Promise<T>;

interface FeedRequest {
  kind: 'job' | 'tenant';
  jobId?: string;
  tenantId?: string | null;
  after: string | null;
}

/**
 * Registers with the hub (buffering), runs `catchUp` as the caller, delivers its messages, then the buffered and
 * live notifications that `seen` does not already contain and `accept` lets through.
 */
async function openFeed(hub: EventHub, topic: Topic, catchUp: () => Promise<{ messages: Change[]; seen: Set<string> }>,
  accept: (p: EventPayload) => boolean): Promise<Feed<Change>> {
  const feed = new Feed<Change>();
  let buffer: EventPayload[] | null = [];
  let seen = new Set<string>();
  const deliver = (p: EventPayload) => {
    if (!accept(p) || (p.id !== null && p.id !== undefined && seen.has(String(p.id)))) return;
    feed.push(change(p, false));
  };
  const listener: HubListener = { event: (p) => (buffer ? buffer.push(p) : deliver(p)), fail: (err) => feed.fail(err) };
  feed.onClose(hub.register(topic, listener));
  try {
    const result = await catchUp();
    seen = result.seen;
    for (const m of result.messages) feed.push(m);
    const pending = buffer;
    buffer = null;
    for (const p of pending) deliver(p);
  } catch (err) {
    await feed.return();
    throw err;
  }
  return feed;
}

function openJobFeed(hub: EventHub, withPgClient: WithPgClient, pgSettings: Record<string, string>, caller: Caller, req: FeedRequest) {
  const jobId = req.jobId!;
  return openFeed(hub, { job: jobId }, async () => {
    const snap = await withPgClient(pgSettings, (client) => jobSnapshot(client, jobId, req.after, REPLAY_LIMIT + 1));
    // Row-level security hides other tenants' jobs; the tenant check repeats it for clients, defence in depth.
    if (!snap.job || (caller.role === 'client' && snap.job.tenantId !== caller.tenantId)) {
      throw clientError('NOT_FOUND', `job ${jobId} does not exist`);
    }
    if (snap.replay.length > REPLAY_LIMIT) {
      throw clientError('REPLAY_TOO_LARGE', `job ${jobId} has more than ${REPLAY_LIMIT} events after ${req.after}; read the job's current state (or its events with the events query) and subscribe again with a later \`after\``);
    }
    const seen = new Set<string>(snap.recentEventIds);
    for (const e of snap.replay) seen.add(String(e.id));
    return { messages: [...snap.replay.map((e) => change(e, true)), snapshotChange(snap)], seen };
  }, () => true);
}

function openTenantFeed(hub: EventHub, withPgClient: WithPgClient, pgSettings: Record<string, string>, caller: Caller, req: FeedRequest) {
  let tenant: string | null = req.tenantId ?? null;
  if (caller.role === 'client') {
    if (tenant !== null && tenant !== caller.tenantId) {
      throw clientError('FORBIDDEN', `a client of tenant ${caller.tenantId} cannot follow tenant ${tenant}`);
    }
    tenant = caller.tenantId;
  }
  const topic: Topic = tenant === null ? 'all' : { tenant };
  return openFeed(hub, topic, async () => {
    if (req.after === null) return { messages: [], seen: new Set<string>() };
    const events = await withPgClient(pgSettings, (client) => eventsAfter(client, req.after!, tenant, REPLAY_LIMIT + 1));
    if (events.length > REPLAY_LIMIT) {
      throw clientError('REPLAY_TOO_LARGE', `more than ${REPLAY_LIMIT} events happened after ${req.after}; read them with the events query and subscribe again with a later \`after\``);
    }
    return { messages: events.map((e) => change(e, true)), seen: new Set(events.map((e) => String(e.id))) };
  }, (p) => p.type !== 'step_progress' && p.id !== null && p.id !== undefined);
}

const typeDefs = gql`
  "A change of a job or of one of its steps, with the new state."
  type JobChange {
    "'snapshot' (the first live message of jobUpdated: the job as it is), or the event type: job_submitted, job_running, step_running, step_succeeded, step_progress, job_completed, ..."
    type: String!
    "The event's id in ballast.events (increasing); for a snapshot the newest event it includes; null for step_progress (not stored). Resubscribe with after: <the last one you processed>."
    eventId: BigInt
    jobId: BigInt!
    tenantId: String
    stepId: BigInt
    stepName: String
    "The new status of the step (step_* events) or of the job (job_* events, snapshot)."
    status: String
    at: Datetime
    "step_progress only: the value the step reported."
    progress: JSON
    "True for events read from ballast.events because they happened after 'after'; false for live ones."
    replayed: Boolean!
    "Only on a snapshot: the job and its steps at that moment."
    job: JobSnapshot
  }
  type JobSnapshot {
    id: BigInt!
    tenantId: String!
    pipeline: String!
    pipelineVersion: Int!
    status: String!
    result: JSON
    error: JSON
    createdAt: Datetime
    updatedAt: Datetime
    finishedAt: Datetime
    steps: [StepSnapshot!]!
  }
  type StepSnapshot {
    id: BigInt!
    name: String!
    status: String!
    attemptCount: Int!
    maxAttempts: Int!
    progress: JSON
    updatedAt: Datetime
  }
  extend type Subscription {
    "One job: the events after 'after' (if given), then a snapshot of the job, then every change as it happens. NOT_FOUND for a job you cannot see."
    jobUpdated(jobId: BigInt!, after: BigInt): JobChange!
    "Every job and step change of a tenant (clients: their own; operators and reporters: the one named, or all when tenantId is null); with 'after', the stored events after it first."
    tenantEvents(tenantId: String, after: BigInt): JobChange!
  }
`;

export function subscriptionsPlugin(hub: EventHub): GraphileConfig.Plugin {
  const open = async (req: FeedRequest, withPgClient: WithPgClient, pgSettings: Record<string, string>, caller: Caller) => {
    if (!caller || caller.role === 'anonymous') {
      throw clientError('FORBIDDEN', 'anonymous callers cannot subscribe: connect with connectionParams { authorization: "Bearer <token>" }');
    }
    return req.kind === 'job' ? openJobFeed(hub, withPgClient, pgSettings, caller, req) : openTenantFeed(hub, withPgClient, pgSettings, caller, req);
  };
  const subscribePlan = (kind: FeedRequest['kind']) => (_: Step, fieldArgs: FieldArgs) => {
    const $request = lambda(
      [kind === 'job' ? fieldArgs.getRaw('jobId') : constant(null), kind === 'tenant' ? fieldArgs.getRaw('tenantId') : constant(null), fieldArgs.getRaw('after')],
      ([jobId, tenantId, after]) => JSON.stringify({ kind, jobId: idText(jobId as string), tenantId: tenantId ?? null, after: idText(after as string) }));
    const $feeds = lambda(
      [context().get('withPgClient'), context().get('pgSettings'), context().get('ballastCaller')],
      ([withPgClient, pgSettings, caller]) => ({
        subscribe: (topic: string) => open(JSON.parse(topic) as FeedRequest, withPgClient as WithPgClient, pgSettings as Record<string, string>, caller as Caller),
      }));
    return listen($feeds as Step<any>, $request);
  };
  return extendSchema({
    typeDefs,
    objects: {
      Subscription: {
        plans: {
          jobUpdated: { subscribePlan: subscribePlan('job'), plan: ($event: Step) => $event },
          tenantEvents: { subscribePlan: subscribePlan('tenant'), plan: ($event: Step) => $event },
        },
      },
    },
  }, 'BallastSubscriptionsPlugin');
}
