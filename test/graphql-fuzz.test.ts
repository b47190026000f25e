// Generated GraphQL requests against the real schema (fetched by introspection as a client): random selections,
// nested connections with random page sizes, aliases, fragments spreading fragments (repeatedly, deeply), variables of
// the right and the wrong types (huge, negative, non-finite, deeply nested), mutations with malformed inputs, and raw
// byte-level garbage. For every request: the server answers within 20 s with HTTP 200/400/413/415 and JSON whose
// errors all carry extensions.code (none INTERNAL_SERVER_ERROR); a client of tenant alpha never sees anything of
// tenant bravo (its job and step ids, its inputs) that it did not send itself; and an operation over a documented
// limit (depth, aliases, root fields, fields), computed here from the generated document and not by limits.ts, is
// refused with that limit's code before anything runs, while one within every limit is not refused for them.
// Fixed seeds, so a failure replays; fast-check prints the smallest counterexample it shrank to.
import t from 'tap';
import fc from 'fast-check';
import { z } from 'zod';
import WebSocket from 'ws';
import {
  buildClientSchema, getIntrospectionQuery, getNamedType, isEnumType, isInputObjectType, isInterfaceType, isLeafType,
  isListType, isNonNullType, isObjectType, isScalarType,
  type GraphQLField, type GraphQLInputType, type GraphQLNamedType, type GraphQLSchema,
} from 'postgraphile/graphql';
import { pipeline } from '../src/pipeline/pipeline.ts';
import { freshDatabase } from './helpers.ts';
import { data, testServer, token } from './support/graphql.ts';

const { url, db, pool } = await freshDatabase(t);
const fz = pipeline({ name: 'fz.p', version: 1, input: z.object({ text: z.string(), n: z.number().optional() }) }).step('a', { output: z.number() }, () => 1);
await db.registerPipeline(fz.name, fz.version, fz.definition(), fz.inputJsonSchema());

// Two tenants. Bravo's rows get ids from far-apart ranges, so that any of them found in a response is bravo's.
const submit = async (tenant: string, text: string) =>
  (await pool.query(`select job_id::text from ballast.submit_job('fz.p', $1, null, $2)`, [JSON.stringify({ text, n: 1 }), tenant])).rows[0].job_id as string;
for (let i = 0; i < 4; i++) await submit('alpha', `alpha-visible-${i}`);
const SEQUENCES = ['jobs_id_seq', 'steps_id_seq', 'events_id_seq', 'attempts_id_seq'];
const setSequences = (base: number) => Promise.all(SEQUENCES.map((s, i) => pool.query(`select setval('ballast_private.${s}', $1)`, [base + i * 10_000_000])));
await setSequences(910_000_000);
const BRAVO_MARKER = 'bravo-secret-7c1e';
const bravoJobs: string[] = [];
for (let i = 0; i < 3; i++) bravoJobs.push(await submit('bravo', `${BRAVO_MARKER}-${i}`));
await db.cancelJob(bravoJobs[2]!, 'test', 'test');
await setSequences(950_000_000);
const bravoSteps = (await pool.query(`select id::text from ballast_private.steps where job_id = any($1::bigint[])`, [bravoJobs])).rows.map((r) => r.id as string);
const SECRETS = [BRAVO_MARKER, ...bravoJobs, ...bravoSteps];
const bravoState = async () => (await pool.query(`select id, status, input from ballast.jobs where tenant_id = 'bravo' order by id`)).rows;
const bravoBefore = await bravoState();

const limits = { maxPage: 10, defaultPage: 3, maxDepth: 5, maxCost: 400, maxFields: 60, maxAliases: 6, maxRootFields: 4, maxBodyBytes: 16_384 };
const server = await testServer(t, url, { limits });
const alpha = await token('client', 'alpha');

interface Answer {
  status: number;
  text: string;
  body: { data?: unknown; errors?: { message: string; extensions?: Record<string, unknown> }[] } | undefined;
}

async function post(body: Uint8Array | string, contentType: string | undefined = 'application/json', accept = 'application/graphql-response+json'): Promise<Answer> {
  const headers: Record<string, string> = { accept, authorization: `Bearer ${alpha}` };
  if (contentType !== undefined) headers['content-type'] = contentType;
  const res = await fetch(server.url, { method: 'POST', headers, body: typeof body === 'string' ? body : new Uint8Array(body), signal: AbortSignal.timeout(20_000) });
  const text = await res.text();
  let parsed: Answer['body'];
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = undefined;
  }
  return { status: res.status, text, body: parsed };
}

/** Problems with one answer, whatever was asked: status, JSON, codes, bravo's data. */
function problems(request: string, a: Answer): string[] {
  const found: string[] = [];
  if (![200, 400, 413, 415].includes(a.status)) found.push(`HTTP ${a.status}`);
  if (!a.body) found.push(`not JSON: ${a.text.slice(0, 200)}`);
  for (const e of a.body?.errors ?? []) {
    const code = e.extensions?.code;
    if (typeof code !== 'string') found.push(`an error without extensions.code: ${JSON.stringify(e).slice(0, 300)}`);
    if (code === 'INTERNAL_SERVER_ERROR') found.push(`an unexpected error: ${JSON.stringify(e).slice(0, 300)}`);
  }
  for (const s of SECRETS) if (a.text.includes(s) && !request.includes(s)) found.push(`tenant bravo's ${s} in the answer`);
  return found;
}

// ---- The schema, as a client sees it ----
// (from a server with the default limits: the introspection query has more fields than the small limits here allow)
const introspection = await data(await testServer(t, url), getIntrospectionQuery(), {}, alpha);
const schema: GraphQLSchema = buildClientSchema(introspection);
const queryType = schema.getQueryType()!;
const mutationType = schema.getMutationType()!;

// ---- Documents: a small tree that renders to text and that the oracle measures independently of limits.ts ----
interface Arg { name: string; literal?: string; variable?: { type: string; json: string } }
type Sel =
  | { kind: 'field'; alias?: string; name: string; args: Arg[]; sub?: Sel[] }
  | { kind: 'spread'; pick: number; times: number }
  | { kind: 'inline'; sub: Sel[] };
interface Fragment { on: string; sels: Sel[] }
interface Doc { operation: 'query' | 'mutation'; sels: Sel[]; fragments: Fragment[] }

const gqlString = (s: string) => JSON.stringify(s);
const RAW_NUMBERS = ['1e400', '-1e400', '123456789012345678901234567890', '-2147483649', '2147483648', '-1', '0', '1', '3', '10', '11', '1.5', '-0'];
const deep = (n: number) => `${'['.repeat(n)}${']'.repeat(n)}`;
/** Raw JSON for a variable: valid values, wrong types, numbers beyond float64, nesting past every limit. */
const wildJson: fc.Arbitrary<string> = fc.oneof(
  fc.constantFrom(...RAW_NUMBERS),
  fc.constantFrom(deep(10), deep(999), deep(1001), deep(10_000), `{"a":${deep(2000)}}`),
  fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.stringify(v)),
  fc.constantFrom('null', '""', '"x"', '[]', '{}', 'true', `"${'9'.repeat(40)}"`, '"\\u0000"', '"\\ud800"'),
);

/** A value of `type`, usually right, sometimes wrong; as a literal or (for variables) JSON text. */
function valueArb(type: GraphQLInputType, depth: number): fc.Arbitrary<{ literal: string; json: string }> {
  if (isNonNullType(type)) return valueArb(type.ofType, depth);
  const wrong = fc.constantFrom({ literal: '"wrong"', json: '"wrong"' }, { literal: '1e400', json: '1e400' }, { literal: 'null', json: 'null' }, { literal: '[1, 2]', json: '[1,2]' });
  if (isListType(type)) {
    if (depth > 2) return fc.constant({ literal: '[]', json: '[]' });
    return fc.oneof({ weight: 5, arbitrary: fc.array(valueArb(type.ofType, depth + 1), { maxLength: 3 }).map((vs) => ({ literal: `[${vs.map((v) => v.literal).join(', ')}]`, json: `[${vs.map((v) => v.json).join(',')}]` })) }, { weight: 1, arbitrary: wrong });
  }
  if (isEnumType(type)) {
    return fc.oneof({ weight: 5, arbitrary: fc.constantFrom(...type.getValues().map((v) => ({ literal: v.name, json: JSON.stringify(v.name) }))) }, { weight: 1, arbitrary: wrong });
  }
  if (isInputObjectType(type)) {
    if (depth > 3) return fc.constant({ literal: '{}', json: '{}' });
    const fields = Object.values(type.getFields());
    return fc.tuple(...fields.map((f) => fc.tuple(fc.double({ min: 0, max: 1, noNaN: true }), valueArb(f.type, depth + 1)))).map((vs) => {
      const kept = fields.map((f, i) => [f, vs[i]!] as const).filter(([f, [p]]) => (isNonNullType(f.type) ? p < 0.93 : p < 0.4));
      return {
        literal: `{ ${kept.map(([f, [, v]]) => `${f.name}: ${v.literal}`).join(', ')} }`,
        json: `{${kept.map(([f, [, v]]) => `${JSON.stringify(f.name)}:${v.json}`).join(',')}}`,
      };
    });
  }
  const name = isScalarType(type) ? type.name : 'String';
  const same = (v: string) => ({ literal: v, json: v });
  const strings = fc.oneof(fc.string({ maxLength: 20, unit: 'binary' }), fc.constantFrom('fz.p', 'lim.none', '', 'a'.repeat(300)), fc.constantFrom(...bravoJobs));
  const right: fc.Arbitrary<{ literal: string; json: string }> = name === 'Int' ? fc.oneof(fc.integer({ min: -3, max: 14 }), fc.constantFrom(2 ** 31, -(2 ** 31) - 1)).map((n) => same(String(n)))
    : name === 'Float' ? fc.double({ noNaN: true, noDefaultInfinity: true }).map((n) => same(String(n)))
      : name === 'Boolean' ? fc.boolean().map((b) => same(String(b)))
        : name === 'BigInt' || name === 'BigFloat' ? fc.oneof(fc.constantFrom(...bravoJobs, ...bravoSteps, '1', '2', '0', '-1', '9'.repeat(40), 'abc')).map((s) => same(gqlString(s)))
          : name === 'Datetime' ? fc.constantFrom('2030-01-01T00:00:00Z', 'not a date', '1970-01-01', '99999-12-31T00:00:00Z').map((s) => same(gqlString(s)))
            : name === 'JSON' ? fc.oneof(fc.jsonValue({ maxDepth: 3 }), fc.record({ text: strings, n: fc.integer() })).map((v) => ({ literal: gqlString(JSON.stringify(v)), json: JSON.stringify(v) }))
              : strings.map((s) => same(gqlString(s)));
  return fc.oneof({ weight: 6, arbitrary: right }, { weight: 1, arbitrary: wrong });
}

/** Arguments of a field: `first`/`last` often (page sizes around the limit), others now and then; literal or variable. */
function argsArb(field: GraphQLField<unknown, unknown>): fc.Arbitrary<Arg[]> {
  if (field.args.length === 0) return fc.constant([]);
  return fc.tuple(...field.args.map((a) => {
    const isPage = a.name === 'first' || a.name === 'last';
    const required = isNonNullType(a.type);
    const value: fc.Arbitrary<Arg> = fc.oneof(
      { weight: 4, arbitrary: valueArb(a.type, 0).map((v) => ({ name: a.name, literal: v.literal })) },
      { weight: 1, arbitrary: fc.tuple(valueArb(a.type, 0), fc.oneof({ weight: 3, arbitrary: fc.constant<string | null>(null) }, { weight: 1, arbitrary: wildJson }))
        .map(([v, wild]) => ({ name: a.name, variable: { type: String(a.type), json: wild ?? v.json } })) },
    );
    return fc.option(value, { freq: required ? 12 : isPage ? 2 : 5, nil: undefined });
  })).map((args) => args.filter((a): a is Arg => a !== undefined));
}

const ALIAS = fc.option(fc.constantFrom('a', 'b', 'c', 'd', 'e', 'f', 'g', 'h'), { freq: 3, nil: undefined });

/** A selection set on `type`, at most `budget` levels deeper: fields, introspection, spreads, inline fragments. */
function selectionsArb(type: GraphQLNamedType, budget: number, fragmentTypes: Set<string>): fc.Arbitrary<Sel[]> {
  if (!(isObjectType(type) || isInterfaceType(type))) return fc.constant([]);
  const fields = Object.values(type.getFields()).filter((f) => budget > 0 || isLeafType(getNamedType(f.type)));
  const one: fc.Arbitrary<Sel> = fc.oneof(
    { weight: 10, arbitrary: fields.length === 0 ? fc.constant<Sel>({ kind: 'field', name: '__typename', args: [] }) : fc.constantFrom(...fields).chain((f) => {
      const inner = getNamedType(f.type);
      return fc.record({
        alias: ALIAS, args: argsArb(f),
        sub: isLeafType(inner) ? fc.constant(undefined) : selectionsArb(inner, budget - 1, fragmentTypes).map((s) => (s.length ? s : [{ kind: 'field', name: '__typename', args: [] } as Sel])),
      }).map(({ alias, args, sub }): Sel => ({ kind: 'field', name: f.name, alias, args, sub }));
    }) },
    { weight: 1, arbitrary: ALIAS.map((alias): Sel => ({ kind: 'field', name: '__typename', alias, args: [] })) },
    { weight: fragmentTypes.has(type.name) ? 3 : 0, arbitrary: fc.record({ pick: fc.nat(), times: fc.integer({ min: 1, max: 3 }) }).map((s): Sel => ({ kind: 'spread', ...s })) },
    { weight: budget > 0 ? 1 : 0, arbitrary: fc.constant(null).chain(() => selectionsArb(type, budget, fragmentTypes)).map((sub): Sel => ({ kind: 'inline', sub })) },
  );
  return fc.array(one, { minLength: 1, maxLength: budget > 2 ? 3 : 2 });
}

const FRAGMENT_TYPES = new Set(['Query', 'Job']);
const jobType = schema.getType('Job')!;
const docArb: fc.Arbitrary<Doc> = fc.record({
  operation: fc.constantFrom<'query' | 'mutation'>('query', 'query', 'query', 'mutation'),
  queryFragments: fc.array(selectionsArb(queryType, 4, FRAGMENT_TYPES), { maxLength: 3 }),
  jobFragments: fc.array(selectionsArb(jobType, 3, FRAGMENT_TYPES), { maxLength: 3 }),
  depth: fc.integer({ min: 1, max: 7 }),
}).chain(({ operation, queryFragments, jobFragments, depth }) => {
  const root = operation === 'query' ? queryType : mutationType;
  return selectionsArb(root, depth, operation === 'query' ? FRAGMENT_TYPES : new Set(['Job'])).map((sels): Doc => ({
    operation, sels,
    fragments: [...queryFragments.map((s) => ({ on: 'Query', sels: s })), ...jobFragments.map((s) => ({ on: 'Job', sels: s }))],
  }));
});

/** A chain of fragments on Query, each spreading the next `times` times: linear text, exponential expansion. */
const chainArb: fc.Arbitrary<Doc> = fc.record({ length: fc.integer({ min: 1, max: 24 }), times: fc.integer({ min: 1, max: 3 }), alias: fc.boolean(), leaf: fc.constantFrom('__typename', 'jobs { totalCount }') })
  .map(({ length, times, alias, leaf }): Doc => {
    const leafSel: Sel = leaf === '__typename' ? { kind: 'field', name: '__typename', alias: alias ? 'x' : undefined, args: [] }
      : { kind: 'field', name: 'jobs', alias: alias ? 'x' : undefined, args: [], sub: [{ kind: 'field', name: 'totalCount', args: [] }] };
    const fragments: Fragment[] = Array.from({ length }, (_, i) => ({ on: 'Query', sels: i < length - 1 ? [{ kind: 'spread', pick: 0, times }] : [leafSel] }));
    return { operation: 'query', sels: [{ kind: 'spread', pick: 0, times: 1 }], fragments };
  });

const rootName = (doc: Doc) => (doc.operation === 'query' ? queryType : mutationType).name;

/**
 * Resolves a spread on `type`: inside fragment `from` (at any depth) only to a later fragment of that type, so there
 * are no cycles; in the operation, to any.
 */
function target(doc: Doc, type: string, from: number | undefined, pick: number): number | undefined {
  const same = doc.fragments.map((f, i) => [f, i] as const).filter(([f, i]) => f.on === type && (from === undefined || i > from)).map(([, i]) => i);
  return same.length ? same[pick % same.length] : undefined;
}

function render(doc: Doc): { query: string; variables: string } {
  const vars: string[] = [];
  const values: string[] = [];
  const used = new Set<number>();
  const args = (as: Arg[]) => as.length === 0 ? '' : `(${as.map((a) => {
    if (a.literal !== undefined) return `${a.name}: ${a.literal}`;
    const n = vars.length;
    vars.push(`$v${n}: ${a.variable!.type}`);
    values.push(`"v${n}":${a.variable!.json}`);
    return `${a.name}: $v${n}`;
  }).join(', ')})`;
  const sels = (ss: Sel[], on: string, from: number | undefined): string => ss.map((s) => {
    if (s.kind === 'field') {
      const inner = s.sub ? ` { ${sels(s.sub, typeOfField(on, s.name), from)} }` : '';
      return `${s.alias ? `${s.alias}: ` : ''}${s.name}${args(s.args)}${inner}`;
    }
    if (s.kind === 'inline') return `... on ${on} { ${sels(s.sub, on, from)} }`;
    const to = target(doc, on, from, s.pick);
    if (to === undefined) return '__typename';
    used.add(to);
    return Array.from({ length: s.times }, () => `...F${to}`).join(' ');
  }).join(' ');
  const body = sels(doc.sels, rootName(doc), undefined);
  // Only the fragments spread somewhere are rendered (an unused one is a validation error of its own); spreads only
  // go to later fragments, so in order each one's own spreads are known before they are reached.
  const fragmentText: string[] = [];
  for (let i = 0; i < doc.fragments.length; i++) {
    const f = doc.fragments[i]!;
    if (used.has(i)) fragmentText.push(`fragment F${i} on ${f.on} { ${sels(f.sels, f.on, i)} }`);
  }
  const header = `${doc.operation}${vars.length ? ` (${vars.join(', ')})` : ''}`;
  return { query: [`${header} { ${body} }`, ...fragmentText].join('\n'), variables: `{${values.join(',')}}` };
}

function typeOfField(on: string, name: string): string {
  const type = schema.getType(on);
  if (!type || !(isObjectType(type) || isInterfaceType(type))) return '?';
  const field = type.getFields()[name];
  return field ? getNamedType(field.type).name : '?';
}

// ---- The oracle: the documented limits (docs/graphql.md), measured on the generated tree ----
interface Measure { depth: number; fields: number; aliases: number }
function measureDoc(doc: Doc): Measure & { rootFields: number } {
  const memo = new Map<number, Measure>();
  const walk = (ss: Sel[], on: string, from: number | undefined, inIntrospection: boolean): Measure => {
    const m: Measure = { depth: 0, fields: 0, aliases: 0 };
    for (const s of ss) {
      let inner: Measure;
      if (s.kind === 'field') {
        const intro = inIntrospection || s.name.startsWith('__');
        const sub = s.sub ? walk(s.sub, typeOfField(on, s.name), from, intro) : { depth: 0, fields: 0, aliases: 0 };
        // Fields nested in fields: a field is one level plus what is inside it; introspection counts no level.
        inner = { depth: intro ? 0 : 1 + sub.depth, fields: 1 + sub.fields, aliases: (s.alias ? 1 : 0) + sub.aliases };
      } else if (s.kind === 'inline') {
        inner = walk(s.sub, on, from, inIntrospection);
      } else {
        const to = target(doc, on, from, s.pick);
        if (to === undefined) inner = { depth: 0, fields: 1, aliases: 0 }; // rendered as __typename
        else {
          if (!memo.has(to)) memo.set(to, walk(doc.fragments[to]!.sels, doc.fragments[to]!.on, to, false));
          const f = memo.get(to)!;
          inner = { depth: f.depth, fields: f.fields * s.times, aliases: f.aliases * s.times };
        }
      }
      m.depth = Math.max(m.depth, inner.depth);
      m.fields += inner.fields;
      m.aliases += inner.aliases;
    }
    return m;
  };
  // Root fields: the response keys of the operation's result, fragments and inline fragments expanded, each once.
  const keys = (ss: Sel[], on: string, from: number | undefined, into: Set<string>) => {
    for (const s of ss) {
      if (s.kind === 'field') into.add(s.alias ?? s.name);
      else if (s.kind === 'inline') keys(s.sub, on, from, into);
      else {
        const to = target(doc, on, from, s.pick);
        if (to === undefined) into.add('__typename');
        else keys(doc.fragments[to]!.sels, on, to, into);
      }
    }
    return into;
  };
  const on = rootName(doc);
  return { ...walk(doc.sels, on, undefined, false), rootFields: keys(doc.sels, on, undefined, new Set()).size };
}

const LIMIT_CODES = ['QUERY_TOO_DEEP', 'TOO_MANY_ALIASES', 'TOO_MANY_ROOT_FIELDS', 'QUERY_TOO_LARGE'] as const;
function expectedCodes(m: ReturnType<typeof measureDoc>): Set<string> {
  const codes = new Set<string>();
  if (m.depth > limits.maxDepth) codes.add('QUERY_TOO_DEEP');
  if (m.aliases > limits.maxAliases) codes.add('TOO_MANY_ALIASES');
  if (m.rootFields > limits.maxRootFields) codes.add('TOO_MANY_ROOT_FIELDS');
  if (m.fields > limits.maxFields) codes.add('QUERY_TOO_LARGE');
  return codes;
}

const failures: string[] = [];
/** What the documents got, by first code (or `data`): printed, to see that the generator reaches past validation. */
const outcomes = new Map<string, number>();
async function checkDocument(doc: Doc, legacy = false): Promise<boolean> {
  const { query, variables } = render(doc);
  const request = `{"query":${JSON.stringify(query)},"variables":${variables}}`;
  // application/json is the legacy answer type (validation failures come with HTTP 200), the other one the standard's.
  const answer = await post(request, 'application/json', legacy ? 'application/json' : 'application/graphql-response+json');
  const found = problems(request, answer);
  const outcome = `${doc.operation} ${answer.status} ${answer.body?.data ? 'data' : ''} ${String(answer.body?.errors?.[0]?.extensions?.code ?? '')}`;
  outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1);
  // A request refused as a whole (its variables, its size) is not validated: the limits are not its verdict.
  const refusedAsRequest = answer.status === 413 ||
    ((answer.body?.errors ?? []).length > 0 && answer.body!.errors!.every((e) => typeof e.extensions?.statusCode === 'number'));
  if (!refusedAsRequest) {
    const expected = expectedCodes(measureDoc(doc));
    const got = new Set((answer.body?.errors ?? []).map((e) => String(e.extensions?.code)));
    for (const code of LIMIT_CODES) {
      if (expected.has(code) && !got.has(code)) found.push(`expected ${code} (${JSON.stringify(measureDoc(doc))}), got ${[...got].join(', ') || 'no error'}`);
      if (!expected.has(code) && got.has(code)) found.push(`${code} for a document within that limit (${JSON.stringify(measureDoc(doc))})`);
    }
    if (expected.size > 0 && answer.body?.data !== undefined) found.push('a document over a limit ran');
  }
  if (found.length) failures.push(`${found.join('; ')}\n  request: ${request.slice(0, 1500)}\n  answer: HTTP ${answer.status} ${answer.text.slice(0, 600)}`);
  return found.length === 0;
}

// Shrinks a failure for at most 40 s (each try is a request), then reports the smallest found so far.
const SHRINK = { interruptAfterTimeLimit: 40_000, markInterruptAsFailure: true };
// BALLAST_FUZZ_SEED and BALLAST_FUZZ_RUNS explore further by hand; the defaults are what the suite runs.
const SEED = Number(process.env.BALLAST_FUZZ_SEED ?? 1313);
const RUNS = Number(process.env.BALLAST_FUZZ_RUNS ?? 150);
const BODY_RUNS = Math.max(120, Math.round(RUNS * 0.8));

t.test('generated documents: answers, codes, tenancy and limits', async (t) => {
  const result = await fc.check(fc.asyncProperty(docArb, fc.boolean(), checkDocument), { seed: SEED, numRuns: RUNS, ...SHRINK });
  t.notOk(result.failed, result.failed ? `counterexample after shrinking:\n${failures.at(-1)}` : `${RUNS} documents`);
});

t.test('fragments spreading fragments, repeatedly and deeply', async (t) => {
  const result = await fc.check(fc.asyncProperty(chainArb, (doc) => checkDocument(doc)), { seed: SEED + 1, numRuns: 40, ...SHRINK });
  t.notOk(result.failed, result.failed ? `counterexample after shrinking:\n${failures.at(-1)}` : '40 chains');
});

t.test('generated documents over the websocket (graphql-ws): answers with codes, nothing of bravo', async (t) => {
  let socket: WebSocket | undefined;
  let closeCode = 0;
  const inbox: { id?: string; type: string; payload?: any; raw: string }[] = [];
  let wake = () => {};
  const wait = (done: () => boolean) => new Promise<boolean>((resolve) => {
    const timer = setTimeout(() => resolve(false), 20_000);
    wake = () => { if (done()) { clearTimeout(timer); resolve(true); } };
    wake();
  });
  const open = async () => {
    const ws = new WebSocket(server.wsUrl, 'graphql-transport-ws');
    await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject));
    ws.on('error', () => {});
    closeCode = 0;
    ws.once('close', (code) => { closeCode = code; wake(); });
    ws.on('message', (m) => { const raw = String(m); inbox.push({ ...JSON.parse(raw), raw }); wake(); });
    ws.send(JSON.stringify({ type: 'connection_init', payload: { authorization: `Bearer ${alpha}` } }));
    if (!(await wait(() => inbox.some((m) => m.type === 'connection_ack')))) throw new Error('no connection_ack within 20 s');
    inbox.length = 0;
    socket = ws;
  };
  let n = 0;
  const result = await fc.check(fc.asyncProperty(docArb, async (doc) => {
    if (!socket || socket.readyState !== WebSocket.OPEN) await open();
    const id = String(++n);
    const { query, variables } = render(doc);
    const request = `{"id":"${id}","type":"subscribe","payload":{"query":${JSON.stringify(query)},"variables":${variables}}}`;
    const found: string[] = [];
    socket!.send(request);
    const ended = await wait(() => closeCode !== 0 || inbox.some((m) => m.id === id && (m.type === 'complete' || m.type === 'error')));
    if (!ended) found.push('no complete, error or close within 20 s');
    // A message the protocol refuses closes the socket (graphql-ws: 4400; too big: 1009); never an internal error.
    if (closeCode !== 0 && ![4400, 1009].includes(closeCode)) found.push(`the socket closed with ${closeCode}`);
    for (const m of inbox.filter((x) => x.id === id)) {
      const errors = m.type === 'error' ? m.payload : m.type === 'next' ? m.payload?.errors ?? [] : [];
      for (const e of errors) {
        if (typeof e?.extensions?.code !== 'string') found.push(`an error without extensions.code: ${JSON.stringify(e).slice(0, 300)}`);
        else if (e.extensions.code === 'INTERNAL_SERVER_ERROR') found.push(`an unexpected error: ${JSON.stringify(e).slice(0, 300)}`);
      }
      for (const secret of SECRETS) if (m.raw.includes(secret) && !request.includes(secret)) found.push(`tenant bravo's ${secret} in the answer`);
    }
    inbox.length = 0;
    if (found.length) failures.push(`websocket: ${found.join('; ')}\n  message: ${request.slice(0, 1500)}`);
    return found.length === 0;
  }), { seed: SEED + 3, numRuns: Math.round(RUNS / 2), ...SHRINK });
  socket?.close();
  t.notOk(result.failed, result.failed ? `counterexample after shrinking:\n${failures.at(-1)}` : `${Math.round(RUNS / 2)} documents`);
});

t.test('raw bodies: garbage bytes, broken JSON, odd media types', async (t) => {
  const bodyArb = fc.oneof(
    fc.uint8Array({ maxLength: 300 }),
    fc.string({ maxLength: 200, unit: 'binary' }).map((s) => Buffer.from(s)),
    fc.tuple(fc.constantFrom('{"query":"{ jobs { totalCount } }"', '{"query":', '{"query":"', '{"query":"{ __typename }","variables":', '[', '{"query":1}', '{"query":"{ __typename }","extensions":[]}', '{"query":"{ __typename }","operationName":7}'),
      fc.uint8Array({ maxLength: 40 })).map(([head, tail]) => Buffer.concat([Buffer.from(head), tail])),
    fc.constantFrom(deep(10_000), `{"query":"{ __typename }","variables":{"v":${deep(5000)}}}`, '"x"', 'null', '{}', '\u0000', '\ufeff{"query":"{ __typename }"}'),
  );
  const typeArb = fc.constantFrom<string | undefined>('application/json', 'application/json', 'application/graphql', 'application/json; charset=latin1', 'text/plain', 'multipart/form-data; boundary=x', 'application/x-www-form-urlencoded', undefined);
  const result = await fc.check(fc.asyncProperty(bodyArb, typeArb, async (body, contentType) => {
    const bytes = typeof body === 'string' ? Buffer.from(body) : Buffer.from(body);
    const answer = await post(bytes, contentType);
    const found = problems(bytes.toString('latin1'), answer);
    if (found.length) failures.push(`${found.join('; ')}\n  body (${contentType}): ${bytes.toString('hex').slice(0, 600)}\n  answer: HTTP ${answer.status} ${answer.text.slice(0, 600)}`);
    return found.length === 0;
  }), { seed: SEED + 2, numRuns: BODY_RUNS, ...SHRINK });
  t.notOk(result.failed, result.failed ? `counterexample after shrinking:\n${failures.at(-1)}` : `${BODY_RUNS} bodies`);
});

t.test('after the run: the server is healthy and bravo is untouched', async (t) => {
  const health = await fetch(server.url.replace('/graphql', '/health'), { signal: AbortSignal.timeout(20_000) });
  t.equal(health.status, 200, '/health answers');
  t.same(await bravoState(), bravoBefore, "tenant bravo's jobs are as they were");
  t.comment(`outcomes: ${[...outcomes].sort((a, b) => b[1] - a[1]).map(([k, n]) => `${k}: ${n}`).join('; ')}`);
  if (failures.length) t.comment(`all failures:\n${failures.join('\n')}`);
});
