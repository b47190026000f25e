// The GraphQL side of live updates: the Subscription fields and their types. The subscriptions themselves are served
// by live/ (protocol.ts takes every subscription operation off the websocket before graphql-ws and grafast see it:
// one rendering per event for all alike subscribers, ordered delivery, backpressure), so the plans here only give
// the fields a place in the schema (introspection, validation, Ruru) and refuse any other way of running them.
import { constant, listen, type Step } from 'postgraphile/grafast';
import { extendSchema, gql } from 'postgraphile/utils';
import { clientError } from './errors.ts';

const typeDefs = gql`
  "A change of a job or of one of its steps, with the new state."
  type JobChange {
    "'snapshot' (the first live message of jobUpdated: the job as it is), or the event type: job_submitted, job_running, step_running, step_succeeded, step_progress, job_completed, ..."
    type: String!
    "The event's id in ballast.events; for a snapshot the last event it includes; null for step_progress (not stored). Events arrive in (transaction, id) order, so ids are not always increasing: resubscribe with after: <the last one you processed>."
    eventId: BigInt
    "The job that changed."
    jobId: BigInt!
    "The tenant of that job."
    tenantId: String
    "The step that changed; null for a change of the job as a whole."
    stepId: BigInt
    "The name of that step; null for a change of the job as a whole."
    stepName: String
    "The new status of the step (step_* events) or of the job (job_* events, snapshot)."
    status: String
    "When it happened (for a snapshot: when the snapshot was read)."
    at: Datetime
    "step_progress only: the value the step reported."
    progress: JSON
    "True for events read from ballast.events because they happened after 'after'; false for live ones."
    replayed: Boolean!
    "Only on a snapshot: the job and its steps at that moment."
    job: JobSnapshot
  }
  "A job as it was when a jobUpdated subscription started (the same meaning as the fields of Job)."
  type JobSnapshot {
    "The job id."
    id: BigInt!
    "Its tenant."
    tenantId: String!
    "Its pipeline."
    pipeline: String!
    "The pipeline version it runs."
    pipelineVersion: Int!
    "Its status (see Job.status)."
    status: String!
    "The output of its final step(s); null until it completes."
    result: JSON
    "Why it failed; null unless it failed."
    error: JSON
    "When it was submitted."
    createdAt: Datetime
    "When it last changed."
    updatedAt: Datetime
    "When it finished; null while it is not finished."
    finishedAt: Datetime
    "Its steps, in the order they were created."
    steps: [StepSnapshot!]!
  }
  "A step as it was in a JobSnapshot (the same meaning as the fields of Step)."
  type StepSnapshot {
    "The step id."
    id: BigInt!
    "Its name in the pipeline."
    name: String!
    "Its status (see Step.status)."
    status: String!
    "How many times a worker has started it."
    attemptCount: Int!
    "How many attempts it may use."
    maxAttempts: Int!
    "The latest progress it reported; null: none."
    progress: JSON
    "When it last changed."
    updatedAt: Datetime
  }
  extend type Subscription {
    """
    One job: the events after 'after' (if given), then a snapshot of the job, then every change as it happens, in
    the order a resume returns them. NOT_FOUND for a job (or an 'after') you cannot see. jobsOnly: job-level changes
    only. progressEveryMs: step_progress reports, 0 (default) every one, n at most one per step every n ms (the latest).
    """
    jobUpdated(
      "The job to follow (NOT_FOUND when the caller cannot see it)."
      jobId: BigInt!
      "Replay the stored events after this event id first (the last eventId you processed); null: no replay."
      after: BigInt
      "Only changes of the job as a whole (job_* events), no step events."
      jobsOnly: Boolean = false
      "step_progress messages: 0 or null every report, n at most one per step every n milliseconds (the latest)."
      progressEveryMs: Int
    ): JobChange!
    """
    Every job and step change of a tenant (clients: their own; operators and reporters: the one named, or all when
    tenantId is null), in the order a resume returns them; with 'after', the events after it first. jobsOnly:
    job-level changes only. progressEveryMs: also step_progress reports (none by default), at most one per step every
    n ms (0: every one).
    """
    tenantEvents(
      "The tenant to follow. Clients: their own (leave it out); operators and reporters: any, or null for every tenant."
      tenantId: String
      "Replay the stored events after this event id first (the last eventId you processed); null: no replay."
      after: BigInt
      "Only changes of jobs as a whole (job_* events), no step events."
      jobsOnly: Boolean = false
      "step_progress messages, none by default: 0 every report, n at most one per step every n milliseconds (the latest)."
      progressEveryMs: Int
    ): JobChange!
  }
`;

const refuse = () => {
  throw clientError('SUBSCRIPTIONS_OVER_WEBSOCKET', 'subscriptions are served over graphql-ws (the graphql-transport-ws protocol) at /graphql');
};

export function subscriptionsPlugin(): GraphileConfig.Plugin {
  const subscribePlan = () => listen(constant({ subscribe: refuse }) as Step<any>, constant('none'));
  return extendSchema({
    typeDefs,
    objects: {
      Subscription: {
        plans: {
          jobUpdated: { subscribePlan, plan: ($event: Step) => $event },
          tenantEvents: { subscribePlan, plan: ($event: Step) => $event },
        },
      },
    },
  }, 'BallastSubscriptionsPlugin');
}
