// The V8 flags a ballast worker process runs with. Left to itself, V8 sizes the heap for the machine (on 24 GB: young
// generation up to 128 MB, old generation allowed to fill with garbage to several times its live size before it is
// collected), so a worker's RSS grows for minutes and ends near 250 MB although its live heap is ~20 MB. The flags
// bound what V8 keeps between collections, not what the process may use, so a step that needs a big heap still gets
// it (docs/benchmarks.md, "Worker memory"):
//   --max-semi-space-size=4      young generation at most 2 x 4 MB (default here 2 x 64 MB)
//   --heap-growing-percent=20    after a full collection, let the old generation grow by 20 % before the next one
//                                (default: a dynamic factor of up to 4x); no limit on its size
// Measured at concurrency 50 over 15,000 steps: peak RSS ~135 MB instead of ~265 MB, flat after the first 1,000 steps;
// worker CPU per step within the noise. The price: a process that keeps a large live heap collects it more often
// (building 2.4 GB of live objects took about 1.5-2x as long as with V8's defaults). Not allowed in NODE_OPTIONS.
//
// Their one home is the shebang of src/cli.ts: `npm start`, `npm run worker` and the installed `ballast` command all
// execute that file, and the benchmark's worker children (bench/children.ts) read them from here, so the benchmark
// measures exactly the deployed command. A process that embeds startWorker should start node with the same flags.
import { readFileSync } from 'node:fs';

/** The node flags on the `#!/usr/bin/env -S node <flags>` line of a script. */
export function shebangNodeFlags(source: string): string[] {
  const first = source.slice(0, source.indexOf('\n'));
  const words = first.replace(/^#!\s*/, '').split(/\s+/).filter(Boolean);
  const node = words.findIndex((w) => w === 'node' || w.endsWith('/node'));
  if (!first.startsWith('#!') || node < 0) throw new Error(`not a node shebang: ${first}`);
  return words.slice(node + 1);
}

/** The `ballast` command's file next to this module: src/cli.ts when run from source, dist/cli.js in the built
 * package (`npm run build`; type stripping does not run TypeScript inside node_modules). */
export const CLI_URL = new URL(import.meta.url.endsWith('.ts') ? './cli.ts' : './cli.js', import.meta.url);

/** The flags of the `ballast` command (src/cli.ts's shebang, which the build keeps). */
export const WORKER_NODE_FLAGS: readonly string[] = Object.freeze(shebangNodeFlags(readFileSync(CLI_URL, 'utf8')));
