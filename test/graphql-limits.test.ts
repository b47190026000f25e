// Reading through GraphQL within limits: cursor pages with a capped and a default size, filters by status, pipeline
// and time, depth and cost limits, the body size limit, the health endpoint, Ruru only outside production, RS256
// tokens from a JWKS, and unexpected errors masked with an id that the log repeats.
import t from 'tap';
import { createServer, request as httpRequest } from 'node:http';
import type { AddressInfo } from 'node:net';
import { z } from 'zod';
import WebSocket from 'ws';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { getIntrospectionQuery, GraphQLError } from 'postgraphile/graphql';
import { pipeline } from '../src/pipeline/pipeline.ts';
import { serverSettings } from '../src/server/config.ts';
import { makeMaskError } from '../src/server/errors.ts';
import { createLogger } from '../src/log.ts';
import { freshDatabase } from './helpers.ts';
import { data, errorOf, gql, testServer, token, WsConnection } from './support/graphql.ts';

const { url, db, pool } = await freshDatabase(t);
const p = pipeline({ name: 'lim.p', version: 1, input: z.object({ n: z.number() }) }).step('a', { output: z.number() }, () => 1);
const q = pipeline({ name: 'lim.q', version: 1, input: z.object({}) }).step('a', { output: z.number() }, () => 1);
const text = pipeline({ name: 'lim.t', version: 1, input: z.object({ text: z.string() }) }).step('a', { output: z.number() }, () => 1);
for (const x of [p, q, text]) await db.registerPipeline(x.name, x.version, x.definition(), x.inputJsonSchema());

// Eight jobs of acme, created a day apart (on the SQL clock), no worker: they stay queued unless cancelled.
const ids: string[] = [];
for (let i = 0; i < 8; i++) {
  const c = await pool.connect();
  try {
    await c.query('begin');
    await c.query(`select set_config('ballast.now', $1, true)`, [`2030-01-0${i + 1}T12:00:00Z`]);
    const { rows } = await c.query(`select job_id::text from ballast.submit_job($1, $2, null, 'acme')`, [i % 2 ? 'lim.q' : 'lim.p', i % 2 ? '{}' : `{"n": ${i}}`]);
    await c.query('commit');
    ids.push(rows[0].job_id);
  } finally {
    c.release();
  }
}
for (const id of ids.slice(0, 3)) await db.cancelJob(id, 'test', 'test');

const limits = { maxPage: 5, defaultPage: 3, maxDepth: 6, maxCost: 50, maxBodyBytes: 4096 };
const server = await testServer(t, url, { limits });
const acme = await token('client', 'acme');

t.test('pages: a default size, a cap, cursors that walk every row once', async (t) => {
  const first = (await data(server, '{ jobs { nodes { id } pageInfo { hasNextPage endCursor } } }', {}, acme)).jobs;
  t.same(first.nodes.map((n: any) => n.id), ids.slice(0, 3), 'without first/last: the default page (3), in id order');
  t.equal(first.pageInfo.hasNextPage, true);
  for (const args of ['first: 6', 'last: 6', 'first: -1']) {
    const e = errorOf(await gql(server, `{ jobs(${args}) { nodes { id } } }`, {}, acme));
    t.equal(e.code, 'INVALID_PAGE_SIZE', `${args} is refused`);
    t.equal(e.extensions.maxPage, 5);
  }
  const viaVariable = errorOf(await gql(server, 'query ($n: Int) { jobs(first: $n) { nodes { id } } }', { n: 99 }, acme));
  t.equal(viaVariable.code, 'INVALID_PAGE_SIZE', 'a variable is capped too');
  const walked: string[] = [];
  let after: string | null = null;
  for (let page = 0; page < 10; page++) {
    const r: any = (await data(server, 'query ($after: Cursor) { jobs(first: 5, after: $after) { nodes { id } pageInfo { hasNextPage endCursor } } }', { after }, acme)).jobs;
    walked.push(...r.nodes.map((n: any) => n.id));
    if (!r.pageInfo.hasNextPage) break;
    after = r.pageInfo.endCursor;
  }
  t.same(walked, ids, 'pages of 5 by cursor: every job once, in order');
  const last = (await data(server, '{ jobs(last: 2) { nodes { id } } }', {}, acme)).jobs;
  t.same(last.nodes.map((n: any) => n.id), ids.slice(-2), 'last: 2');
  const back = (await data(server, 'query ($b: Cursor) { jobs(before: $b) { nodes { id } } }', { b: (await data(server, '{ jobs(last: 1) { pageInfo { startCursor } } }', {}, acme)).jobs.pageInfo.startCursor }, acme)).jobs;
  t.same(back.nodes.map((n: any) => n.id), ids.slice(4, 7), 'before alone: the default page backwards');
  const offset = await gql(server, '{ jobs(offset: 2) { nodes { id } } }', {}, acme);
  t.match(errorOf(offset).message, /offset/, 'offset pagination is not offered');
});

t.test('filters: status, pipeline, time window; ordering', async (t) => {
  const ofQuery = async (args: string) => (await data(server, `{ jobs(${args}) { nodes { id } } }`, {}, acme)).jobs.nodes.map((n: any) => n.id);
  t.same(await ofQuery('condition: { status: "cancelled" }'), ids.slice(0, 3));
  t.same(await ofQuery('first: 5, condition: { pipeline: "lim.q" }'), ids.filter((_, i) => i % 2 === 1));
  t.same(await ofQuery('condition: { statusIn: ["queued"], pipeline: "lim.p" }'), [ids[4], ids[6]]);
  t.same(await ofQuery('condition: { createdAfter: "2030-01-03T00:00:00Z", createdBefore: "2030-01-05T00:00:00Z" }'), [ids[2], ids[3]], 'a time window');
  t.same(await ofQuery('first: 2, orderBy: CREATED_AT_DESC'), [ids[7], ids[6]], 'newest first');
});

t.test('depth and cost limits refuse a query before it runs', async (t) => {
  const deep = await gql(server, '{ jobs { nodes { steps { nodes { attempts { nodes { modelCalls { nodes { id } } } } } } } } }', {}, acme);
  t.same([errorOf(deep).code, errorOf(deep).extensions.maxDepth], ['QUERY_TOO_DEEP', 6]);
  t.equal(deep.body.data, undefined, 'nothing ran');
  const viaFragment = await gql(server, 'fragment S on Step { attempts { nodes { modelCalls { nodes { id } } } } } { jobs { nodes { steps { nodes { ...S } } } } }', {}, acme);
  t.equal(errorOf(viaFragment).code, 'QUERY_TOO_DEEP', 'fragments are expanded');
  const atLimit = await gql(server, '{ jobs { nodes { steps { nodes { attempts { totalCount } } } } } }', {}, acme);
  t.equal(atLimit.body.errors, undefined, 'a query at the depth limit runs');
  const costly = await gql(server, '{ jobs(first: 5) { nodes { steps(first: 5) { nodes { attempts(first: 5) { totalCount } } } } } }', {}, acme);
  t.same([errorOf(costly).code, errorOf(costly).extensions.cost], ['QUERY_TOO_COSTLY', 155], '5 + 25 + 125 rows > 50');
  const cheap = await gql(server, '{ jobs(first: 5) { nodes { steps(first: 5) { nodes { id } } } } }', {}, acme);
  t.equal(cheap.body.errors, undefined, '5 + 25 rows run');
  const introspection = await gql(server, getIntrospectionQuery(), {}, acme);
  t.equal(introspection.body.errors, undefined, 'introspection (GraphiQL) is not counted');
});

t.test('denial-of-service shapes are refused before planning: doubling fragments, aliases, root fields, first: 0', async (t) => {
  // Twenty fragments, each spreading the next twice: under 1 KB, 2^20 fields once expanded. Anonymous.
  const names = Array.from({ length: 20 }, (_, i) => `F${i}`);
  const doubling = names.map((n, i) => i < 19 ? `fragment ${n} on Query { ...F${i + 1} ...F${i + 1} }` : `fragment ${n} on Query { __typename }`).join('\n') +
    '\nquery { ...F0 }';
  t.ok(doubling.length < 1024, `the document is ${doubling.length} bytes`);
  const began = Date.now();
  const bomb = await gql(server, doubling);
  t.same([errorOf(bomb).code, errorOf(bomb).extensions.fields], ['QUERY_TOO_LARGE', 2 ** 19], 'refused with its expanded size');
  t.ok(Date.now() - began < 10_000, `answered in ${Date.now() - began} ms, not after planning a million fields`);
  const health = await fetch(server.url.replace('/graphql', '/health'));
  t.equal(health.status, 200, 'the server stays healthy');

  // The same limits with the default body size (100 KB), for the big documents.
  const wide = await testServer(t, url, { limits: { ...limits, maxBodyBytes: 102_400 } });
  const aliasesOfSchema = `{ ${Array.from({ length: 1500 }, (_, i) => `s${i}: __schema { queryType { name } }`).join(' ')} }`;
  const codes = (r: Awaited<ReturnType<typeof gql>>) => (r.body.errors ?? []).map((e) => e.extensions?.code);
  t.same(codes(await gql(wide, aliasesOfSchema)), ['INTROSPECTION_DISABLED'], '1,500 aliases of __schema, anonymous: no introspection at all');
  const schemaAliases = await gql(wide, aliasesOfSchema, {}, acme);
  t.same(codes(schemaAliases), ['TOO_MANY_ROOT_FIELDS', 'QUERY_TOO_LARGE', 'TOO_MANY_ALIASES'], '1,500 aliases of __schema with a token: every limit it breaks');
  t.equal(schemaAliases.body.errors!.find((e) => e.extensions?.code === 'TOO_MANY_ALIASES')!.extensions!.aliases, 1500);
  t.equal(schemaAliases.body.data, undefined, 'nothing ran');
  const counts = `{ ${Array.from({ length: 800 }, (_, i) => `c${i}: jobs(first: 0) { totalCount }`).join(' ')} }`;
  t.ok(codes(await gql(wide, counts, {}, acme)).includes('TOO_MANY_ALIASES'), '800 aliased counts with a client token');
  const viaFragment = `fragment A on Query { ${Array.from({ length: 60 }, (_, i) => `a${i}: __typename`).join(' ')} } { ...A ...A }`;
  t.same(codes(await gql(server, viaFragment)), ['TOO_MANY_ROOT_FIELDS', 'TOO_MANY_ALIASES'], 'aliases are counted once per spread (60 x 2 > 100); 60 root fields > 30');

  const zeroPage = await gql(server, '{ jobs(first: 0) { nodes { steps(first: 50) { totalCount } } } }', {}, acme);
  t.same([errorOf(zeroPage).code, errorOf(zeroPage).extensions.cost], ['QUERY_TOO_COSTLY', 51], 'first: 0 counts as one row (1 + 50 > 50)');

  const few = await testServer(t, url, { limits: { maxRootFields: 3 } });
  const roots = await gql(few, '{ jobs { totalCount } steps { totalCount } events { totalCount } attempts { totalCount } }', {}, acme);
  t.same([errorOf(roots).code, errorOf(roots).extensions.rootFields], ['TOO_MANY_ROOT_FIELDS', 4]);
  t.equal((await gql(few, '{ jobs { totalCount } steps { totalCount } events { totalCount } }', {}, acme)).body.errors, undefined, 'three run');
  // Found by test/graphql-fuzz.test.ts: root fields spread from fragments were counted as one.
  const spread = await gql(few, 'fragment A on Query { a: jobs { totalCount } b: jobs { totalCount } } fragment B on Query { c: jobs { totalCount } ...A } { ...A ...B ... on Query { d: jobs { totalCount } } }', {}, acme);
  t.same([errorOf(spread).code, errorOf(spread).extensions.rootFields], ['TOO_MANY_ROOT_FIELDS', 4], 'fragments and inline fragments at the root bring their fields');
  t.equal((await gql(few, '{ jobs { totalCount } jobs { totalCount } steps { totalCount } events { totalCount } }', {}, acme)).body.errors, undefined, 'the same response key twice is one root field');
  const introspection = await gql(server, getIntrospectionQuery(), {}, acme);
  t.equal(introspection.body.errors, undefined, 'the standard introspection query stays under every limit');
});

t.test('introspection: with a token by default, never anonymous; off in production; configurable', async (t) => {
  const q = '{ __schema { queryType { name } } }';
  const anonymous = await gql(server, q);
  t.same([errorOf(anonymous).code, errorOf(anonymous).extensions.policy], ['INTROSPECTION_DISABLED', 'authenticated'], 'anonymous: refused');
  t.match(errorOf(await gql(server, '{ __type(name: "Job") { name } }')).message, /needs a token/, '__type too');
  t.same((await gql(server, '{ __typename }')).body, { data: { __typename: 'Query' } }, '__typename is always allowed');
  t.same((await gql(server, q, {}, acme)).body.data, { __schema: { queryType: { name: 'Query' } } }, 'with a token: allowed');
  const off = await testServer(t, url, { introspection: 'off' });
  t.equal(errorOf(await gql(off, q, {}, await token('operator'))).code, 'INTROSPECTION_DISABLED', 'off: refused even to an operator');
  const ws = new WsConnection(off, await token('operator'));
  t.teardown(() => ws.close());
  const overWs = await new Promise<any>((resolve) => {
    ws.client.subscribe({ query: '{ __schema { queryType { name } } }' }, { next: resolve, error: resolve, complete: () => {} });
  });
  const wsError = Array.isArray(overWs) ? overWs[0] : overWs.errors?.[0];
  t.equal(wsError?.extensions?.code, 'INTROSPECTION_DISABLED', 'off: refused over the websocket too');
  // Found by test/graphql-fuzz.test.ts: over the websocket, validation errors had no code (HTTP adds it afterwards).
  const invalid = await new Promise<any>((resolve) => {
    ws.client.subscribe({ query: '{ jobs { nope } }' }, { next: resolve, error: resolve, complete: () => {} });
  });
  t.equal((Array.isArray(invalid) ? invalid[0] : invalid.errors?.[0])?.extensions?.code, 'GRAPHQL_VALIDATION_FAILED', 'a validation error over the websocket has its code');
  const all = await testServer(t, url, { introspection: 'all' });
  t.equal((await gql(all, q)).body.errors, undefined, 'all: anonymous may');
  t.equal(serverSettings({}, { NODE_ENV: 'production' }).introspection, 'off', 'production default: off');
  t.equal(serverSettings({}, {}).introspection, 'authenticated', 'development default: authenticated');
  t.throws(() => serverSettings({}, { BALLAST_GRAPHQL_INTROSPECTION: 'sometimes' }), /BALLAST_GRAPHQL_INTROSPECTION=sometimes is not all, authenticated or off/);
});

t.test('every refusal has a code: unparseable body, media type, validation, 1e400, deep variables', async (t) => {
  const wide = await testServer(t, url, { limits: { ...limits, maxBodyBytes: 102_400 } });
  const raw = async (body: string, contentType = 'application/json') => {
    const r = await fetch(wide.url, { method: 'POST', headers: { 'content-type': contentType, authorization: `Bearer ${acme}` }, body });
    return { status: r.status, body: (await r.json()) as { errors: { message: string; extensions: Record<string, unknown> }[] } };
  };
  const cases: [string, string, string | undefined, string, number][] = [
    ['a body that is not JSON', '{not json', undefined, 'BAD_REQUEST', 400],
    ['a media type the API does not take', '{ __typename }', 'text/plain', 'UNSUPPORTED_MEDIA_TYPE', 415],
    ['no query', JSON.stringify({ foo: 1 }), undefined, 'BAD_REQUEST', 400],
    ['an unknown field', JSON.stringify({ query: '{ nope }' }), undefined, 'GRAPHQL_VALIDATION_FAILED', 400],
    ['a number beyond float64', '{"query":"query ($i: JSON) { __typename }","variables":{"i":1e400}}', undefined, 'BAD_USER_INPUT', 400],
    ['variables nested 5,000 deep', `{"query":"{ __typename }","variables":{"v":${'['.repeat(5000)}${']'.repeat(5000)}}}`, undefined, 'BAD_USER_INPUT', 400],
  ];
  for (const [what, body, type, code, status] of cases) {
    const r = await raw(body, type);
    t.equal(r.body.errors?.[0]?.extensions?.code, code, `${what}: ${code}`);
    t.equal(r.status, status, `${what}: HTTP ${status}`);
  }
  t.match((await raw('{"query":"query ($i: JSON) { __typename }","variables":{"i":1e400}}')).body.errors[0]!.message, /variables\.i is not a finite number/);
  // Found by test/graphql-fuzz.test.ts: PostGraphile's own refusal of a cursor it did not issue had no code.
  const cursor = await gql(wide, '{ jobs(after: "bm90IGEgY3Vyc29y") { totalCount } }', {}, acme);
  t.same([cursor.status, errorOf(cursor).code], [200, 'INVALID_CURSOR'], 'a cursor the API did not issue: INVALID_CURSOR');
  t.match(errorOf(cursor).message, /cursor from a previous request/);
  const wrong405 = await fetch(wide.url, { method: 'PUT', headers: { 'content-type': 'application/json', accept: 'application/json', authorization: `Bearer ${acme}` }, body: '{"query":"{ __typename }"}' });
  t.same([wrong405.status, ((await wrong405.json()) as any).errors[0].extensions.code], [405, 'METHOD_NOT_ALLOWED'], 'another method: METHOD_NOT_ALLOWED');
  const wrong406 = await fetch(wide.url, { method: 'POST', headers: { 'content-type': 'application/json', accept: 'text/csv', authorization: `Bearer ${acme}` }, body: '{"query":"{ __typename }"}' });
  t.same([wrong406.status, ((await wrong406.json()) as any).errors[0].extensions.code], [406, 'NOT_ACCEPTABLE'], 'an Accept the API cannot answer: NOT_ACCEPTABLE');
});

t.test('request bodies and websocket messages over the limit are refused', async (t) => {
  const big = `{ jobs { totalCount } } # ${'x'.repeat(5000)}`;
  const r = await gql(server, big, {}, acme);
  t.equal(r.status, 413);
  t.equal(errorOf(r).code, 'PAYLOAD_TOO_LARGE');
  const ws = new WebSocket(server.wsUrl, 'graphql-transport-ws');
  await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject));
  const closed = new Promise<number>((resolve) => ws.once('close', (code) => resolve(code)));
  ws.send(JSON.stringify({ type: 'connection_init', payload: { pad: 'x'.repeat(5000) } }));
  t.equal(await closed, 1009, 'the websocket closes with "message too big"');
});

t.test('health endpoint, and Ruru only outside production', async (t) => {
  const health = await fetch(server.url.replace('/graphql', '/health'));
  t.equal(health.status, 200);
  t.match(await health.json(), { status: 'ok', database: 'ok', subscriptions: 'ok' });
  t.equal((await fetch(server.url.replace('/graphql', '/graphiql'))).status, 404, 'no Ruru when disabled');
  const dev = await testServer(t, url, { graphiql: true });
  const ruru = await fetch(dev.url.replace('/graphql', '/graphiql'));
  t.equal(ruru.status, 200);
  t.match(await ruru.text(), /ruru/i);
  t.equal(serverSettings({}, { NODE_ENV: 'production' }).graphiql, false, 'NODE_ENV=production turns Ruru off');
  t.equal(serverSettings({}, {}).graphiql, true);
  t.match(serverSettings({}, { BALLAST_LIVE_MAX_BUFFERED: '1048576', BALLAST_LIVE_MAX_QUEUED: '500' }).limits,
    { liveMaxBufferedBytes: 1048576, liveMaxQueued: 500 }, 'the slow-subscriber limits come from the environment');
  t.throws(() => serverSettings({}, { BALLAST_LIVE_MAX_QUEUED: '5' }), /BALLAST_LIVE_MAX_QUEUED=5 is not an integer >= 100/,
    'a limit too small to be useful is refused, naming the variable');
});

t.test('RS256 tokens from an identity provider\'s JWKS', async (t) => {
  const { publicKey, privateKey } = await generateKeyPair('RS256');
  const jwk = { ...(await exportJWK(publicKey)), kid: 'k1', alg: 'RS256', use: 'sig' };
  const idp = createServer((_, res) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: [jwk] })));
  await new Promise<void>((r) => idp.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise((r) => idp.close(r)));
  const jwksUrl = `http://127.0.0.1:${(idp.address() as AddressInfo).port}/.well-known/jwks.json`;
  const api = await testServer(t, url, { jwt: { jwksUrl, issuer: 'https://idp.example', audience: 'ballast', secret: undefined } });
  const sign = (claims: Record<string, unknown>, key = privateKey, iss = 'https://idp.example') =>
    new SignJWT(claims).setProtectedHeader({ alg: 'RS256', kid: 'k1' }).setIssuer(iss).setAudience('ballast').setExpirationTime('5m').sign(key);
  const ok = await gql(api, '{ jobs { totalCount } }', {}, await sign({ role: 'client', tenant_id: 'acme', sub: 'idp|1' }));
  t.equal(ok.body.data?.jobs.totalCount, 8, 'a token signed by the provider reads its tenant');
  const other = await generateKeyPair('RS256');
  t.equal((await gql(api, '{ jobs { totalCount } }', {}, await sign({ role: 'client', tenant_id: 'acme' }, other.privateKey))).status, 401, 'another key is refused');
  t.equal((await gql(api, '{ jobs { totalCount } }', {}, await sign({ role: 'client', tenant_id: 'acme' }, privateKey, 'https://evil.example'))).status, 401, 'another issuer is refused');
  t.equal((await gql(api, '{ jobs { totalCount } }', {}, await token('operator'))).status, 401, 'HS256 is refused without a secret');
});

t.test('unexpected errors are masked for the client and logged with the same id', async (t) => {
  const lines: any[] = [];
  const log = createLogger({ level: 'error', pretty: false });
  log.error = ((obj: any) => void lines.push(obj)) as never;
  const mask = makeMaskError(log);
  const masked = mask(new GraphQLError('boom', { originalError: new Error('password=hunter2 in /etc/secret') }));
  t.notMatch(masked.message, /hunter2/);
  t.equal(masked.extensions.code, 'INTERNAL_SERVER_ERROR');
  t.match(masked.message, String(masked.extensions.errorId));
  t.equal(lines[0]?.errorId, masked.extensions.errorId, 'the log has the error under the id the client got');
  const pgErr = Object.assign(new Error('job 9 does not exist'), { code: 'BA007', severity: 'ERROR' });
  const known = mask(new GraphQLError('x', { originalError: pgErr }));
  t.same([known.message, known.extensions.code, known.extensions.sqlstate], ['job 9 does not exist', 'NOT_FOUND', 'BA007'], 'ballast errors keep their message and code');
});

t.test('a body or websocket message that is not UTF-8 is refused, not stored with U+FFFD', async (t) => {
  const wide = await testServer(t, url, { limits: { ...limits, maxBodyBytes: 102_400 } });
  const utf8co = await token('client', 'utf8co');
  const jobsOf = async () => Number((await pool.query(`select count(*) from ballast.jobs where tenant_id = 'utf8co'`)).rows[0].count);
  const post = async (body: Buffer, headers: Record<string, string>, server = wide) => {
    const r = await fetch(server.url, { method: 'POST', headers: { authorization: `Bearer ${utf8co}`, ...headers }, body: new Uint8Array(body) });
    return { status: r.status, body: (await r.json()) as { data?: any; errors?: { message: string; extensions: Record<string, any> }[] } };
  };
  const submit = 'mutation ($i: JSON) { submitJob(input: { pipeline: \"lim.t\", input: $i }) { jobId } }';
  const withText = (bytes: number[]) => {
    const head = Buffer.from(`{"query":${JSON.stringify(submit)},"variables":{"i":{"text":"caf`);
    return { body: Buffer.concat([head, Buffer.from(bytes), Buffer.from('"}}}')]), offset: head.length };
  };
  // A lone Latin-1 byte, an overlong slash, a UTF-16 surrogate, a sequence cut short, a byte that never starts one.
  const bad: [string, number[]][] = [['Latin-1 é', [0xe9]], ['overlong /', [0xc0, 0xaf]], ['surrogate', [0xed, 0xa0, 0x80]], ['truncated €', [0xe2, 0x82]], ['0xff', [0xff]]];
  for (const [what, bytes] of bad) {
    for (const accept of ['application/json', 'application/graphql-response+json']) {
      const { body, offset } = withText(bytes);
      const r = await post(body, { 'content-type': 'application/json', accept });
      t.equal(r.status, 400, `${what}, accept ${accept}: HTTP 400`);
      const e = r.body.errors?.[0];
      t.equal(e?.extensions.code, 'INVALID_UTF8', `${what}: INVALID_UTF8`);
      t.equal(e?.extensions.offset, offset, `${what}: the offset of the first bad byte`);
      t.match(e?.message, new RegExp(`offset ${offset} \\(0x${bytes[0]!.toString(16)}\\).*UTF-8`), 'the message names the byte and asks for UTF-8');
      t.equal(r.body.data, undefined);
    }
  }
  const before = Buffer.from('mutation { submitJob(input: { pipeline: "lim.t", input: { text: "caf');
  const document = Buffer.concat([before, Buffer.from([0xe9]), Buffer.from('" } }) { jobId } }')]);
  const asGraphql = await post(document, { 'content-type': 'application/graphql', accept: 'application/json' });
  t.same([asGraphql.status, asGraphql.body.errors?.[0]?.extensions.code, asGraphql.body.errors?.[0]?.extensions.offset], [400, 'INVALID_UTF8', before.length], 'an application/graphql body too');
  t.equal(await jobsOf(), 0, 'nothing was written');

  const ok = withText([...Buffer.from('é ✓ 😀')]);
  const stored = await post(ok.body, { 'content-type': 'application/json', accept: 'application/json' });
  t.equal(stored.body.errors, undefined, 'valid UTF-8 is accepted');
  const { rows } = await pool.query(`select input->>'text' as text from ballast.jobs where id = $1`, [stored.body.data.submitJob.jobId]);
  t.equal(rows[0].text, 'café ✓ 😀', 'and stored as sent');

  const tooBig = Buffer.concat([Buffer.from([0xff]), Buffer.alloc(5000, 0x20)]);
  const limited = await post(tooBig, { 'content-type': 'application/json', accept: 'application/json' }, server);
  t.same([limited.status, limited.body.errors?.[0]?.extensions.code], [413, 'PAYLOAD_TOO_LARGE'], 'a body over the limit is still a 413');
  // Chunked, with no content-length: grafserv's own guard stops reading it.
  const chunked = await new Promise<{ status: number; body: any }>((resolve, reject) => {
    const req = httpRequest(server.url, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${utf8co}` } }, (res) => {
      let data = '';
      res.setEncoding('utf8').on('data', (c) => (data += c)).on('end', () => resolve({ status: res.statusCode!, body: JSON.parse(data) }));
    });
    req.on('error', reject);
    req.write(Buffer.from([0xff]));
    req.end(Buffer.alloc(5000, 0x20));
  });
  t.same([chunked.status, chunked.body.errors?.[0]?.extensions.code], [413, 'PAYLOAD_TOO_LARGE'], 'a chunked body over the limit is a 413 too');

  const get = await fetch(`${wide.url}?query=%7B%20jobs%20%7B%20totalCount%20%7D%20%7D%20%23%FF`, { headers: { authorization: `Bearer ${utf8co}`, accept: 'application/json' } });
  const getBody = (await get.json()) as { errors: { extensions: Record<string, unknown> }[] };
  t.same([get.status, getBody.errors[0]!.extensions.code], [405, 'METHOD_NOT_ALLOWED'], 'GET (and so a query string) is not served at all');

  // Websockets: ws closes a text frame that is not UTF-8 with 1007 (RFC 6455); a binary frame is decoded as strictly.
  const socket = async () => {
    const ws = new WebSocket(wide.wsUrl, 'graphql-transport-ws');
    await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject));
    ws.on('error', () => {});
    const closed = new Promise<{ code: number; reason: string }>((resolve) => ws.once('close', (code, reason) => resolve({ code, reason: String(reason) })));
    const acked = new Promise((resolve) => ws.once('message', resolve));
    ws.send(JSON.stringify({ type: 'connection_init', payload: { authorization: `Bearer ${utf8co}` } }));
    t.match(JSON.parse(String(await acked)), { type: 'connection_ack' });
    return { ws, closed };
  };
  const subscribe = (bytes: number[]) => Buffer.concat([
    Buffer.from(`{"id":"1","type":"subscribe","payload":{"query":${JSON.stringify(submit)},"variables":{"i":{"text":"caf`), Buffer.from(bytes), Buffer.from('"}}}}'),
  ]);
  const asText = await socket();
  asText.ws.send(subscribe([0xe9]), { binary: false });
  t.equal((await asText.closed).code, 1007, 'a text frame: closed with 1007 (invalid frame payload data)');
  const asBinary = await socket();
  asBinary.ws.send(subscribe([0xe9]), { binary: true });
  const binaryClosed = await asBinary.closed;
  t.equal(binaryClosed.code, 1007, 'a binary frame: 1007 as well');
  t.match(binaryClosed.reason, /Invalid UTF-8 at byte \d+.*send UTF-8/, 'naming the byte');
  const fine = await socket();
  const answered = new Promise((resolve) => fine.ws.once('message', (m) => resolve(JSON.parse(String(m)))));
  fine.ws.send(subscribe([...Buffer.from('é')]), { binary: true });
  t.match(await answered, { type: 'next', payload: { data: { submitJob: { jobId: /\d+/ } } } }, 'a binary frame of valid UTF-8 still runs');
  fine.ws.close();
  t.equal(await jobsOf(), 2, 'only the two valid submissions were written');
});
