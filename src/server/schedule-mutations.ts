// The schedule mutations (migration 0033): setSchedule, pauseSchedule, resumeSchedule and deleteSchedule, each one
// call of its SQL function as the caller (src/db/verbs.ts) in the caller's transaction, so Postgres decides who may
// (clients: their own tenant's schedules; operators: any tenant's). The schedules themselves are read through the
// `schedules` query (surface.ts).
import { access, type Step } from 'postgraphile/grafast';
import { extendSchema, gql } from 'postgraphile/utils';
import type * as sql from '../db/verbs.ts';
import { setSchedule, pauseSchedule, deleteSchedule } from '../db/verbs.ts';
import { text, verbField, type Input } from './mutations.ts';

const typeDefs = gql`
  "A cron schedule to create, or to replace (same name, same tenant: its id, counts and pause are kept)."
  input SetScheduleInput {
    "Its name, unique per tenant: 1 to 128 letters, digits, _ . : -."
    name: String!
    "The pipeline each slot submits a job of."
    pipeline: String!
    "Five fields, minute hour day-of-month month day-of-week (e.g. */15 9-17 * * mon-fri), or @hourly, @daily, @weekly, @monthly, @yearly."
    cron: String!
    "The input of every job it submits (checked against the pipeline's input contract at each slot). Default {}."
    input: JSON
    "The time zone the expression is read in, e.g. Europe/Paris. Default UTC."
    timeZone: String
    "Operators only: the tenant its jobs belong to (default: the token's tenant, else 'default'). Clients: their own."
    tenantId: String
    "The pipeline version submitted. Default: the latest registered version at each slot."
    pipelineVersion: Int
    "The priority of its jobs. Default 0."
    priority: Int
    "Slots missed while no worker ran: SKIP (default: fire only a slot at most a minute late) or CATCH_UP (each, at most maxCatchUp)."
    onMissed: MissedSlots
    "With CATCH_UP: the most missed slots fired at once, the most recent ones (1 to 1000, default 10)."
    maxCatchUp: Int
  }
  "What to do with the slots of a schedule that passed while no worker fired them."
  enum MissedSlots {
    "Fire only a slot at most a minute late; count the others as skipped."
    SKIP
    "Fire each missed slot, oldest first, at most maxCatchUp of them."
    CATCH_UP
  }
  "A schedule to pause, resume or delete, by name."
  input ScheduleNameInput {
    "The schedule's name."
    name: String!
    "Why (pauseSchedule only), shown as pausedReason. Optional."
    reason: String
    "Operators only: the tenant whose schedule is meant (default: the token's tenant, else 'default')."
    tenantId: String
  }
  "What setSchedule, pauseSchedule or resumeSchedule did."
  type SchedulePayload {
    "The schedule's id."
    scheduleId: BigInt!
    "Its next slot (null: paused)."
    nextFireAt: Datetime
    "The schedule, read back under the caller's rights."
    schedule: Schedule
  }
  "What deleteSchedule did."
  type DeleteSchedulePayload {
    "False when the tenant had no schedule of that name."
    deleted: Boolean!
  }
  extend type Mutation {
    "Create or replace a cron schedule (ballast.set_schedule). Clients: their own tenant."
    setSchedule(input: SetScheduleInput!): SchedulePayload
    "Pause a schedule: it fires nothing until resumed (ballast.pause_schedule). Clients: their own tenant."
    pauseSchedule(input: ScheduleNameInput!): SchedulePayload
    "Resume a paused schedule: it fires next at its first slot after now (slots passed meanwhile are not caught up)."
    resumeSchedule(input: ScheduleNameInput!): SchedulePayload
    "Delete a schedule; the jobs it submitted stay (ballast.delete_schedule). Clients: their own tenant."
    deleteSchedule(input: ScheduleNameInput!): DeleteSchedulePayload
  }
`;

const int = (v: unknown) => (typeof v === 'number' ? v : null);

export const ScheduleMutationsPlugin = extendSchema((build) => {
  const { schedules } = build.input.pgRegistry.pgResources as Record<string, { get(spec: Record<string, Step>): Step }>;
  const field = verbField(build);
  // The tenant meant: the one named (operators), else the token's, else (SQL's default) 'default'.
  const verb = (run: (client: sql.Queryable, input: Input, tenantId: string | null) => Promise<unknown>) =>
    field((c, input, caller) => run(c, input, text(input.tenantId) ?? caller.tenantId ?? null));
  return {
    typeDefs,
    enums: { MissedSlots: { values: { SKIP: 'skip', CATCH_UP: 'catch_up' } } },
    objects: {
      Mutation: {
        plans: {
          setSchedule: verb((c, i, tenantId) => setSchedule(c, {
            name: String(i.name), pipeline: String(i.pipeline), cron: String(i.cron), input: i.input ?? {},
            timeZone: text(i.timeZone), tenantId, pipelineVersion: int(i.pipelineVersion),
            priority: int(i.priority), onMissed: text(i.onMissed), maxCatchUp: int(i.maxCatchUp),
          })),
          pauseSchedule: verb((c, i, tenantId) => pauseSchedule(c, String(i.name), true, text(i.reason), tenantId)),
          resumeSchedule: verb((c, i, tenantId) => pauseSchedule(c, String(i.name), false, null, tenantId)),
          deleteSchedule: verb((c, i, tenantId) => deleteSchedule(c, String(i.name), tenantId)),
        },
      },
      SchedulePayload: { plans: { schedule: ($p: Step) => schedules!.get({ id: access($p, 'scheduleId') }) } },
    },
  };
}, 'BallastScheduleMutationsPlugin');
