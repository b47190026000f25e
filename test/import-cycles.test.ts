// No module of src/ imports itself through others, type imports included: a cycle means two modules that cannot be
// understood (or loaded, for value imports) one without the other. Dynamic import() is left out: it loads later, on
// demand (the CLI's lazy commands), and cannot form a cycle at load time.
import t from 'tap';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const src = fileURLToPath(new URL('../src', import.meta.url));

function modules(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? modules(path) : /\.(ts|mjs)$/.test(name) ? [resolve(path)] : [];
  });
}

/** The relative modules `file` imports or re-exports statically (value or type). */
export function importsOf(file: string, text: string): string[] {
  const specifiers = [
    ...text.matchAll(/^\s*(?:import|export)\s[^;]*?\sfrom\s+['"](\.{1,2}\/[^'"]+)['"]/gm),
    ...text.matchAll(/^\s*import\s+['"](\.{1,2}\/[^'"]+)['"]/gm),
  ].map((m) => m[1]!);
  return specifiers.map((s) => resolve(dirname(file), s));
}

/** Every cycle found by a depth-first walk, each as the list of modules from where it closes. */
export function cycles(graph: Map<string, string[]>): string[][] {
  const found: string[][] = [];
  const done = new Set<string>();
  const path: string[] = [];
  const onPath = new Set<string>();
  const visit = (node: string) => {
    path.push(node);
    onPath.add(node);
    for (const next of graph.get(node) ?? []) {
      if (onPath.has(next)) found.push([...path.slice(path.indexOf(next)), next]);
      else if (!done.has(next)) visit(next);
    }
    path.pop();
    onPath.delete(node);
    done.add(node);
  };
  for (const node of graph.keys()) if (!done.has(node)) visit(node);
  return found;
}

t.test('the cycle finder finds cycles (a check of the check)', async (t) => {
  const g = new Map([['a', ['b']], ['b', ['c']], ['c', ['a']], ['d', ['a']]]);
  t.same(cycles(g), [['a', 'b', 'c', 'a']]);
  t.same(importsOf('/x/a.ts', "import type {\n  A,\n  B,\n} from './b.ts';\nexport { C } from '../c.ts';\nimport './d.ts';\nconst e = await import('./e.ts');"),
    ['/x/b.ts', '/c.ts', '/x/d.ts'], 'multi-line imports, re-exports and side-effect imports count; import() does not');
});

t.test('src/ has no import cycle', async (t) => {
  const files = modules(src);
  t.ok(files.length > 40, `${files.length} modules read`);
  const graph = new Map<string, string[]>();
  for (const file of files) graph.set(file, importsOf(file, readFileSync(file, 'utf8')).filter((d) => files.includes(d)));
  const found = cycles(graph).map((c) => c.map((f) => relative(src, f)).join(' -> '));
  t.same(found, [], 'every module can be read without the ones that import it');
});
