// The mutations: one per ballast verb, each calling its SQL function as the caller (src/db/verbs.ts) inside the
// caller's transaction. Postgres decides who may do what (0001_foundations: submit and cancel for clients in their tenant,
// everything for operators); the error codes say why not. Payloads return the affected job (and step) read back
// through PostGraphile, under the same row-level security.
import { access, context, type FieldArgs, type Step } from 'postgraphile/grafast';
import { sideEffectWithPgClient } from 'postgraphile/@dataplan/pg';
import { extendSchema, gql } from 'postgraphile/utils';
import * as sql from '../db/verbs.ts';
import type { Caller } from './auth.ts';

const typeDefs = gql`
  "A job to start. Input errors come back as INVALID_INPUT with extensions.issues [{path, message}]."
  input SubmitJobInput {
    "Pipeline name, e.g. demo.wordstats."
    pipeline: String!
    "Job input, checked against the pipeline's input contract in Postgres."
    input: JSON
    "Same key + same request returns the existing job (created: false); same key + another request is IDEMPOTENCY_CONFLICT."
    idempotencyKey: String
    "Tenant (operators only; a client always submits for its own tenant). Default: the token's tenant, else 'default'."
    tenantId: String
    "-1000..1000, lower runs first. Default 0."
    priority: Int
    "Pin a pipeline version. Default: the newest."
    pipelineVersion: Int
    "Start at this time: the job is scheduled until then (a time now or past starts it at once). Not with delayMs."
    runAt: Datetime
    "Start in this many milliseconds, by the database clock (0 to ten years). Not with runAt."
    delayMs: Float
    "The job must finish by then, else its unfinished steps fail (deadline_exceeded) and so does the job."
    deadline: Datetime
    "The job must start by then, else (still scheduled or queued) it fails (expired)."
    expiresAt: Datetime
    "One job per burst of submissions with a key: while the job is scheduled, a later one replaces its input and pushes its start (created: false)."
    debounce: DebounceInput
    "At most one job per key per period: a submission within it returns the key's last job (created: false)."
    throttle: ThrottleInput
  }
  "Debounce of submitJob: one job per burst of submissions with the key (per tenant and pipeline)."
  input DebounceInput {
    "What the submissions are about, e.g. document:42 (1 to 500 bytes)."
    key: String!
    "The job starts this many ms after the last submission of the burst (0 to a day)."
    quietMs: Float!
    "But at most this many ms after the first (quietMs to thirty days). Default: no bound."
    maxWaitMs: Float
  }
  "Throttle of submitJob: at most one job per key (per tenant and pipeline) per period."
  input ThrottleInput {
    "What the submissions are about, e.g. feed:7 (1 to 500 bytes)."
    key: String!
    "The period in ms (0 to a day)."
    periodMs: Float!
  }
  "The job submitJob started, or the existing one its idempotency key (or debounce or throttle key) named."
  type SubmitJobPayload {
    "The job id: read it with job(id:), follow it with the jobUpdated subscription."
    jobId: BigInt!
    "False when the idempotency key returned an existing job."
    created: Boolean!
    "The job status now: queued for a new job (scheduled when it starts later); for an existing one, whatever it has reached."
    status: String!
    "The pipeline version the job runs."
    pipelineVersion: Int!
    "The job, read back under the caller's rights."
    job: Job
  }
  """
  Jobs to start, one per input, all or nothing (at most 1000). An input error comes back as INVALID_INPUT, its issues'
  paths naming the input counted from 1 (inputs[3].text is the third input's text); a key conflict as
  IDEMPOTENCY_CONFLICT naming the key and the input.
  """
  input SubmitJobsInput {
    "Pipeline name, e.g. demo.wordstats."
    pipeline: String!
    "One job input per job, each checked against the pipeline's input contract in Postgres."
    inputs: [JSON!]!
    "One key (or null) per input, in the order of inputs. A key used before with the same request returns that job (created: false); the same key twice with the same request, one job."
    idempotencyKeys: [String]
    "Tenant (operators only; a client always submits for its own tenant). Default: the token's tenant, else 'default'."
    tenantId: String
    "-1000..1000, lower runs first. Default 0."
    priority: Int
    "Pin a pipeline version. Default: the newest."
    pipelineVersion: Int
    "Start every job at this time: scheduled until then. Not with delayMs."
    runAt: Datetime
    "Start every job in this many milliseconds, by the database clock. Not with runAt."
    delayMs: Float
    "Every job must finish by then (see SubmitJobInput.deadline)."
    deadline: Datetime
    "Every job must start by then (see SubmitJobInput.expiresAt)."
    expiresAt: Datetime
  }
  "One job of a submitJobs call, in the position of its input."
  type SubmittedJob {
    "The job id."
    jobId: BigInt!
    "False when the idempotency key returned an existing job (or one submitted earlier in the same call)."
    created: Boolean!
    "The job status now: queued for a new job (scheduled when it starts later); for an existing one, whatever it has reached."
    status: String!
    "The job, read back under the caller's rights."
    job: Job
  }
  "The jobs submitJobs started or found."
  type SubmitJobsPayload {
    "One per input, in the order of the inputs."
    jobs: [SubmittedJob!]!
  }
  "The job to cancel. A job of another tenant is NOT_FOUND for a client; a finished job is JOB_FINISHED."
  input CancelJobInput {
    "The job to cancel."
    jobId: BigInt!
    "Why, recorded in the audit trail (events.reason). Optional."
    reason: String
  }
  "What cancelJob did."
  type CancelJobPayload {
    "The job."
    jobId: BigInt!
    "The job status now: cancelled."
    status: String!
    "The steps this call cancelled (those not finished yet); empty when the job was cancelled before."
    cancelledStepIds: [BigInt!]!
    "True when the job was cancelled before (nothing changed)."
    alreadyCancelled: Boolean!
    "The job, read back under the caller's rights."
    job: Job
  }
  "The step to run again. Its dependants run again after it."
  input ReplayStepInput {
    "A finished step (succeeded, failed or cancelled), or a failed item of a map step."
    stepId: BigInt!
    "Why, recorded in the audit trail. Optional."
    reason: String
    "Replay a step that succeeded (re-running finished work is a decision, not a default)."
    force: Boolean = false
    "Call the model providers again instead of reusing the answers the replayed steps got before (paid once)."
    freshCalls: Boolean = false
  }
  "The job to run again (operators). A job pruned by retention cannot be replayed (INVALID_TRANSITION)."
  input ReplayJobInput {
    "The job whose steps to run again."
    jobId: BigInt!
    "Replay this step (even if it succeeded) and what follows it; default: every failed or cancelled step."
    fromStep: String
    "Why, recorded in the audit trail. Optional."
    reason: String
    "Call the model providers again instead of reusing the answers the replayed steps got before (paid once)."
    freshCalls: Boolean = false
  }
  "What replayStep or replayJob did."
  type ReplayPayload {
    "The job."
    jobId: BigInt!
    "The steps queued again or set back to pending (those that depend on a replayed step)."
    replayedStepIds: [BigInt!]!
    "The job status now (queued or running)."
    jobStatus: String!
    "The job, read back under the caller's rights."
    job: Job
  }
  "An event for the steps waiting for its key (a step waits with ctx.waitForEvent)."
  input SendEventInput {
    "The key a waiting step named, e.g. approval:42 (1 to 500 bytes). Keys belong to a tenant: an event reaches only that tenant's steps."
    key: String!
    "What the waiting steps receive (any JSON). Optional."
    payload: JSON
    "Operators only: the tenant whose steps receive it (default: the token's tenant, else 'default'). Clients send to their own tenant."
    tenantId: String
  }
  "What sendEvent did."
  type SendEventPayload {
    "False when the key was delivered before (nothing changed)."
    accepted: Boolean!
    "The waiting steps it resumed (queued again); empty when none waited yet: a step that waits for the key later gets it at once."
    resumedStepIds: [BigInt!]!
  }
  "A decision on a step in needs_review."
  enum ReviewDecision {
    "Keep the proposed output."
    APPROVE
    "Use the output given."
    EDIT
    "Fail the step."
    REJECT
  }
  "The decision on a step waiting for review (see reviews, or step.pendingReview)."
  input ResolveReviewInput {
    "A step in needs_review (NOT_IN_REVIEW otherwise)."
    stepId: BigInt!
    "APPROVE, EDIT (with output) or REJECT."
    decision: ReviewDecision!
    "The output to use with EDIT; checked against the step's output contract (INVALID_INPUT otherwise)."
    output: JSON
    "A note kept with the decision (steps.review.note). Optional."
    note: String
  }
  "What resolveReview did."
  type ResolveReviewPayload {
    "The step decided."
    stepId: BigInt!
    "Its job."
    jobId: BigInt!
    "The step status now: succeeded (APPROVE, EDIT) or failed (REJECT)."
    stepStatus: String!
    "The job status now."
    jobStatus: String!
    "The steps that became ready to run because of the decision."
    queuedStepIds: [BigInt!]!
    "The step, read back under the caller's rights."
    step: Step
    "The job, read back under the caller's rights."
    job: Job
  }
  extend type Mutation {
    "Start a job (ballast.submit_job). Clients: their own tenant."
    submitJob(input: SubmitJobInput!): SubmitJobPayload
    "Start many jobs of one pipeline in one statement (ballast.submit_jobs). Clients: their own tenant."
    submitJobs(input: SubmitJobsInput!): SubmitJobsPayload
    "Cancel a job and its unfinished child jobs, recursively (ballast.cancel_job). Clients: their own tenant's jobs."
    cancelJob(input: CancelJobInput!): CancelJobPayload
    "Run a finished step again, and what depends on it (ballast.replay_step). Operators."
    replayStep(input: ReplayStepInput!): ReplayPayload
    "Run a job's failed steps again, or from a named step (ballast.replay_job). Operators."
    replayJob(input: ReplayJobInput!): ReplayPayload
    "Deliver an event to the steps of one tenant waiting for it (ballast.send_event). Clients: their own tenant."
    sendEvent(input: SendEventInput!): SendEventPayload
    "Decide a step in needs_review (ballast.resolve_review); the token's subject is recorded as reviewer. Operators."
    resolveReview(input: ResolveReviewInput!): ResolveReviewPayload
  }
`;

export type Input = Record<string, unknown>;
export const text = (v: unknown) => (v === undefined || v === null ? null : String(v));

/** The plan of a mutation field: runs `run` with the field's input and the caller, in the caller's pg transaction. */
export function verbField(build: GraphileBuild.Build) {
  const executor = build.input.pgRegistry.pgExecutors.main!;
  return (run: (client: sql.Queryable, input: Input, caller: Caller) => Promise<unknown>) =>
    (_: Step, fieldArgs: FieldArgs) =>
      sideEffectWithPgClient(executor, { input: fieldArgs.getRaw('input') as Step<Input>, caller: context().get('ballastCaller') as Step<Caller> },
        (client, { input, caller }) => run(client as unknown as sql.Queryable, input, caller));
}

/** runAt, delayMs, deadline and expiresAt of a submit input (migration 0039): checked in Postgres. */
const startOf = (i: Record<string, unknown>) => ({
  runAt: (i.runAt as string | null | undefined) ?? null, delayMs: (i.delayMs as number | null | undefined) ?? null,
  deadline: (i.deadline as string | null | undefined) ?? null, expiresAt: (i.expiresAt as string | null | undefined) ?? null,
});

export const MutationsPlugin = extendSchema((build) => {
  const { jobs, steps } = build.input.pgRegistry.pgResources as Record<string, { get(spec: Record<string, Step>): Step }>;
  const verb = verbField(build);
  const jobOf = { job: ($p: Step) => jobs!.get({ id: access($p, 'jobId') }) };
  return {
    typeDefs,
    enums: { ReviewDecision: { values: { APPROVE: 'approve', EDIT: 'edit', REJECT: 'reject' } } },
    objects: {
      Mutation: {
        plans: {
          submitJob: verb((c, i, caller) => sql.submitJob(c, {
            pipeline: String(i.pipeline), input: i.input ?? {}, idempotencyKey: text(i.idempotencyKey),
            tenantId: text(i.tenantId) ?? caller.tenantId ?? 'default', priority: (i.priority as number | null) ?? 0,
            pipelineVersion: (i.pipelineVersion as number | null) ?? null, ...startOf(i),
            debounce: (i.debounce as sql.Debounce | null | undefined) ?? null, throttle: (i.throttle as sql.Throttle | null | undefined) ?? null,
          })),
          submitJobs: verb(async (c, i, caller) => ({
            jobs: await sql.submitJobs(c, {
              pipeline: String(i.pipeline), inputs: i.inputs as unknown[],
              idempotencyKeys: (i.idempotencyKeys as (string | null)[] | null | undefined) ?? null,
              tenantId: text(i.tenantId) ?? caller.tenantId ?? 'default', priority: (i.priority as number | null) ?? 0,
              pipelineVersion: (i.pipelineVersion as number | null) ?? null, ...startOf(i),
            }),
          })),
          cancelJob: verb((c, i) => sql.cancelJob(c, String(i.jobId), text(i.reason))),
          replayStep: verb((c, i) => sql.replayStep(c, String(i.stepId), text(i.reason), i.force === true, null, i.freshCalls === true)),
          replayJob: verb((c, i) => sql.replayJob(c, String(i.jobId), text(i.fromStep), text(i.reason), null, i.freshCalls === true)),
          sendEvent: verb((c, i) => sql.sendEvent(c, String(i.key), i.payload ?? null, text(i.tenantId))),
          resolveReview: verb((c, i, caller) => sql.resolveReview(c, String(i.stepId), String(i.decision), i.output ?? null,
            caller.subject ? `jwt:${caller.subject}` : `jwt:${caller.role}`, text(i.note))),
        },
      },
      SubmitJobPayload: { plans: jobOf },
      SubmittedJob: { plans: jobOf },
      CancelJobPayload: { plans: jobOf },
      ReplayPayload: { plans: jobOf },
      ResolveReviewPayload: {
        plans: {
          job: ($p: Step) => jobs!.get({ id: access($p, 'jobId') }),
          step: ($p: Step) => steps!.get({ id: access($p, 'stepId') }),
        },
      },
    },
  };
}, 'BallastMutationsPlugin');
