// ballast used from another project, as a user does it: `npm pack` this checkout (prepack builds dist/), install the
// tarball into a fresh project of its own, import { pipeline, startWorker, connect } from 'ballast' in plain
// JavaScript, migrate an empty database from the installed package's migrations/, run a one-step pipeline to
// completion, run the installed `ballast` command, and type-check a TypeScript file against the shipped
// declarations. The install uses the npm cache first (--prefer-offline); the registry is asked only for what the
// cache lacks. Skipped only when npm itself cannot run.
import t, { type Test } from 'tap';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { databaseUrl, repoRoot } from './helpers.ts';

t.setTimeout(300_000); // normally 40-90 s, nearly all of it npm install; the margin is for a loaded machine

interface Run { code: number; stdout: string; stderr: string; ms: number }

/** The environment without npm's per-run settings: `npm test` exports npm_config_local_prefix (this checkout) and
 * more, and an npm started with them would install into the checkout instead of the scratch project. */
function cleanEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!/^npm_/i.test(k) && k !== 'INIT_CWD') env[k] = v;
  return env;
}

function run(file: string, args: string[], cwd: string, timeoutMs = 240_000, env: NodeJS.ProcessEnv = {}): Promise<Run> {
  const started = performance.now();
  return new Promise((resolve) => {
    execFile(file, args, { cwd, env: { ...cleanEnv(), ...env }, timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
      resolve({ code, stdout, stderr: stderr || (err && code !== 0 ? err.message : ''), ms: Math.round(performance.now() - started) });
    });
  });
}

// npm's own CLI under this Node when `npm test` started us (npm_execpath), else the npm on the PATH.
const npmCli = process.env.npm_execpath?.endsWith('.js') ? process.env.npm_execpath : undefined;
const npm = (args: string[], cwd: string) => (npmCli ? run(process.execPath, [npmCli, ...args], cwd) : run('npm', args, cwd));
const tail = (r: Run) => `exit ${r.code}\n${(r.stderr || r.stdout).slice(-3000)}`;

const version = await npm(['--version'], repoRoot);
const skip = version.code === 0 ? false : `npm cannot run here, so the package cannot be packed and installed: ${tail(version)}`;
t.test(`ballast used from another project (npm ${version.stdout.trim()})`, { skip }, usedFromAnotherProject);

async function admin(sql: string): Promise<void> {
  const server = process.env.BALLAST_TEST_SERVER_URL;
  if (!server) throw new Error('BALLAST_TEST_SERVER_URL is not set: run the tests with `npm test`');
  const client = new pg.Client({ connectionString: server });
  await client.connect();
  try {
    await client.query(sql);
  } finally {
    await client.end();
  }
}

async function usedFromAnotherProject(t: Test): Promise<void> {
  const tmp = mkdtempSync(join(tmpdir(), 'ballast-package-'));
  t.teardown(() => rmSync(tmp, { recursive: true, force: true }));

  // 1. The tarball: what `npm pack` ships (prepack runs `npm run build`).
  const pack = await npm(['pack', '--json', '--pack-destination', tmp], repoRoot);
  t.equal(pack.code, 0, `npm pack (${pack.ms} ms)`, { diagnostic: pack.code !== 0, output: tail(pack) });
  if (pack.code !== 0) return;
  const packed = JSON.parse(pack.stdout.slice(pack.stdout.indexOf('['))) as { filename: string; files: { path: string }[] }[];
  const files = packed[0]!.files.map((f) => f.path);
  const migrations = readdirSync(join(repoRoot, 'migrations')).filter((f) => f.endsWith('.sql'));
  for (const f of ['dist/index.js', 'dist/index.d.ts', 'dist/cli.js', 'dist/worker/watchdog-thread.mjs', 'sql/stuck.sql', 'package.json']) {
    t.ok(files.includes(f), `the package holds ${f}`);
  }
  t.same(files.filter((f) => f.startsWith('migrations/')).sort(), migrations.map((f) => `migrations/${f}`).sort(), 'every migration is shipped');
  t.same(files.filter((f) => /^(src|test|tasks|bench)\//.test(f) || f.endsWith('.ts') && !f.endsWith('.d.ts')), [],
    'no TypeScript source, tests, tasks or benchmarks');

  // 2. A fresh project that installs it.
  const app = join(tmp, 'app');
  mkdirSync(app);
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'ballast-consumer', version: '1.0.0', private: true, type: 'module' }, null, 2));
  const install = await npm(['install', join(tmp, packed[0]!.filename), '--prefer-offline', '--no-audit', '--no-fund'], app);
  t.equal(install.code, 0, `npm install <tarball> (${install.ms} ms)`, { diagnostic: install.code !== 0, output: tail(install) });
  if (install.code !== 0) return;
  t.comment(`npm pack ${pack.ms} ms, npm install ${install.ms} ms`);

  // 3. An empty database: the installed package's migrations must be found next to its code, not in the cwd.
  const name = `ballast_t_${randomBytes(6).toString('hex')}`;
  await admin(`create database ${name}`);
  t.teardown(() => admin(`drop database if exists ${name} with (force)`));
  const url = databaseUrl(name);

  writeFileSync(join(app, 'main.mjs'), `
import { pipeline, startWorker, connect, migrate } from 'ballast';
import { z } from 'zod';

const url = process.env.DATABASE_URL;
const { applied } = await migrate(url);
const hello = pipeline({ name: 'consumer.hello', version: 1, input: z.object({ name: z.string() }) })
  .step('greet', { output: z.object({ text: z.string() }) }, async ({ input }) => ({ text: 'hello ' + input.name }));
const worker = await startWorker({ connectionString: url, pipelines: [hello], pollIntervalMs: 200 });
const db = await connect(url);
const { jobId } = await db.submitJob({ pipeline: 'consumer.hello', input: { name: 'package' } });
let job;
for (const until = Date.now() + 60_000; Date.now() < until; await new Promise((r) => setTimeout(r, 100))) {
  job = await db.getJob(jobId);
  if (['completed', 'failed', 'cancelled'].includes(job.status)) break;
}
await db.close();
await worker.stop();
console.log(JSON.stringify({ applied: applied.length, status: job.status, result: job.result }));
`);
  const main = await run(process.execPath, ['main.mjs'], app, 120_000, { DATABASE_URL: url });
  t.equal(main.code, 0, `the script ran (${main.ms} ms)`, { diagnostic: main.code !== 0, output: tail(main) });
  // The worker logs JSON lines to stdout too (pino; the last ones may come after the script's own line).
  const outcome = JSON.parse(main.stdout.split('\n').find((l) => l.startsWith('{"applied"')) ?? '{}') as { applied?: number; status?: string; result?: unknown };
  t.same(outcome, { applied: migrations.length, status: 'completed', result: { text: 'hello package' } },
    'migrate() applied every migration from node_modules/ballast, and the job completed');

  // 4. Importing ballast does not load the AI SDK (a pipeline without model steps never needs it).
  writeFileSync(join(app, 'loads.mjs'), `
import { registerHooks } from 'node:module';
const loaded = [];
registerHooks({ load(url, context, next) { loaded.push(url); return next(url, context); } });
await import('ballast');
console.log(JSON.stringify(loaded.filter((u) => /\\/node_modules\\/(ai|@ai-sdk\\/(openai|anthropic|openai-compatible|gateway))\\//.test(u))));
`);
  const loads = await run(process.execPath, ['loads.mjs'], app, 60_000);
  t.equal(loads.code, 0, 'imported', { diagnostic: loads.code !== 0, output: tail(loads) });
  t.same(JSON.parse(loads.stdout.trim() || 'null'), [], "import 'ballast' loads no AI SDK module");

  // 5. The installed command (dist/cli.js, with the shebang's heap flags) runs.
  const help = await run(join(app, 'node_modules', '.bin', 'ballast'), ['help'], app, 60_000);
  t.match(help.stdout, /^ballast: /, 'node_modules/.bin/ballast help', { diagnostic: !/^ballast: /.test(help.stdout), output: tail(help) });

  // 6. TypeScript against the shipped declarations: a correct file passes, a wrong one fails with a type error
  //    (so the types are ballast's, not `any`).
  writeFileSync(join(app, 'tsconfig.json'), JSON.stringify({
    compilerOptions: { target: 'es2023', module: 'nodenext', moduleResolution: 'nodenext', strict: true, noEmit: true, skipLibCheck: true, types: [] },
    files: ['check.ts'],
  }));
  writeFileSync(join(app, 'check.ts'), `
import { z } from 'zod';
import { pipeline, startWorker, connect, type BallastDb, type Job, InvalidInputError } from 'ballast';

export const hello = pipeline({ name: 'consumer.hello', version: 1, input: z.object({ name: z.string() }) })
  .step('greet', { output: z.object({ text: z.string() }) }, async ({ input }) => ({ text: 'hello ' + input.name }));

export async function once(url: string): Promise<Job | undefined> {
  const worker = await startWorker({ connectionString: url, pipelines: [hello] });
  const db: BallastDb = await connect(url);
  try {
    const { jobId } = await db.submitJob({ pipeline: hello.name, input: { name: 'x' } });
    return await db.getJob(jobId);
  } catch (err) {
    if (err instanceof InvalidInputError) console.error(err.issues.map((i) => i.path));
    throw err;
  } finally {
    await db.close();
    await worker.stop();
  }
}
`);
  const tsc = join(repoRoot, 'node_modules', 'typescript', 'bin', 'tsc');
  const good = await run(process.execPath, [tsc, '-p', 'tsconfig.json'], app, 120_000);
  t.equal(good.code, 0, `check.ts type-checks against dist/*.d.ts (${good.ms} ms)`, { diagnostic: good.code !== 0, output: tail(good) });
  writeFileSync(join(app, 'check.ts'), `
import { pipeline, connect } from 'ballast';
export const n: number = (await connect('postgres://x')).pool.totalCount + pipeline;
`);
  const bad = await run(process.execPath, [tsc, '-p', 'tsconfig.json'], app, 120_000);
  t.match(bad.stdout, /check\.ts\(3,\d+\): error TS2365/, 'a wrong use of the API is a type error');
}
