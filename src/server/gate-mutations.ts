// The pause and limit mutations (migration 0037, docs/flow-control.md): pauseKey, resumeKey, setLimit and
// deleteLimit, each one statement of src/db/gates.ts run as the caller in the caller's transaction, so Postgres
// decides who may (operators only: the SQL functions are granted to ballast_operator alone; any other token is
// FORBIDDEN). The pauses, limits and their history are read through the `pauses`, `limits` and `gateHistory` queries
// (surface.ts). Errors name the input fields: the SQL functions' `per` and `for` are perSeconds and forSeconds here.
import { access, type Step } from 'postgraphile/grafast';
import { extendSchema, gql } from 'postgraphile/utils';
import type { Queryable } from '../db/verbs.ts';
import { deleteLimit, pauseKey, resumeKey, setLimit, type LimitKind } from '../db/gates.ts';
import { clientError } from './errors.ts';
import { text, verbField, type Input } from './mutations.ts';

const typeDefs = gql`
  "A key to pause: steps with it are not started until the pause ends or resumeKey. Without until and forSeconds: until resumed."
  input PauseKeyInput {
    "The key: global, tenant:<id>, pipeline:<name>, step:<pipeline>.<step>, provider:<p>, model:<p>:<m>, or one a step declares (queue:emails)."
    key: String!
    "Why (e.g. '429 from the provider', 'maintenance'); required, kept in gateHistory."
    reason: String!
    "When the pause ends (a time in the future). Give until or forSeconds, not both."
    until: Datetime
    "How long the pause lasts, in seconds (more than 0). Give until or forSeconds, not both."
    forSeconds: Float
  }
  "What pauseKey did."
  type PauseKeyPayload {
    "The key paused."
    key: String!
    "When the pause in force ends (null: until resumed). A longer pause already in force is kept."
    until: Datetime
    "The pause, read back under the caller's rights."
    pause: Pause
  }
  "A key to open again: its pause is removed and the steps it held back are queued at once."
  input ResumeKeyInput {
    "The key paused."
    key: String!
    "Why. Optional; kept in gateHistory."
    reason: String
  }
  "What resumeKey did."
  type ResumeKeyPayload {
    "The key."
    key: String!
    "False when no pause was in force (the resume is recorded all the same)."
    resumed: Boolean!
  }
  "What a limit counts."
  enum LimitKind {
    "Steps started per period (amount per perSeconds)."
    REQUESTS
    "The steps' weights (e.g. tokens) per period (amount per perSeconds)."
    WEIGHT
    "Steps running at once (amount; no perSeconds)."
    RUNNING
  }
  "A limit to create, or to replace (same pattern and kind)."
  input SetLimitInput {
    "An exact key (provider:openai), or a prefix ending in * for one limit per matching key (tenant:*)."
    pattern: String!
    "REQUESTS, WEIGHT or RUNNING."
    kind: LimitKind!
    "How many steps (or how much weight) per period, or at once: a whole number from 1 to 10^12."
    amount: Float!
    "The period of a REQUESTS or WEIGHT limit, in seconds (0.001 to 31 days); none for RUNNING."
    perSeconds: Float
    "How many may start at once after a quiet time: a whole number, default 1 (evenly spaced)."
    burst: Float
    "Why the limit exists. Optional; kept with it and in gateHistory."
    note: String
  }
  "What setLimit did."
  type SetLimitPayload {
    "The limit's pattern."
    pattern: String!
    "Its kind: requests, weight or running."
    kind: String!
    "The limit, read back under the caller's rights."
    limit: Limit
  }
  "A limit to remove, by pattern and kind."
  input DeleteLimitInput {
    "The limit's pattern, as set."
    pattern: String!
    "Its kind."
    kind: LimitKind!
  }
  "What deleteLimit did."
  type DeleteLimitPayload {
    "False when there was no such limit."
    deleted: Boolean!
  }
  extend type Mutation {
    "Pause a key: steps with it are not started until the pause ends or is resumed (ballast.pause_key). Operators."
    pauseKey(input: PauseKeyInput!): PauseKeyPayload
    "Resume a paused key: the steps it held back are queued at once (ballast.resume_key). Operators."
    resumeKey(input: ResumeKeyInput!): ResumeKeyPayload
    "Create or replace a rate or concurrency limit on a key or key prefix, enforced by every worker (ballast.set_limit). Operators."
    setLimit(input: SetLimitInput!): SetLimitPayload
    "Remove a limit; steps it parked wait out their time (ballast.delete_limit). Operators."
    deleteLimit(input: DeleteLimitInput!): DeleteLimitPayload
  }
`;

/** The SQL functions' argument names that differ from the input fields (per is in seconds here). */
const FIELD_OF: Record<string, string> = { per: 'perSeconds', for: 'forSeconds' };

/** A refused argument (BA002 `<arg>: ...`) named as its input field, in the message and in the issues. */
function inInputWords(err: unknown): unknown {
  const e = err as { code?: unknown; message?: unknown; detail?: unknown };
  if (e?.code !== 'BA002' || typeof e.message !== 'string') return err;
  const arg = /^([a-z]+):/.exec(e.message)?.[1];
  const field = arg === undefined ? undefined : FIELD_OF[arg];
  if (!field) return err;
  (err as Error).message = `${field}:${e.message.slice(arg!.length + 1)}`;
  if (typeof e.detail === 'string') {
    try {
      const issues = JSON.parse(e.detail) as { path?: string }[];
      e.detail = JSON.stringify(issues.map((i) => (i.path === arg ? { ...i, path: field } : i)));
    } catch {
      // Not the JSON of bad_argument: left as it is.
    }
  }
  return err;
}

/** An input refused before it reaches SQL, in the shape of SQL's refusals (INVALID_INPUT naming the field). */
function invalid(field: string, problem: string, fix: string): never {
  throw clientError('INVALID_INPUT', `${field}: ${problem}`, { sqlstate: 'BA002', hint: fix, issues: [{ path: field, message: problem }] });
}

const num = (v: unknown) => (typeof v === 'number' ? v : null);

/** A whole number input, or null when absent. */
function whole(field: string, v: unknown, fix: string): number | null {
  const n = num(v);
  if (n !== null && !Number.isSafeInteger(n)) invalid(field, `${n} is not a whole number`, fix);
  return n;
}

/** A positive number of seconds as milliseconds, or null when absent. */
function seconds(field: string, v: unknown, fix: string): number | null {
  const n = num(v);
  if (n !== null && !(n > 0)) invalid(field, `${n} is not a positive number of seconds`, fix);
  return n === null ? null : n * 1000;
}

function time(field: string, v: unknown): Date | null {
  if (v === undefined || v === null) return null;
  const d = new Date(String(v));
  if (Number.isNaN(d.getTime())) invalid(field, `${JSON.stringify(v)} is not a time`, 'Pass an ISO 8601 time with its offset, e.g. 2026-12-24T18:00:00Z.');
  return d;
}

export const GateMutationsPlugin = extendSchema((build) => {
  const { pauses, limits } = build.input.pgRegistry.pgResources as Record<string, { get(spec: Record<string, Step>): Step }>;
  const field = verbField(build);
  const verb = (run: (client: Queryable, input: Input) => Promise<unknown>) =>
    field(async (c, input) => {
      try {
        return await run(c, input);
      } catch (err) {
        throw inInputWords(err);
      }
    });
  return {
    typeDefs,
    enums: { LimitKind: { values: { REQUESTS: 'requests', WEIGHT: 'weight', RUNNING: 'running' } } },
    objects: {
      Mutation: {
        plans: {
          pauseKey: verb(async (c, i) => {
            if (i.until != null && i.forSeconds != null) invalid('until', 'is given together with forSeconds', 'Pass either an end time (until) or a duration (forSeconds), not both.');
            const pause = await pauseKey(c, {
              key: String(i.key), reason: String(i.reason), until: time('until', i.until),
              forMs: seconds('forSeconds', i.forSeconds, 'Pass how long the pause lasts in seconds (e.g. 600), or an end time (until), or neither: until resumed.'),
            });
            // A Date would leave as its toString (seconds only): the ISO text keeps the milliseconds.
            return { key: pause.key, until: pause.until ? pause.until.toISOString() : null };
          }),
          resumeKey: verb(async (c, i) => ({ key: String(i.key), resumed: await resumeKey(c, String(i.key), text(i.reason)) })),
          setLimit: verb((c, i) => setLimit(c, {
            pattern: String(i.pattern), kind: String(i.kind) as LimitKind,
            amount: whole('amount', i.amount, 'Pass how many steps (or how much weight) the limit lets through: 1 to 10^12.')!,
            perMs: seconds('perSeconds', i.perSeconds, "Pass the period of the rate in seconds (e.g. 60), or leave it out for a RUNNING limit."),
            burst: whole('burst', i.burst, 'Pass 1 (evenly spaced, the default) or how many may start at once after a quiet time.'),
            note: text(i.note),
          })),
          deleteLimit: verb(async (c, i) => ({ deleted: await deleteLimit(c, String(i.pattern), String(i.kind) as LimitKind) })),
        },
      },
      PauseKeyPayload: { plans: { pause: ($p: Step) => pauses!.get({ key: access($p, 'key') }) } },
      SetLimitPayload: { plans: { limit: ($p: Step) => limits!.get({ pattern: access($p, 'pattern'), kind: access($p, 'kind') }) } },
    },
  };
}, 'BallastGateMutationsPlugin');
