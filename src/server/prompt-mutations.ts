// The prompt mutations (migration 0041, docs/prompts.md): createPromptVersion, setPromptLabel, setPromptCanary and
// clearPromptCanary, each one statement of src/db/prompts.ts run as the caller in the caller's transaction, so
// Postgres decides who may (operators only: the SQL functions are granted to ballast_operator alone; any other token
// is FORBIDDEN). Labels, their history and the pins of jobs are read through the `promptLabels`,
// `promptLabelHistory` and `jobPrompts` queries (surface.ts). Refusals name the input fields (errors.ts turns the SQL
// argument candidate_version into candidateVersion). The query field comparePromptArms (migration 0046) puts a
// canary's arms side by side with the verdict, as the caller (operators and reporters: the function is granted to
// them alone).
import { access, context, type FieldArgs, type Step } from 'postgraphile/grafast';
import { withPgClient } from 'postgraphile/@dataplan/pg';
import { extendSchema, gql } from 'postgraphile/utils';
import { clearPromptCanary, comparePromptArms, createPromptVersion, setPromptCanary, setPromptLabel } from '../db/prompts.ts';
import type { Queryable } from '../db/verbs.ts';
import { text, verbField } from './mutations.ts';

const typeDefs = gql`
  "A new version of a prompt: the next number after its newest (1 for a new name). Versions are immutable."
  input CreatePromptVersionInput {
    "The prompt's name: a lower-case letter, then up to 62 lower-case letters, digits, _, . or -."
    name: String!
    "The system message template (optional), with {{path}} placeholders."
    system: String
    "The user message template, e.g. 'Rate this review: {{input.text}}'."
    user: String!
  }
  "What createPromptVersion did."
  type CreatePromptVersionPayload {
    "The prompt."
    name: String!
    "The version created, or the newest when it already had these words."
    version: Int!
    "The SHA-256 of the templates."
    contentHash: String!
    "False when the newest version already had these words (nothing was created)."
    created: Boolean!
  }
  "A label to point at a version (created if new)."
  input SetPromptLabelInput {
    "The prompt."
    name: String!
    "The label, e.g. production or staging."
    label: String!
    "The version new jobs get from now on (jobs already pinned keep theirs)."
    version: Int!
    "Why (kept in promptLabelHistory); required."
    reason: String!
  }
  "A canary: a share of a label's new jobs get a candidate version."
  input SetPromptCanaryInput {
    "The prompt."
    name: String!
    "The label; it must point at a version already."
    label: String!
    "The candidate version (not the one the label points at)."
    candidateVersion: Int!
    "The fraction of new jobs that get the candidate: more than 0, at most 1 (0.1 for 10 %)."
    share: Float!
    "Why (kept in promptLabelHistory); required."
    reason: String!
  }
  "A canary to end: new jobs get the label's version again."
  input ClearPromptCanaryInput {
    "The prompt."
    name: String!
    "The label."
    label: String!
    "Why (kept in promptLabelHistory); required."
    reason: String!
  }
  "What setPromptLabel and setPromptCanary did."
  type PromptLabelPayload {
    "The prompt."
    promptName: String!
    "The label."
    label: String!
    "The version it points at now."
    version: Int!
    "The canary's candidate now; null: no canary."
    canaryVersion: Int
    "The canary's share of new jobs; null: no canary."
    canaryShare: Float
    "The label, read back under the caller's rights."
    promptLabel: PromptLabel
  }
  "What clearPromptCanary did."
  type ClearPromptCanaryPayload {
    "False when the label had no canary (nothing changed)."
    cleared: Boolean!
  }
  "One arm of a prompt canary over a window (compare_prompt_arms)."
  type PromptArmSide {
    "The versions its jobs got (several when the label or canary moved in the window)."
    versions: [Int!]!
    "Jobs pinned to the arm in the window."
    jobs: Int!
    "Attempts of its model steps with a contract outcome: the sample of the rates."
    attempts: Int!
    "Calls with a quality score: the sample of the mean score."
    scoredCalls: Int!
    "Share of attempts valid on the first try. Null: no attempt."
    firstPassRate: Float
    "Share of attempts a fallback model answered."
    fallbackRate: Float
    "Share of attempts sent to review."
    reviewRate: Float
    "Share of attempts rejected."
    rejectionRate: Float
    "Mean quality score of the calls. Null: none scored."
    meanScore: Float
    "Cost of the calls over accepted attempts (valid first try, repaired or fell back), USD."
    costPerSuccess: Float
    "Median call latency, ms."
    latencyP50Ms: Float
    "95th percentile call latency, ms."
    latencyP95Ms: Float
  }
  "A prompt canary's arms on production traffic: the candidate (canary arm) against the base (stable arm); deltas are candidate minus base (ballast.compare_prompt_arms)."
  type PromptArmsComparison {
    "The prompt."
    promptName: String!
    "The label."
    label: String!
    "The window's start (jobs pinned from then)."
    since: Datetime!
    "The window's end (exclusive)."
    until: Datetime!
    "The stable arm."
    base: PromptArmSide!
    "The canary arm."
    candidate: PromptArmSide!
    "First-pass rate delta."
    firstPassDelta: Float
    "Low end of its 95 % interval (Newcombe)."
    firstPassDeltaCiLow: Float
    "High end of its 95 % interval."
    firstPassDeltaCiHigh: Float
    "Fallback rate delta."
    fallbackDelta: Float
    "Review rate delta."
    reviewDelta: Float
    "Rejection rate delta."
    rejectionDelta: Float
    "Mean score delta."
    scoreDelta: Float
    "Low end of its 95 % bootstrap interval (two independent samples, deterministic)."
    scoreDeltaCiLow: Float
    "High end of its 95 % bootstrap interval."
    scoreDeltaCiHigh: Float
    "Cost per success delta, USD."
    costPerSuccessDelta: Float
    "Median latency delta, ms."
    latencyP50DeltaMs: Float
    "95th percentile latency delta, ms."
    latencyP95DeltaMs: Float
    "Both arms have at least minSamples attempts; without it regressed is false."
    enoughData: Boolean!
    "The candidate is worse beyond the threshold with 95 % confidence: the score or first-pass delta interval lies below -threshold."
    regressed: Boolean!
  }
  extend type Query {
    "A prompt canary's arms compared on the jobs pinned in a window, with the verdict (ballast.compare_prompt_arms). Operators and reporters."
    comparePromptArms(
      "The prompt."
      name: String!
      "The label (default production)."
      label: String
      "The window's start (default: 7 days ago)."
      since: Datetime
      "The window's end (default: now)."
      until: Datetime
      "The drop in score or first-pass rate allowed before a regression, 0 to 1 (default 0)."
      threshold: Float
      "The attempts each arm needs for a verdict (default 20)."
      minSamples: Int
    ): PromptArmsComparison
  }
  extend type Mutation {
    "Create the next version of a prompt from its templates (ballast.create_prompt_version). Operators."
    createPromptVersion(input: CreatePromptVersionInput!): CreatePromptVersionPayload
    "Point a prompt label at a version, audited; moving it to the canary's candidate ends the canary (ballast.set_prompt_label). Operators."
    setPromptLabel(input: SetPromptLabelInput!): PromptLabelPayload
    "Send a share of a label's new jobs to a candidate version, audited (ballast.set_prompt_canary). Operators."
    setPromptCanary(input: SetPromptCanaryInput!): PromptLabelPayload
    "End a label's canary, audited (ballast.clear_prompt_canary). Operators."
    clearPromptCanary(input: ClearPromptCanaryInput!): ClearPromptCanaryPayload
  }
`;

const int = (v: unknown) => Number(v);

interface ComparisonArgs {
  name: string;
  label: string | null;
  since: string | null;
  until: string | null;
  threshold: number | null;
  minSamples: number | null;
}

export const PromptMutationsPlugin = extendSchema((build) => {
  const { prompt_labels: promptLabels } = build.input.pgRegistry.pgResources as Record<string, { get(spec: Record<string, Step>): Step }>;
  const verb = verbField(build);
  const executor = build.input.pgRegistry.pgExecutors.main!;
  return {
    typeDefs,
    objects: {
      Mutation: {
        plans: {
          createPromptVersion: verb(async (c, i) => ({
            name: String(i.name), ...(await createPromptVersion(c, String(i.name), text(i.system), String(i.user))),
          })),
          setPromptLabel: verb((c, i) => setPromptLabel(c, String(i.name), String(i.label), int(i.version), String(i.reason))),
          setPromptCanary: verb((c, i) => setPromptCanary(c, String(i.name), String(i.label), int(i.candidateVersion), Number(i.share), String(i.reason))),
          clearPromptCanary: verb(async (c, i) => ({ cleared: await clearPromptCanary(c, String(i.name), String(i.label), String(i.reason)) })),
        },
      },
      Query: {
        plans: {
          comparePromptArms: (_: Step, args: FieldArgs) => withPgClient(executor,
            {
              name: args.getRaw('name'), label: args.getRaw('label'), since: args.getRaw('since'), until: args.getRaw('until'),
              threshold: args.getRaw('threshold'), minSamples: args.getRaw('minSamples'), caller: context().get('ballastCaller'),
            } as never,
            (client, a: ComparisonArgs) => comparePromptArms(client as unknown as Queryable, a.name, a.label ?? 'production', {
              since: a.since ? new Date(a.since) : null, until: a.until ? new Date(a.until) : null,
              threshold: a.threshold ?? 0, minSamples: a.minSamples ?? 20,
            })),
        },
      },
      PromptLabelPayload: {
        plans: { promptLabel: ($p: Step) => promptLabels!.get({ prompt_name: access($p, 'promptName'), label: access($p, 'label') }) },
      },
    },
  };
}, 'BallastPromptMutationsPlugin');
