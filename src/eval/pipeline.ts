// The built-in eval pipeline, `ballast.eval` version 1 (docs/evals.md): an eval run is a job of it. Migration 0044
// registers the same definition, so a run can be started from SQL before any worker with evals is up; a worker
// started with `evals` registers it again (unchanged) and runs it against the model steps of its own pipelines.
import { z } from 'zod';
import { Pipeline } from '../pipeline/pipeline.ts';
import type { EvalStep, EvalTargets, ModelStep, ScorerFn, StepBase } from '../pipeline/definition.ts';

export const EVAL_PIPELINE = 'ballast.eval';

/** The eval job's input: the run's parameters (ballast.start_eval_run writes them; a schedule gives them). */
export const EvalRunInput = z.object({
  dataset: z.string(),
  dataset_version: z.number().int().optional(),
  pipeline: z.string(),
  pipeline_version: z.number().int().optional(),
  step: z.string(),
  prompt_version: z.number().int().optional(),
  model: z.string().optional(),
  scorers: z.array(z.record(z.string(), z.unknown())).optional(),
  threshold: z.number().optional(),
  label: z.string().optional(),
}).strict();

const CaseVerdict = z.object({ case_id: z.string(), score: z.number(), passed: z.boolean() }).strict();
const Summary = z.record(z.string(), z.unknown());

export interface EvalOptions {
  /** TypeScript scorers by name, for scorers of kind `function` ({ kind: 'function', name }). */
  scorers?: Record<string, ScorerFn>;
}

function base(name: string, after: string[], output: z.ZodType): StepBase {
  return {
    name, after, output, retry: { maxAttempts: 3, baseDelayMs: 1000, maxDelayMs: 60_000 }, timeoutMs: null,
    concurrency: null, isPermanent: undefined, keys: null, weight: null,
  };
}

/** The eval pipeline of a worker that runs `pipelines`: their model steps are what its runs can evaluate. */
export function evalPipeline(pipelines: readonly Pipeline<any, any>[], options: EvalOptions = {}): Pipeline<z.infer<typeof EvalRunInput>> {
  const byRef = new Map(pipelines.map((p) => [p.ref, p]));
  const targets: EvalTargets = {
    modelStep(pipeline, version, step) {
      const s = byRef.get(`${pipeline}@${version}`)?.stepNamed(step);
      return s?.kind === 'model' ? (s as ModelStep) : undefined;
    },
    scorers: new Map(Object.entries(options.scorers ?? {})),
  };
  const steps: EvalStep[] = [
    { ...base('cases', [], CaseVerdict), kind: 'eval', role: 'cases', targets },
    { ...base('summary', ['cases'], Summary), kind: 'eval', role: 'summary', targets },
  ];
  return new Pipeline(EVAL_PIPELINE, 1, EvalRunInput, steps);
}
