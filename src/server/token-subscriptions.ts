// The GraphQL side of live tokens: the modelTokens subscription and its TokenBatch type. Served by live/ (tokens.ts
// reads and sends the batches); the plan here only gives the field its place in the schema, as subscriptions.ts does.
import { constant, listen, type Step } from 'postgraphile/grafast';
import { extendSchema, gql } from 'postgraphile/utils';
import { clientError } from './errors.ts';

const typeDefs = gql`
  "A batch of the text a streaming model step sent, the end of an attempt's streaming, or the end of the subscription."
  type TokenBatch {
    "'tokens' (text streamed), 'attempt_end' (an attempt's model calls are over; a retry may follow) or 'done' (the step ended: the last message, after which the subscription completes; see stepStatus)."
    type: String!
    "The model step."
    stepId: BigInt!
    "Where text starts in the step's token log, in characters (Unicode code points) from the first one the step streamed. Resume with fromOffset: offset + the length of text."
    offset: Int!
    "The text of this batch (empty on 'attempt_end' and 'done')."
    text: String!
    "The attempt whose model call streamed it (or whose streaming ended, on 'attempt_end'); null on 'done'."
    attemptId: BigInt
    "The call within that attempt, from 1: a re-ask or a fallback model is a new call. Null on 'done'."
    segment: Int
    "primary, reask or fallback (as in modelCalls); null on 'attempt_end' and 'done'."
    rung: String
    "The model called (provider:model); null on 'attempt_end' and 'done'."
    model: String
    "True when this batch begins a call's text: what came before belongs to another answer (a re-ask, a fallback, a new attempt)."
    newSegment: Boolean!
    "True on the last message ('done'): the step ended, no more text comes."
    done: Boolean!
    "True for what was streamed before the subscription opened (its backlog)."
    replayed: Boolean!
    "On 'done': the step's status that ended the subscription: succeeded, failed, cancelled, skipped (final) or needs_review (a person decides; no model runs). Null on every other message."
    stepStatus: String
  }
  extend type Subscription {
    """
    The text a model step with stream: true sends, batch by batch (every ~100 ms while it streams): first what it
    streamed so far from fromOffset, then live, with no gap and nothing twice. One subscription follows the step
    through retries, re-asks and fallbacks (each call's first batch has newSegment; each attempt ends with an
    'attempt_end'); offsets continue across them. When the step ends (succeeded, failed, cancelled, skipped or
    needs_review) a last message with done: true and stepStatus, then complete. Kept for a minute after the step
    finished; the durable record is modelCalls.rawOutput. NOT_FOUND for a step the caller cannot see.
    """
    modelTokens(
      "The model step to follow (NOT_FOUND when the caller cannot see it)."
      stepId: BigInt!
      "Start at this character of the step's token log (0: from its first); resume with the last offset + text length you received."
      fromOffset: Int = 0
    ): TokenBatch!
  }
`;

const refuse = () => {
  throw clientError('SUBSCRIPTIONS_OVER_WEBSOCKET', 'subscriptions are served over graphql-ws (the graphql-transport-ws protocol) at /graphql');
};

export function tokenSubscriptionsPlugin(): GraphileConfig.Plugin {
  const subscribePlan = () => listen(constant({ subscribe: refuse }) as Step<any>, constant('none'));
  return extendSchema({
    typeDefs,
    objects: { Subscription: { plans: { modelTokens: { subscribePlan, plan: ($batch: Step) => $batch } } } },
  }, 'BallastTokenSubscriptionsPlugin');
}
