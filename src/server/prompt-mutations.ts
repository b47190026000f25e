// The prompt mutations (migration 0041, docs/prompts.md): createPromptVersion, setPromptLabel, setPromptCanary and
// clearPromptCanary, each one statement of src/db/prompts.ts run as the caller in the caller's transaction, so
// Postgres decides who may (operators only: the SQL functions are granted to ballast_operator alone; any other token
// is FORBIDDEN). Labels, their history and the pins of jobs are read through the `promptLabels`,
// `promptLabelHistory` and `jobPrompts` queries (surface.ts). Refusals name the input fields (errors.ts turns the SQL
// argument candidate_version into candidateVersion).
import { access, type Step } from 'postgraphile/grafast';
import { extendSchema, gql } from 'postgraphile/utils';
import { clearPromptCanary, createPromptVersion, setPromptCanary, setPromptLabel } from '../db/prompts.ts';
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

export const PromptMutationsPlugin = extendSchema((build) => {
  const { prompt_labels: promptLabels } = build.input.pgRegistry.pgResources as Record<string, { get(spec: Record<string, Step>): Step }>;
  const verb = verbField(build);
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
      PromptLabelPayload: {
        plans: { promptLabel: ($p: Step) => promptLabels!.get({ prompt_name: access($p, 'promptName'), label: access($p, 'label') }) },
      },
    },
  };
}, 'BallastPromptMutationsPlugin');
