// The fair sharing mutations (migration 0040, docs/flow-control.md "Fair sharing between tenants"): setFairShare and
// stopFairSharing, each one statement of src/db/gates.ts run as the caller in the caller's transaction, so Postgres
// decides who may (operators only: the SQL functions are granted to ballast_operator alone; any other token is
// FORBIDDEN). The weights are read through the `fairShares` query (surface.ts). Errors name the input fields: the
// SQL function's weight is weight here, its tenant_id tenantId (errors.ts turns the one into the other).
import { access, context, type Step } from 'postgraphile/grafast';
import { sideEffectWithPgClient } from 'postgraphile/@dataplan/pg';
import { extendSchema, gql } from 'postgraphile/utils';
import type { Queryable } from '../db/verbs.ts';
import { setFairShare, stopFairSharing } from '../db/gates.ts';
import { verbField } from './mutations.ts';

const typeDefs = gql`
  "A tenant's weight in fair sharing, or * to turn fair sharing on with a default weight. Setting a tenant's weight turns fair sharing on too (default weight 1) when it was off."
  input SetFairShareInput {
    "A tenant id, or * for the switch: its weight is the default of tenants without one."
    tenantId: String!
    "The relative share while several tenants have queued work: above 0, at most 1000000; default 1 (3 gets three times the share of 1)."
    weight: Float
  }
  "What setFairShare did."
  type SetFairSharePayload {
    "The tenant, or *."
    tenantId: String!
    "Its weight now."
    weight: Float!
    "The row read back under the caller's rights."
    fairShare: FairShare
  }
  "What stopFairSharing did."
  type StopFairSharingPayload {
    "False when fair sharing was already off."
    stopped: Boolean!
  }
  extend type Mutation {
    "Turn fair sharing between tenants on (tenantId *) or set a tenant's weight (ballast.set_fair_share). Operators."
    setFairShare(input: SetFairShareInput!): SetFairSharePayload
    "Turn fair sharing off: weights forgotten, new jobs first come, first served again (ballast.stop_fair_sharing). Operators."
    stopFairSharing: StopFairSharingPayload
  }
`;

export const FairShareMutationsPlugin = extendSchema((build) => {
  const { fair_shares: fairShares } = build.input.pgRegistry.pgResources as Record<string, { get(spec: Record<string, Step>): Step }>;
  const executor = build.input.pgRegistry.pgExecutors.main!;
  const verb = verbField(build);
  return {
    typeDefs,
    objects: {
      Mutation: {
        plans: {
          setFairShare: verb((c, i) => setFairShare(c, String(i.tenantId), typeof i.weight === 'number' ? i.weight : 1)),
          // No input: run in the caller's transaction like the others (verbField reads an input argument).
          stopFairSharing: () => sideEffectWithPgClient(executor, context().get('ballastCaller'),
            async (client) => ({ stopped: await stopFairSharing(client as unknown as Queryable) })),
        },
      },
      SetFairSharePayload: { plans: { fairShare: ($p: Step) => fairShares!.get({ tenant_id: access($p, 'tenantId') }) } },
    },
  };
}, 'BallastFairShareMutationsPlugin');
