// Pauses and limits on keys (migration 0037, docs/flow-control.md): the statements of the operator verbs
// (ballast.pause_key, resume_key, set_limit, delete_limit) and of the views that show them, shared by BallastDb, the
// GraphQL mutations and the CLI, one statement each (like verbs.ts). Ids and bigints leave as strings.
import type { Queryable } from './verbs.ts';

/** A paused key, as ballast.pauses shows it. */
export interface PauseRow {
  key: string;
  /** When the pause ends; null: until resumed. */
  until: Date | null;
  reason: string;
  pausedBy: string | null;
  pausedAt: Date;
  /** The step that paused it (ctx.pauseKey), if a step did. */
  stepId: string | null;
  /** Whether it holds steps back now. */
  inForce: boolean;
}

export type LimitKind = 'requests' | 'weight' | 'running';
export const LIMIT_KINDS: readonly LimitKind[] = ['requests', 'weight', 'running'];

/** A limit, as ballast.limits shows it. */
export interface LimitRow {
  pattern: string;
  kind: LimitKind;
  amount: string;
  /** The period of a rate (Postgres interval text, e.g. '00:01:00'); null for running. */
  per: string | null;
  burst: string;
  note: string | null;
  setBy: string | null;
  setAt: Date;
  keysSeen: string;
}

/** A row of ballast.gate_history. */
export interface GateHistoryRow {
  id: string;
  action: 'pause' | 'resume' | 'set_limit' | 'delete_limit';
  key: string;
  until: Date | null;
  reason: string | null;
  data: Record<string, unknown> | null;
  actor: string | null;
  stepId: string | null;
  at: Date;
}

export interface PauseKeyArgs {
  key: string;
  reason: string;
  /** When the pause ends (or give forMs; neither: until resumed). */
  until?: Date | null;
  /** How long it lasts, in milliseconds. */
  forMs?: number | null;
  actor?: string | null;
  /** The step pausing it (ctx.pauseKey). */
  stepId?: string | null;
}

export interface SetLimitArgs {
  /** An exact key, or a prefix ending in * (one limit per matching key). */
  pattern: string;
  kind: LimitKind;
  amount: number;
  /** The period of a rate, in milliseconds (requests, weight); none for running. */
  perMs?: number | null;
  /** How many may start at once after a quiet time (default 1: evenly spaced). */
  burst?: number | null;
  note?: string | null;
  actor?: string | null;
}

const PAUSE_COLUMNS = `key, until, reason, paused_by as "pausedBy", paused_at as "pausedAt", step_id::text as "stepId", in_force as "inForce"`;
const LIMIT_COLUMNS = `pattern, kind, amount::text as amount, per::text as per, burst::text as burst, note, set_by as "setBy",
  set_at as "setAt", keys_seen::text as "keysSeen"`;

async function rows<R>(c: Queryable, text: string, values: readonly unknown[] = []): Promise<R[]> {
  return [...(await c.query<R>({ text, values })).rows];
}

/** ballast.pause_key: closes a key; returns the pause in force (a longer one already in force is kept). */
export const pauseKey = async (c: Queryable, a: PauseKeyArgs): Promise<PauseRow> =>
  (await rows<PauseRow>(c,
    `select p.key, p.until, p.reason, p.paused_by as "pausedBy", p.paused_at as "pausedAt", $6::bigint::text as "stepId",
            true as "inForce"
       from ballast.pause_key($1, $2, $3, case when $4::float8 is null then null else make_interval(secs => $4::float8 / 1000) end,
                              $5, $6::bigint) p`,
    [a.key, a.reason, a.until ?? null, a.forMs ?? null, a.actor ?? null, a.stepId ?? null]))[0]!;

/** ballast.resume_key: opens a key again and wakes the steps it held; whether a pause was in force. */
export const resumeKey = async (c: Queryable, key: string, reason: string | null, actor: string | null = null): Promise<boolean> =>
  (await rows<{ resumed: boolean }>(c, 'select ballast.resume_key($1, $2, $3) as resumed', [key, reason, actor]))[0]!.resumed;

/** ballast.set_limit: creates or replaces the limit of a kind on a pattern. */
export const setLimit = async (c: Queryable, a: SetLimitArgs): Promise<LimitRow> =>
  (await rows<LimitRow>(c,
    `select l.pattern, l.kind, l.amount::text as amount, l.per::text as per, l.burst::text as burst, l.note, l.set_by as "setBy",
            l.set_at as "setAt", (select count(*) from ballast_private.limit_buckets b
                                   where b.pattern = l.pattern and b.kind = l.kind)::text as "keysSeen"
       from ballast.set_limit($1, $2, $3::bigint, case when $4::float8 is null then null else make_interval(secs => $4::float8 / 1000) end,
                              coalesce($5::bigint, 1), $6, $7) l`,
    [a.pattern, a.kind, a.amount, a.perMs ?? null, a.burst ?? null, a.note ?? null, a.actor ?? null]))[0]!;

/** ballast.delete_limit: whether there was such a limit. */
export const deleteLimit = async (c: Queryable, pattern: string, kind: LimitKind, actor: string | null = null): Promise<boolean> =>
  (await rows<{ deleted: boolean }>(c, 'select ballast.delete_limit($1, $2, $3) as deleted', [pattern, kind, actor]))[0]!.deleted;

/** The paused keys (in force first, then by key). */
export const listPauses = (c: Queryable): Promise<PauseRow[]> =>
  rows<PauseRow>(c, `select ${PAUSE_COLUMNS} from ballast.pauses order by in_force desc, key`);

/** The limits, by pattern and kind. */
export const listLimits = (c: Queryable): Promise<LimitRow[]> =>
  rows<LimitRow>(c, `select ${LIMIT_COLUMNS} from ballast.limits order by pattern, kind`);

/** The newest entries of the pause and limit history (of one key or pattern, or all), newest first. */
export const gateHistory = (c: Queryable, key: string | null = null, limit = 100): Promise<GateHistoryRow[]> =>
  rows<GateHistoryRow>(c,
    `select id::text as id, action, key, until, reason, data, actor, step_id::text as "stepId", at
       from ballast.gate_history where $1::text is null or key = $1 order by gate_history.id desc limit $2`,
    [key, limit]);

/** A row of ballast.fair_shares (migration 0040): '*' is the switch with the default weight. */
export interface FairShareRow {
  tenantId: string;
  weight: number;
  finishTag: number;
  setBy: string | null;
  setAt: Date;
}

/** ballast.set_fair_share: turns fair sharing on ('*', with a default weight) or sets a tenant's weight. */
export const setFairShare = async (c: Queryable, tenantId: string, weight: number, actor: string | null = null): Promise<{ tenantId: string; weight: number }> =>
  (await rows<{ tenantId: string; weight: number }>(c,
    `select tenant_id as "tenantId", weight from ballast.set_fair_share($1, $2::float8, $3)`, [tenantId, weight, actor]))[0]!;

/** ballast.stop_fair_sharing: whether it was on. */
export const stopFairSharing = async (c: Queryable): Promise<boolean> =>
  (await rows<{ stopped: boolean }>(c, 'select ballast.stop_fair_sharing() as stopped'))[0]!.stopped;

/** The fair-sharing weights ('*' first when on). */
export const listFairShares = (c: Queryable): Promise<FairShareRow[]> =>
  rows<FairShareRow>(c, `select tenant_id as "tenantId", weight, finish_tag as "finishTag", set_by as "setBy", set_at as "setAt"
                           from ballast.fair_shares order by tenant_id <> '*', tenant_id`);
