// The GraphQL API from the command line: `start` serves it beside the worker and logs its URL, `serve` runs it
// alone, `token` mints development tokens (with BALLAST_JWT_SECRET, or a secret it keeps in .ballast/jwt-secret).
import t from 'tap';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jwtVerify } from 'jose';
import { freshDatabase, spawnNode, waitForJob, type TestProcess } from './helpers.ts';
import { SECRET } from './support/graphql.ts';

function env(extra: Record<string, string>): NodeJS.ProcessEnv {
  const e = { ...process.env };
  for (const name of ['DATABASE_URL', 'TEST_DATABASE_URL', 'BALLAST_DATA_DIR', 'BALLAST_JWT_SECRET', 'BALLAST_JWKS_URL', 'NODE_ENV', 'LOG_LEVEL']) delete e[name];
  return { ...e, LOG_FORMAT: 'json', BALLAST_GRAPHQL_PORT: '0', BALLAST_DEMO: '0', ...extra };
}

function apiUrl(proc: TestProcess): Promise<string> {
  return proc.waitForLine((line) => {
    try {
      const r = JSON.parse(line) as { msg?: string; url?: string };
      return r.msg?.startsWith('GraphQL API at ') ? r.url : undefined;
    } catch {
      return undefined;
    }
  }, 60_000);
}

async function cli(t: Parameters<typeof spawnNode>[0], args: string[], e: NodeJS.ProcessEnv) {
  const proc = spawnNode(t, ['src/cli.ts', ...args], { env: e });
  const { code } = await proc.wait(30_000);
  return { code, stdout: proc.lines.join('\n').trim(), stderr: proc.stderr() };
}

const post = async (url: string, query: string, bearer: string, variables = {}) =>
  (await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${bearer}` }, body: JSON.stringify({ query, variables }) })).json() as Promise<any>;

t.test('start serves GraphQL beside the worker; a minted token submits a job that runs', async (t) => {
  const { url, db } = await freshDatabase(t);
  const e = env({ DATABASE_URL: url, BALLAST_JWT_SECRET: SECRET });
  const proc = spawnNode(t, ['src/cli.ts', 'start'], { env: e });
  const api = await apiUrl(proc);
  t.match(api, /^http:\/\/127\.0\.0\.1:\d+\/graphql$/, `start logged the URL, on loopback by default (${api})`);
  const minted = await cli(t, ['token', '--role', 'client', '--tenant', 'acme', '--sub', 'dev', '--expires', '10m'], e);
  t.equal(minted.code, 0, minted.stderr);
  const { payload } = await jwtVerify(minted.stdout, new TextEncoder().encode(SECRET));
  t.match(payload, { role: 'client', tenant_id: 'acme', sub: 'dev' });
  t.ok(payload.exp! - payload.iat! === 600, 'expires as asked');
  const r = await post(api, 'mutation ($i: SubmitJobInput!) { submitJob(input: $i) { jobId job { tenantId } } }', minted.stdout,
    { i: { pipeline: 'demo.wordstats', input: { text: 'from graphql' } } });
  t.equal(r.data?.submitJob.job.tenantId, 'acme', JSON.stringify(r));
  t.equal((await waitForJob(db, r.data.submitJob.jobId)).status, 'completed', 'the worker of the same process ran it');
  t.same(await proc.stop('SIGTERM', 20_000), { code: 0, signal: null }, 'SIGTERM stops API and worker: exit 0');
  t.ok(proc.lines.every((l) => l.startsWith('{')), 'stdout stays JSON log lines');
});

t.test('serve runs the API alone; health answers', async (t) => {
  const { url } = await freshDatabase(t);
  const e = env({ DATABASE_URL: url, BALLAST_JWT_SECRET: SECRET });
  const proc = spawnNode(t, ['src/cli.ts', 'serve'], { env: e });
  const api = await apiUrl(proc);
  const op = (await cli(t, ['token', '--role', 'operator'], e)).stdout;
  const r = await post(api, '{ jobs { totalCount } }', op);
  t.same(r, { data: { jobs: { totalCount: 0 } } });
  t.equal((await fetch(api.replace('/graphql', '/health'))).status, 200);
  t.same(await proc.stop('SIGTERM', 20_000), { code: 0, signal: null });
});

t.test('serve refuses the generated development secret unless --dev; `url` prints the database URL', async (t) => {
  const { url } = await freshDatabase(t);
  const dir = mkdtempSync(join(tmpdir(), 'ballast-serve-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const e = env({ DATABASE_URL: url, BALLAST_DATA_DIR: dir });
  const minted = await cli(t, ['token', '--role', 'operator'], e);
  t.equal(minted.code, 0, 'a development token (and secret) exist');
  const refused = await cli(t, ['serve'], e);
  t.not(refused.code, 0, 'serve without a configured secret exits with an error');
  t.match(refused.stderr + refused.stdout, /refusing to serve with the generated development secret/, 'and says why and what to do');
  const proc = spawnNode(t, ['src/cli.ts', 'serve', '--dev'], { env: e });
  const api = await apiUrl(proc);
  t.match(api, /^http:\/\/127\.0\.0\.1:/, 'with --dev it serves, on loopback');
  t.ok(proc.lines.some((l) => l.includes('DEVELOPMENT MODE')), 'and warns that it is development mode');
  t.same(await post(api, '{ jobs { totalCount } }', minted.stdout), { data: { jobs: { totalCount: 0 } } });
  t.same(await proc.stop('SIGTERM', 20_000), { code: 0, signal: null });
  const printed = await cli(t, ['url'], env({ DATABASE_URL: url }));
  t.same([printed.code, printed.stdout], [0, url], '`ballast url` prints the database URL for psql');
});

t.test('token without BALLAST_JWT_SECRET: a development secret in the data dir, never in production', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'ballast-token-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const first = await cli(t, ['token', '--role', 'operator'], env({ BALLAST_DATA_DIR: dir }));
  t.equal(first.code, 0, first.stderr);
  const file = join(dir, 'jwt-secret');
  t.equal(statSync(file).mode & 0o777, 0o600, 'the secret file is private');
  const again = await cli(t, ['token', '--role', 'client'], env({ BALLAST_DATA_DIR: dir }));
  const { readFileSync } = await import('node:fs');
  const key = new TextEncoder().encode(readFileSync(file, 'utf8').trim());
  t.match((await jwtVerify(first.stdout, key)).payload, { role: 'operator' });
  t.match((await jwtVerify(again.stdout, key)).payload, { role: 'client', tenant_id: 'default' }, 'the same secret signs the next one');
  const prod = await cli(t, ['token'], env({ BALLAST_DATA_DIR: dir, NODE_ENV: 'production' }));
  t.equal(prod.code, 2);
  t.match(prod.stderr, /BALLAST_JWT_SECRET/);
  const bad = await cli(t, ['token', '--role', 'admin'], env({ BALLAST_DATA_DIR: dir }));
  t.equal(bad.code, 2);
  t.match(bad.stderr, /--role admin/);
});
