// Finds the pipelines a worker serves: every .ts/.js file in the tasks directory (default ./tasks) is imported and
// each exported Pipeline is collected (default and named exports; the same object exported twice counts once).
import { readdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { isPipeline, type Pipeline } from './pipeline.ts';

export async function loadPipelines(dir: string): Promise<Pipeline<any, any>[]> {
  const abs = resolve(dir);
  let files: string[];
  try {
    files = readdirSync(abs).filter((f) => /\.(ts|js|mjs)$/.test(f) && !f.endsWith('.d.ts')).sort();
  } catch (err) {
    throw new Error(`cannot read the tasks directory ${abs}: ${(err as Error).message}. Set BALLAST_TASKS_DIR to the folder of your pipeline files.`, { cause: err });
  }
  const found = new Set<Pipeline<any, any>>();
  for (const file of files) {
    const mod = (await import(pathToFileURL(join(abs, file)).href)) as Record<string, unknown>;
    for (const value of Object.values(mod)) if (isPipeline(value)) found.add(value);
  }
  const refs = new Set<string>();
  for (const p of found) {
    if (refs.has(p.ref)) throw new Error(`two different pipelines in ${abs} are both ${p.ref}: give one a new name or version`);
    refs.add(p.ref);
  }
  return [...found];
}
