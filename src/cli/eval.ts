// `ballast eval run|compare|cases|promote` (docs/evals.md): eval runs from the command line, each one call of its
// SQL function through src/db/evals.ts. `eval compare` is what a CI job gates on: it prints the cases side by side
// and exits 8 when the candidate regressed (ballast.eval_run_comparison's verdict), 0 otherwise.
import type { BallastDb } from '../db/api.ts';
import * as evals from '../db/evals.ts';
import { translateError } from '../errors.ts';
import { actor, parseCommandArgs, readInput } from './args.ts';
import { CliError, UsageError } from './errors.ts';
import { withNumbers } from './json.ts';
import { table } from './table.ts';

/** The exit code of `eval compare` when the candidate regressed beyond the threshold. */
export const REGRESSED_EXIT_CODE = 8;

const EVAL_USAGE = 'eval run --dataset D --pipeline P --step S, eval compare BASE CANDIDATE, eval cases D, or eval promote STEP --dataset D';

function intFlag(flag: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  if (!/^\d+$/.test(value) || Number(value) < 1) throw new UsageError(`${flag} ${value} is not a positive integer`, `e.g. ${flag} 2`);
  return Number(value);
}

function idArg(value: string | undefined, what: string, example: string): string {
  if (!value || !/^\d+$/.test(value)) throw new UsageError(`eval ${what} needs ${example.includes('STEP') ? 'a step id' : 'run ids'} (numbers)`, `e.g. \`ballast eval ${example}\``);
  return value;
}

function thresholdOf(value: string | undefined): number {
  if (value === undefined) return 0;
  const n = Number(value);
  if (!/^\s*(\d+(\.\d*)?|\.\d+)\s*$/.test(value) || n > 1) throw new UsageError(`--threshold ${value} is not a number from 0 to 1`, 'the score drop a case may have before it is a regression, e.g. --threshold 0.05');
  return n;
}

const print = (json: boolean | undefined, value: unknown, line: string) => console.log(json ? JSON.stringify(withNumbers(value)) : line);

/** `ballast eval <sub> ...`: returns the exit code. */
export async function evalCommand(db: BallastDb, args: string[]): Promise<number> {
  try {
    return await evalSubcommand(db, args);
  } catch (err) {
    throw translateError(err); // ballast's refusals (BA SQLSTATEs) are one line, exit 4
  }
}

async function evalSubcommand(db: BallastDb, args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  if (sub === 'run') return runCommand(db, rest);
  if (sub === 'compare') return compareCommand(db, rest);
  if (sub === 'cases') return casesCommand(db, rest);
  if (sub === 'promote') return promoteCommand(db, rest);
  throw new UsageError(`unknown eval command "${sub ?? ''}"`, `use ${EVAL_USAGE}`);
}

async function runCommand(db: BallastDb, args: string[]): Promise<number> {
  const { values } = parseCommandArgs(args, {
    dataset: { type: 'string' }, pipeline: { type: 'string' }, step: { type: 'string' }, 'prompt-version': { type: 'string' },
    model: { type: 'string' }, scorers: { type: 'string' }, threshold: { type: 'string' }, label: { type: 'string' },
    tenant: { type: 'string' }, wait: { type: 'boolean' }, json: { type: 'boolean' },
  });
  for (const flag of ['dataset', 'pipeline', 'step'] as const) {
    if (!values[flag]) throw new UsageError(`eval run needs --${flag}`, 'e.g. `ballast eval run --dataset support.triage --pipeline support --step classify --prompt-version 2`');
  }
  const scorers = values.scorers === undefined ? null : readInput(values.scorers, '--scorers') as evals.ScorerSpec[];
  const started = await evals.startEvalRun(db.pool, {
    dataset: values.dataset!, pipeline: values.pipeline!, step: values.step!, promptVersion: intFlag('--prompt-version', values['prompt-version']) ?? null,
    model: values.model ?? null, scorers, threshold: values.threshold === undefined ? null : thresholdOf(values.threshold),
    label: values.label ?? null, tenantId: values.tenant ?? null,
  }, actor());
  if (!values.wait) {
    print(values.json, started, `eval run ${started.runId} started (job ${started.jobId}); compare it with \`ballast eval compare <base> ${started.runId}\``);
    return 0;
  }
  await db.waitForJob(started.jobId);
  const run = await evals.getEvalRun(db.pool, started.runId);
  print(values.json, run, `eval run ${started.runId} ${run?.status}: mean score ${run?.meanScore ?? '-'}, pass rate ${run?.passRate ?? '-'}`);
  return run?.status === 'completed' ? 0 : 1;
}

async function compareCommand(db: BallastDb, args: string[]): Promise<number> {
  const { values, positionals } = parseCommandArgs(args, { threshold: { type: 'string' }, json: { type: 'boolean' }, all: { type: 'boolean' } });
  const base = idArg(positionals[0], 'compare', 'compare 12 13');
  const candidate = idArg(positionals[1], 'compare', 'compare 12 13');
  const threshold = thresholdOf(values.threshold);
  for (const id of [base, candidate]) {
    if (!(await evals.getEvalRun(db.pool, id))) throw new CliError(`eval run ${id} does not exist`, { code: 'not_found', exitCode: 3, hint: 'ballast.eval_runs lists the runs' });
  }
  const cases = await evals.compareEvalRuns(db.pool, base, candidate, threshold);
  const summary = await evals.evalRunComparison(db.pool, base, candidate, threshold);
  if (values.json) {
    console.log(JSON.stringify(withNumbers({ summary, cases })));
  } else {
    const shown = values.all ? cases : cases.filter((c) => c.change !== 'same');
    if (shown.length > 0) {
      console.log(table(shown.map((c) => ({
        case: c.caseKey, change: c.change, base: c.baseScore, candidate: c.candidateScore, delta: c.delta,
        'cost delta usd': c.costDeltaUsd, 'latency delta ms': c.latencyDeltaMs,
      }))));
    }
    const ci = summary.deltaCiLow === null ? '' : ` (95 % interval ${summary.deltaCiLow} to ${summary.deltaCiHigh})`;
    console.log(`${summary.pairedCases} cases: mean ${summary.baseMean ?? '-'} -> ${summary.candidateMean ?? '-'}, delta ${summary.meanDelta ?? '-'}${ci}; ` +
      `${summary.regressions} regressed, ${summary.improvements} improved, ${summary.unchanged} same, ${summary.newCases} new, ${summary.missingCases} missing`);
    console.log(summary.regressed ? `REGRESSED (threshold ${threshold}): candidate ${candidate} is worse than base ${base}` : `ok: candidate ${candidate} does not regress on base ${base} (threshold ${threshold})`);
  }
  return summary.regressed ? REGRESSED_EXIT_CODE : 0;
}

async function casesCommand(db: BallastDb, args: string[]): Promise<number> {
  const { values, positionals } = parseCommandArgs(args, { json: { type: 'boolean' } });
  if (!positionals[0]) throw new UsageError('eval cases needs a dataset', 'e.g. `ballast eval cases support.triage`');
  const rows = await evals.listEvalCases(db.pool, positionals[0]);
  if (values.json) console.log(JSON.stringify(withNumbers(rows)));
  else console.log(table(rows.map((r) => ({ id: r.id, key: r.caseKey, source: r.sourceKind, tags: r.tags.join(','), 'added in': r.addedInVersion, reference: r.reference }))));
  return 0;
}

async function promoteCommand(db: BallastDb, args: string[]): Promise<number> {
  const { values, positionals } = parseCommandArgs(args, { dataset: { type: 'string' }, key: { type: 'string' }, json: { type: 'boolean' } });
  const stepId = idArg(positionals[0], 'promote', 'promote STEP --dataset D');
  if (!values.dataset) throw new UsageError('eval promote needs --dataset', `e.g. \`ballast eval promote ${stepId} --dataset support.triage\``);
  const r = await evals.promoteToDataset(db.pool, stepId, values.dataset, { key: values.key ?? null, actor: actor() });
  print(values.json, r, `step ${stepId} is case ${r.caseKey} (${r.sourceKind}) of ${values.dataset}, version ${r.datasetVersion}`);
  return 0;
}
