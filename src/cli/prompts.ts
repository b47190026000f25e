// `ballast prompts list|show|create|label|canary|history|arms|compare`: prompt versions, labels and canaries from
// the command line (migrations 0041 and 0046, docs/prompts.md). `compare` exits 8 when the canary's candidate
// regressed on the stable arm (ballast.compare_prompt_arms's verdict), like `eval compare`. Each is one statement of src/db/prompts.ts on the pool; the
// arguments are checked here first, so that a mistake is one line naming the argument and what to pass (exit 2), and
// Postgres's refusals (BA002 naming the field) are translated like every other command's. Returns the exit code.
import type { BallastDb } from '../db/api.ts';
import * as prompts from '../db/prompts.ts';
import { translateError } from '../errors.ts';
import { readFileSync } from 'node:fs';
import { actor, intOption, parseCommandArgs } from './args.ts';
import { UsageError } from './errors.ts';
import { REGRESSED_EXIT_CODE } from './eval.ts';
import { withNumbers } from './json.ts';
import { table } from './table.ts';

const USAGE = 'prompts list, show <name>, create <name>, label <name> <label> <version>, canary <name> <label> <version> <share>|off, history [<name>], arms <name> [<label>] or compare <name> [<label>] [--since T] [--until T] [--threshold X] [--min-samples N]';

const print = (json: boolean | undefined, value: unknown, line: string) => console.log(json ? JSON.stringify(withNumbers(value)) : line);

async function sql<T>(run: () => Promise<T>): Promise<T> {
  try {
    return await run();
  } catch (err) {
    throw translateError(err);
  }
}

function versionArg(what: string, text: string | undefined, example: string): number {
  if (text === undefined || !/^[1-9][0-9]{0,8}$/.test(text)) {
    throw new UsageError(`${what} ${text === undefined ? 'is missing' : `${text} is not a version number`}`, `pass a version, e.g. \`ballast ${example}\``);
  }
  return Number(text);
}

/** A share of traffic: 0.1 or 10%. */
function shareArg(text: string | undefined, example: string): number {
  const m = text === undefined ? null : /^\s*(\d+(?:\.\d+)?|\.\d+)\s*(%?)\s*$/.exec(text);
  const n = m ? Number(m[1]) / (m[2] ? 100 : 1) : NaN;
  if (!(n > 0 && n <= 1)) {
    throw new UsageError(`<share> ${text ?? '(missing)'} is not more than 0 and at most 1`, `pass a fraction or a percentage, e.g. \`ballast ${example}\` (or \`off\` to end the canary)`);
  }
  return n;
}

function reasonOf(reason: string | undefined, example: string): string {
  if (!reason || reason.trim() === '') throw new UsageError('--reason is required: say why (kept in the label history)', `e.g. \`ballast ${example} --reason 'eval run 42 passed'\``);
  return reason;
}

/** A template given as text, or as @file (its whole text). */
function templateText(flag: string, value: string): string {
  if (!value.startsWith('@')) return value;
  try {
    return readFileSync(value.slice(1), 'utf8');
  } catch (err) {
    throw new UsageError(`${flag} ${value}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (err as Error).message}`, 'pass the template as text, or @ and the path of a text file');
  }
}

function need(value: string | undefined, what: string, example: string): string {
  if (!value) throw new UsageError(`prompts needs ${what}`, `e.g. \`ballast ${example}\``);
  return value;
}

/** `ballast prompts ...` */
export async function promptsCommand(db: BallastDb, args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  const { values, positionals: p } = parseCommandArgs(rest, {
    reason: { type: 'string' }, system: { type: 'string' }, user: { type: 'string' }, since: { type: 'string' },
    limit: { type: 'string' }, json: { type: 'boolean' }, until: { type: 'string' }, threshold: { type: 'string' },
    'min-samples': { type: 'string' },
  });
  const c = db.pool;
  if (sub === 'list') {
    const [names, labels] = await sql(() => Promise.all([prompts.listPrompts(c), prompts.listPromptLabels(c)]));
    if (values.json) return print(true, { prompts: names, labels }, ''), 0;
    console.log(table(names.map((n) => ({
      prompt: n.name, versions: n.versions, latest: n.latest,
      labels: labels.filter((l) => l.promptName === n.name)
        .map((l) => `${l.label}=${l.version}${l.canaryVersion === null ? '' : ` (canary ${l.canaryVersion} at ${Math.round(l.canaryShare! * 1000) / 10} %)`}`).join(', '),
    }))));
    return 0;
  }
  if (sub === 'show') {
    const name = need(p[0], 'a prompt name', 'prompts show review.rate');
    const [versions, labels] = await sql(() => Promise.all([prompts.listPromptVersions(c, name), prompts.listPromptLabels(c, name)]));
    if (versions.length === 0) throw new UsageError(`prompt ${name} has no versions`, 'create one with `ballast prompts create <name> --user <template>`, or run a step that defines it in code');
    if (values.json) return print(true, { versions, labels }, ''), 0;
    console.log(table(labels.map((l) => ({ label: l.label, version: l.version, canary: l.canaryVersion, share: l.canaryShare, 'updated by': l.updatedBy, 'updated at': l.updatedAt }))));
    for (const v of versions) {
      console.log(`\n${v.name}@${v.version}  ${v.contentHash.slice(0, 12)}  ${v.registeredAt.toISOString()}`);
      if (v.template.system !== null) console.log(`  system: ${v.template.system}`);
      console.log(`  user:   ${v.template.user}`);
    }
    return 0;
  }
  if (sub === 'create') {
    const name = need(p[0], 'a prompt name', "prompts create review.rate --user 'Rate: {{input.text}}'");
    if (values.user === undefined) throw new UsageError('prompts create needs --user <template|@file>', "e.g. `ballast prompts create review.rate --system 'You rate reviews.' --user 'Rate: {{input.text}}'`");
    const r = await sql(() => prompts.createPromptVersion(c, name, values.system === undefined ? null : templateText('--system', values.system!),
      templateText('--user', values.user!), actor()));
    print(values.json, r, r.created ? `created ${name}@${r.version} (${r.contentHash.slice(0, 12)})` : `${name}@${r.version} already has these words; nothing created`);
    return 0;
  }
  if (sub === 'label') {
    const example = 'prompts label review.rate production 3';
    const name = need(p[0], 'a prompt name, a label and a version', example);
    const label = need(p[1], 'a label and a version', example);
    const version = versionArg('<version>', p[2], example);
    const r = await sql(() => prompts.setPromptLabel(c, name, label, version, reasonOf(values.reason, example), actor()));
    print(values.json, r, `${name}@${label} -> version ${r.version}${r.canaryVersion === null ? '' : ` (canary ${r.canaryVersion} at ${r.canaryShare})`}`);
    return 0;
  }
  if (sub === 'canary') {
    const example = 'prompts canary review.rate production 4 10%';
    const name = need(p[0], 'a prompt name, a label, a candidate version and a share', example);
    const label = need(p[1], 'a label, a candidate version and a share', example);
    if (p[2] === 'off') {
      const cleared = await sql(() => prompts.clearPromptCanary(c, name, label, reasonOf(values.reason, `prompts canary ${name} ${label} off`), actor()));
      print(values.json, { cleared }, cleared ? `canary of ${name}@${label} ended` : `${name}@${label} had no canary; nothing changed`);
      return 0;
    }
    const version = versionArg('<candidate version>', p[2], example);
    const share = shareArg(p[3], example);
    const r = await sql(() => prompts.setPromptCanary(c, name, label, version, share, reasonOf(values.reason, example), actor()));
    print(values.json, r, `${name}@${label}: version ${r.version}, canary ${r.canaryVersion} on ${Math.round(r.canaryShare! * 1000) / 10} % of new jobs`);
    return 0;
  }
  if (sub === 'history') {
    const rows = await sql(() => prompts.promptLabelHistory(c, p[0] ?? null, intOption('--limit', values.limit, 100, 10_000)));
    if (values.json) return print(true, rows, ''), 0;
    console.log(table(rows.map((r) => ({ at: r.at, prompt: r.promptName, label: r.label, action: r.action, from: r.fromVersion, to: r.toVersion, canary: r.canaryVersion, share: r.canaryShare, by: r.actor, reason: r.reason }))));
    return 0;
  }
  if (sub === 'arms') {
    const name = need(p[0], 'a prompt name', 'prompts arms review.rate production');
    const rows = await sql(() => prompts.promptArms(c, name, p[1] ?? 'production', timeOption('--since', values.since, '7 days ago')));
    if (values.json) return print(true, rows, ''), 0;
    console.log(table(rows.map((r) => ({ version: r.version, arm: r.arm, jobs: r.jobs, attempts: r.attempts, 'first pass': r.firstPassRate, fallback: r.fallbackRate, review: r.reviewRate, rejected: r.rejectionRate, score: r.meanScore, 'cost/success': r.costPerSuccess, 'latency ms': r.meanLatencyMs, 'p95 ms': r.p95LatencyMs }))));
    return 0;
  }
  if (sub === 'compare') {
    const name = need(p[0], 'a prompt name', 'prompts compare review.rate production --since 2026-12-01T00:00:00Z');
    const r = await sql(() => prompts.comparePromptArms(c, name, p[1] ?? 'production', {
      since: timeOption('--since', values.since, '7 days ago'), until: timeOption('--until', values.until, 'now'),
      threshold: thresholdOption(values.threshold), minSamples: intOption('--min-samples', values['min-samples'], 20),
    }));
    if (values.json) print(true, r, '');
    else printComparison(r);
    return r.regressed ? REGRESSED_EXIT_CODE : 0;
  }
  throw new UsageError(`unknown prompts command "${sub ?? ''}"`, `use ${USAGE}`);
}

function timeOption(flag: string, text: string | undefined, fallback: string): Date | null {
  if (text === undefined) return null;
  const t = new Date(text);
  if (Number.isNaN(t.getTime())) throw new UsageError(`${flag} ${text} is not a time`, `pass an ISO 8601 time, e.g. ${flag} 2026-12-01T00:00:00Z (default: ${fallback})`);
  return t;
}

function thresholdOption(text: string | undefined): number {
  if (text === undefined) return 0;
  if (!/^\s*(\d+(\.\d*)?|\.\d+)\s*$/.test(text) || Number(text) > 1) {
    throw new UsageError(`--threshold ${text} is not a number from 0 to 1`, 'the drop in score or first-pass rate allowed before a regression, e.g. --threshold 0.05');
  }
  return Number(text);
}

/** Both arms side by side, a line per metric, then the verdict. */
function printComparison(r: prompts.PromptArmsComparison): void {
  const { base: b, candidate: k } = r;
  const ci = (lo: number | null, hi: number | null) => (lo === null ? null : `${lo} to ${hi}`);
  const line = (metric: string, base: unknown, candidate: unknown, delta: unknown = null, interval: string | null = null) =>
    ({ metric, 'base (stable)': base, 'candidate (canary)': candidate, delta, '95 % interval': interval });
  console.log(`${r.promptName}@${r.label}: jobs pinned from ${r.since.toISOString()} to ${r.until.toISOString()}`);
  console.log(table([
    line('versions', b.versions.join(', '), k.versions.join(', ')),
    line('jobs', b.jobs, k.jobs),
    line('attempts', b.attempts, k.attempts),
    line('first pass rate', b.firstPassRate, k.firstPassRate, r.firstPassDelta, ci(r.firstPassDeltaCiLow, r.firstPassDeltaCiHigh)),
    line('fallback rate', b.fallbackRate, k.fallbackRate, r.fallbackDelta),
    line('review rate', b.reviewRate, k.reviewRate, r.reviewDelta),
    line('rejection rate', b.rejectionRate, k.rejectionRate, r.rejectionDelta),
    line('scored calls', b.scoredCalls, k.scoredCalls),
    line('mean score', b.meanScore, k.meanScore, r.scoreDelta, ci(r.scoreDeltaCiLow, r.scoreDeltaCiHigh)),
    line('cost per success usd', b.costPerSuccess, k.costPerSuccess, r.costPerSuccessDelta),
    line('latency p50 ms', b.latencyP50Ms, k.latencyP50Ms, r.latencyP50DeltaMs),
    line('latency p95 ms', b.latencyP95Ms, k.latencyP95Ms, r.latencyP95DeltaMs),
  ]));
  if (!r.enoughData) console.log('not enough data for a verdict: each arm needs --min-samples attempts (exit 0)');
  else if (r.regressed) console.log('REGRESSED: the candidate is worse than the stable arm beyond the threshold (95 % interval)');
  else console.log('ok: the candidate does not regress on the stable arm');
}
