// The worker's V8 heap flags (src/node-flags.ts) live only in src/cli.ts's shebang. These checks keep every
// production entry point going through that line, and the flags valid for the Node that runs the project.
import t from 'tap';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { WORKER_NODE_FLAGS, shebangNodeFlags } from '../src/node-flags.ts';

const run = promisify(execFile);
const root = fileURLToPath(new URL('..', import.meta.url));
const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as {
  scripts: Record<string, string>; bin: Record<string, string>;
};

t.test('the shebang of src/cli.ts carries heap flags', async (t) => {
  t.ok(WORKER_NODE_FLAGS.some((f) => f.startsWith('--max-semi-space-size=')), String(WORKER_NODE_FLAGS));
  t.notOk(WORKER_NODE_FLAGS.some((f) => f.startsWith('--max-old-space-size')), 'no hard cap on the old generation');
  t.same(shebangNodeFlags('#!/usr/bin/env -S node --a=1 --b\n// x'), ['--a=1', '--b']);
  t.same(shebangNodeFlags('#!/usr/bin/env node\n'), []);
});

t.test('npm start, npm run worker and the bin (src/cli.ts built) run through its shebang', async (t) => {
  for (const name of ['start', 'worker', 'ballast', 'migrate']) {
    t.match(pkg.scripts[name], /^src\/cli\.ts\b/, `scripts.${name} executes src/cli.ts (not \`node src/cli.ts\`, which drops the flags)`);
  }
  // The installed command is dist/cli.js, which tsc emits with src/cli.ts's shebang (test/package.test.ts runs it).
  t.equal(pkg.bin.ballast, 'dist/cli.js');
});

t.test('this Node accepts the flags, and src/cli.ts runs as an executable', async (t) => {
  const check = await run(process.execPath, [...WORKER_NODE_FLAGS, '-e', 'process.stdout.write("ok")']);
  t.equal(check.stdout, 'ok', 'node starts with the flags');
  // The same Node first on the PATH, as `npm run` does with node_modules/.bin.
  const env = { ...process.env, PATH: `${dirname(process.execPath)}:${process.env.PATH ?? ''}` };
  const help = await run(`${root}src/cli.ts`, ['help'], { env, cwd: root });
  t.match(help.stdout, /^ballast: /);
});
