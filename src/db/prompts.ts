// Prompt versions, labels and canaries (migration 0041, docs/prompts.md): the statements of the verbs
// (ballast.create_prompt_version, set_prompt_label, set_prompt_canary, clear_prompt_canary, resolve_prompt) and of
// the views and report that show them, shared by the worker (model steps naming a label), the GraphQL mutations and
// the CLI, one statement each (like verbs.ts and gates.ts). Errors leave as pg raised them: each caller translates
// them its own way (translateError, GraphQL's error codes). Ids leave as strings.
import type { Queryable } from './verbs.ts';

/** A prompt label, as ballast.prompt_labels shows it. */
export interface PromptLabelRow {
  promptName: string;
  label: string;
  /** The version new jobs get outside the canary. */
  version: number;
  /** The canary's candidate; null without a canary. */
  canaryVersion: number | null;
  /** The share of new jobs that get the candidate (0 < share <= 1); null without a canary. */
  canaryShare: number | null;
  updatedBy: string | null;
  updatedAt: Date;
}

/** A row of ballast.prompt_label_history. */
export interface PromptLabelHistoryRow {
  id: string;
  promptName: string;
  label: string;
  action: 'set' | 'canary' | 'clear_canary';
  fromVersion: number | null;
  toVersion: number | null;
  canaryVersion: number | null;
  canaryShare: number | null;
  actor: string | null;
  reason: string;
  at: Date;
}

/** A version of a prompt, as ballast.prompts shows it. */
export interface PromptVersionRow {
  name: string;
  version: number;
  template: { system: string | null; user: string };
  contentHash: string;
  registeredAt: Date;
}

/** What resolve_prompt returns: the version the job is pinned to for a label, and whether it came from the canary. */
export interface ResolvedPrompt {
  version: number;
  template: { system: string | null; user: string };
  contentHash: string;
  arm: 'stable' | 'canary';
  pinnedAt: Date;
}

/** A row of ballast.prompt_arms: the traffic of one version and arm of a label. */
export interface PromptArmRow {
  promptName: string;
  label: string;
  version: number;
  arm: 'stable' | 'canary';
  jobs: number;
  attempts: number;
  firstPassRate: number | null;
  fallbackRate: number | null;
  reviewRate: number | null;
  rejectionRate: number | null;
  degradedRate: number | null;
  meanScore: number | null;
  calls: number;
  costUsd: number;
  costPerSuccess: number | null;
  meanLatencyMs: number | null;
  p95LatencyMs: number | null;
}

const LABEL_COLUMNS = `prompt_name as "promptName", label, version, canary_version as "canaryVersion", canary_share as "canaryShare"`;

async function rows<R>(c: Queryable, text: string, values: readonly unknown[] = []): Promise<R[]> {
  return [...(await c.query<R>({ text, values })).rows];
}

/** ballast.create_prompt_version: the next version of a prompt (or the newest, when its templates are the same). */
export const createPromptVersion = async (c: Queryable, name: string, system: string | null, user: string, actor: string | null = null) =>
  (await rows<{ version: number; contentHash: string; created: boolean }>(c,
    `select version, content_hash as "contentHash", created from ballast.create_prompt_version($1, $2, $3, $4)`,
    [name, system, user, actor]))[0]!;

/** ballast.set_prompt_label: points a label at a version (audited). */
export const setPromptLabel = async (c: Queryable, name: string, label: string, version: number, reason: string, actor: string | null = null) =>
  (await rows<Omit<PromptLabelRow, 'updatedBy' | 'updatedAt'>>(c,
    `select ${LABEL_COLUMNS} from ballast.set_prompt_label($1, $2, $3::int, $4, $5)`, [name, label, version, reason, actor]))[0]!;

/** ballast.set_prompt_canary: sends `share` of the label's new jobs to the candidate version (audited). */
export const setPromptCanary = async (c: Queryable, name: string, label: string, candidateVersion: number, share: number, reason: string, actor: string | null = null) =>
  (await rows<Omit<PromptLabelRow, 'updatedBy' | 'updatedAt'>>(c,
    `select ${LABEL_COLUMNS} from ballast.set_prompt_canary($1, $2, $3::int, $4::float8, $5, $6)`,
    [name, label, candidateVersion, share, reason, actor]))[0]!;

/** ballast.clear_prompt_canary: whether a canary was in force. */
export const clearPromptCanary = async (c: Queryable, name: string, label: string, reason: string, actor: string | null = null): Promise<boolean> =>
  (await rows<{ cleared: boolean }>(c, 'select ballast.clear_prompt_canary($1, $2, $3, $4) as cleared', [name, label, reason, actor]))[0]!.cleared;

/** ballast.resolve_prompt: the version job `jobId` uses for the label, pinned at its first call. */
export const resolvePrompt = async (c: Queryable, jobId: string, name: string, label: string): Promise<ResolvedPrompt> =>
  (await rows<ResolvedPrompt>(c,
    `select version, template, content_hash as "contentHash", arm, pinned_at as "pinnedAt" from ballast.resolve_prompt($1::bigint, $2, $3)`,
    [jobId, name, label]))[0]!;

/** One stored version of a prompt; undefined when there is none. */
export const getPromptVersion = async (c: Queryable, name: string, version: number): Promise<PromptVersionRow | undefined> =>
  (await rows<PromptVersionRow>(c,
    `select name, version, template, content_hash as "contentHash", registered_at as "registeredAt"
       from ballast.prompts where name = $1 and version = $2::int`, [name, version]))[0];

/** The prompt versions a job is pinned to, one per prompt and label it resolved (ballast.job_prompts). */
export const jobPrompts = (c: Queryable, jobId: string): Promise<{ promptName: string; label: string; version: number; arm: string; pinnedAt: Date }[]> =>
  rows(c, `select prompt_name as "promptName", label, version, arm, pinned_at as "pinnedAt"
             from ballast.job_prompts where job_id = $1::bigint order by prompt_name, label`, [jobId]);

/** The labels (of one prompt, or all), by prompt and label. */
export const listPromptLabels = (c: Queryable, name: string | null = null): Promise<PromptLabelRow[]> =>
  rows<PromptLabelRow>(c,
    `select ${LABEL_COLUMNS}, updated_by as "updatedBy", updated_at as "updatedAt"
       from ballast.prompt_labels where $1::text is null or prompt_name = $1 order by prompt_name, label`, [name]);

/** The versions of a prompt, newest first. */
export const listPromptVersions = (c: Queryable, name: string): Promise<PromptVersionRow[]> =>
  rows<PromptVersionRow>(c,
    `select name, version, template, content_hash as "contentHash", registered_at as "registeredAt"
       from ballast.prompts where name = $1 order by version desc`, [name]);

/** Every prompt name with its newest version and how many it has. */
export const listPrompts = (c: Queryable): Promise<{ name: string; versions: number; latest: number; registeredAt: Date }[]> =>
  rows(c, `select name, count(*)::int as versions, max(version) as latest, max(registered_at) as "registeredAt"
             from ballast.prompts group by name order by name`);

/** The newest entries of the label history (of one prompt, or all), newest first. */
export const promptLabelHistory = (c: Queryable, name: string | null = null, limit = 100): Promise<PromptLabelHistoryRow[]> =>
  rows<PromptLabelHistoryRow>(c,
    `select id::text as id, prompt_name as "promptName", label, action, from_version as "fromVersion", to_version as "toVersion",
            canary_version as "canaryVersion", canary_share as "canaryShare", actor, reason, at
       from ballast.prompt_label_history where $1::text is null or prompt_name = $1 order by id desc limit $2`, [name, limit]);

/** ballast.prompt_arms: the label's traffic per version and arm since a time (default: the last 7 days). */
export const promptArms = async (c: Queryable, name: string, label: string, since: Date | null = null): Promise<PromptArmRow[]> =>
  (await rows<Record<string, unknown>>(c,
    `select prompt_name as "promptName", label, version, arm, jobs, attempts, first_pass_rate as "firstPassRate",
            fallback_rate as "fallbackRate", review_rate as "reviewRate", rejection_rate as "rejectionRate",
            degraded_rate as "degradedRate", mean_score as "meanScore", calls, cost_usd as "costUsd",
            cost_per_success as "costPerSuccess", mean_latency_ms as "meanLatencyMs", p95_latency_ms as "p95LatencyMs"
       from ballast.prompt_arms($1, $2, $3)`, [name, label, since])).map(numbers) as unknown as PromptArmRow[];

/** One arm's side of ballast.compare_prompt_arms (base: the stable arm; candidate: the canary arm). */
export interface PromptArmSide {
  /** The versions the arm's jobs got (several when the label or canary moved in the window). */
  versions: number[];
  jobs: number;
  /** Attempts of the arm's model steps with a contract outcome: the sample size of the rates. */
  attempts: number;
  /** Calls with a quality score: the sample of the mean score. */
  scoredCalls: number;
  firstPassRate: number | null;
  fallbackRate: number | null;
  reviewRate: number | null;
  rejectionRate: number | null;
  meanScore: number | null;
  costPerSuccess: number | null;
  latencyP50Ms: number | null;
  latencyP95Ms: number | null;
}

/** The row of ballast.compare_prompt_arms: the canary arm against the stable arm, deltas candidate minus base. */
export interface PromptArmsComparison {
  promptName: string;
  label: string;
  since: Date;
  until: Date;
  base: PromptArmSide;
  candidate: PromptArmSide;
  firstPassDelta: number | null;
  /** Its 95 % interval (Newcombe). */
  firstPassDeltaCiLow: number | null;
  firstPassDeltaCiHigh: number | null;
  fallbackDelta: number | null;
  reviewDelta: number | null;
  rejectionDelta: number | null;
  scoreDelta: number | null;
  /** Its 95 % interval (deterministic bootstrap of the two samples). */
  scoreDeltaCiLow: number | null;
  scoreDeltaCiHigh: number | null;
  costPerSuccessDelta: number | null;
  latencyP50DeltaMs: number | null;
  latencyP95DeltaMs: number | null;
  /** Both arms have at least minSamples attempts; without it `regressed` is false. */
  enoughData: boolean;
  regressed: boolean;
}

export interface ComparePromptArmsOptions {
  since?: Date | null;
  until?: Date | null;
  /** The drop in score or first-pass rate allowed before a regression (0 to 1, default 0). */
  threshold?: number;
  /** The attempts each arm needs for a verdict (default 20). */
  minSamples?: number;
}

const SIDE_COLUMNS = ['versions', 'jobs', 'attempts', 'scored_calls', 'first_pass_rate', 'fallback_rate', 'review_rate',
  'rejection_rate', 'mean_score', 'cost_per_success', 'latency_p50_ms', 'latency_p95_ms'] as const;
const camel = (s: string) => s.replace(/_([a-z0-9])/g, (_, ch: string) => ch.toUpperCase());

/** ballast.compare_prompt_arms: the label's canary arm against its stable arm, with intervals and the verdict. */
export async function comparePromptArms(c: Queryable, name: string, label: string, o: ComparePromptArmsOptions = {}): Promise<PromptArmsComparison> {
  const [r] = (await rows<Record<string, unknown>>(c,
    `select * from ballast.compare_prompt_arms($1, $2, $3, $4, $5::numeric, $6::int)`,
    [name, label, o.since ?? null, o.until ?? null, o.threshold ?? 0, o.minSamples ?? 20])).map(numbers);
  const side = (prefix: 'base' | 'candidate') =>
    Object.fromEntries(SIDE_COLUMNS.map((col) => [camel(col), r![`${prefix}_${col}`]])) as unknown as PromptArmSide;
  const rest = Object.fromEntries(Object.entries(r!).filter(([k]) => !/^(base|candidate)_/.test(k)).map(([k, v]) => [camel(k), v]));
  return { ...rest, base: side('base'), candidate: side('candidate') } as PromptArmsComparison;
}

/** bigint and numeric columns arrive as text: numbers here (counts and rates are far below 2^53). */
function numbers(r: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(r)) out[k] = typeof v === 'string' && !['promptName', 'label', 'arm', 'prompt_name'].includes(k) ? Number(v) : v;
  return out;
}
