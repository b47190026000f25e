// ballast.json_schema_errors: the PL/pgSQL JSON Schema validator (migrations/0003_json_schema.sql) that checks job
// input at the database boundary. Contracts here are real zod 4 output (z.toJSONSchema with io: 'input'), the same
// thing ballast stores for every pipeline.
import t from 'tap';
import { z } from 'zod';
import { testDatabase } from './helpers.ts';

type Row = { path: string; message: string };

const db = await testDatabase(t);

const contract = (schema: z.ZodType): unknown => z.toJSONSchema(schema, { io: 'input' });

async function errorsFor(schema: unknown, value: unknown): Promise<Row[]> {
  const { rows } = await db.query<Row>(
    'select path, message from ballast.json_schema_errors($1::jsonb, $2::jsonb)',
    [JSON.stringify(schema), JSON.stringify(value)],
  );
  return rows;
}

const lines = (rows: Row[]): string[] => rows.map((r) => `${r.path}: ${r.message}`);

const Order = z.strictObject({
  name: z.string().min(1).max(10).regex(/^[a-z]+$/),
  priority: z.enum(['low', 'high']),
  attempts: z.number().int().min(1).max(5),
  customer: z.object({
    email: z.email(),
    address: z.object({ zip: z.string().length(5) }),
  }),
  items: z.array(z.object({ sku: z.string(), qty: z.int().min(1) })).min(1).max(10),
  note: z.string().optional(),
});

t.test('valid input gives zero rows', async (t) => {
  const valid = [
    {
      name: 'widget',
      priority: 'low',
      attempts: 1,
      customer: { email: 'ann@example.com', address: { zip: '12345' } },
      items: [{ sku: 'a', qty: 1 }],
    },
    {
      name: 'gadget',
      priority: 'high',
      attempts: 5,
      customer: { email: 'bob.smith@example.org', address: { zip: '99999' }, extra: 'non-strict objects allow it' },
      items: [{ sku: 'a', qty: 2 }, { sku: 'b', qty: 30 }],
      note: 'fragile',
    },
  ];
  for (const value of valid) {
    t.equal(Order.safeParse(value).success, true, 'zod accepts the sample');
    t.same(await errorsFor(contract(Order), value), [], `no errors for ${value.name}`);
  }
});

t.test('one invalid input reports every violation with its path', async (t) => {
  const value = {
    name: 'Not-Valid-Name', // too long and fails the pattern
    priority: 'medium', // not in the enum
    attempts: 0, // below the minimum
    customer: { email: 'nope', address: {} }, // bad email, zip missing
    items: [{ sku: 'a', qty: 1 }, { sku: 'b', qty: 1.5 }, { qty: 'x' }], // non-integer, missing sku, wrong type
    unexpected: true, // strict object: unknown key
  };
  t.equal(Order.safeParse(value).success, false, 'zod rejects it too');
  const rows = await errorsFor(contract(Order), value);
  t.same(
    lines(rows).sort(),
    [
      'name: must have at most 10 characters; got 14',
      'name: must match pattern ^[a-z]+$; got "Not-Valid-Name"',
      'priority: must be one of "low", "high"; got "medium"',
      'attempts: must be >= 1; got 0',
      'customer.email: must be a valid email address; got "nope"',
      'customer.address.zip: required property is missing',
      'items[1].qty: must be an integer; got 1.5',
      'items[2].sku: required property is missing',
      'items[2].qty: expected integer, got string',
      'unexpected: unknown property (not allowed by the contract)',
    ].sort(),
  );
  t.same(lines(await errorsFor(contract(Order), value)), lines(rows), 'the order of the rows is deterministic');

  t.same(lines(await errorsFor(contract(Order), 'order')), [': expected object, got string'], 'root path is empty');
  t.same(
    lines(await errorsFor(contract(Order), { ...value, items: [] })).filter((l) => l.startsWith('items')),
    ['items: must have at least 1 item(s); got 0'],
    'array bounds',
  );
});

t.test('keys that are not identifiers are quoted in paths', async (t) => {
  const schema = contract(z.object({ 'weird key': z.object({ 'a.b': z.number() }) }));
  t.same(lines(await errorsFor(schema, { 'weird key': { 'a.b': 'x' } })), [
    '["weird key"]["a.b"]: expected number, got string',
  ]);
});

t.test('nullable and optional', async (t) => {
  const schema = contract(
    z.object({
      nickname: z.string().nullable(),
      age: z.number().optional(),
      address: z.object({ city: z.string() }).nullable(),
      retries: z.number().default(3),
    }),
  );
  t.same(await errorsFor(schema, { nickname: null, address: null }), [], 'null where nullable, optional omitted');
  t.same(await errorsFor(schema, { nickname: 'x', age: 3, address: { city: 'Oslo' }, retries: 1 }), []);
  t.same(lines(await errorsFor(schema, {})).sort(), [
    'address: required property is missing',
    'nickname: required property is missing',
  ], 'nullable is not optional');
  t.same(lines(await errorsFor(schema, { nickname: 5, address: 5, age: null })).sort(), [
    'address: expected object or null, got number',
    'age: expected number, got null',
    'nickname: expected string or null, got number',
  ]);
  t.same(lines(await errorsFor(schema, { nickname: null, address: {} })), [
    'address.city: required property is missing',
  ], 'errors inside the non-null branch are reported at their own path');
});

t.test('unions', async (t) => {
  const plain = contract(z.union([z.string(), z.number()]));
  t.same(await errorsFor(plain, 'x'), []);
  t.same(await errorsFor(plain, 1), []);
  t.same(lines(await errorsFor(plain, true)), [': expected string or number, got boolean']);

  const shapes = contract(z.union([z.object({ a: z.string() }), z.object({ b: z.number() })]));
  t.same(await errorsFor(shapes, { b: 2 }), []);
  const rows = await errorsFor(shapes, { b: 'two' });
  t.match(rows[0], { path: '', message: /does not match any of the 2 allowed shapes/ }, 'one error at the union');
  t.same(rows.slice(1), [{ path: 'b', message: 'expected number, got string' }], 'then the closest branch');

  const event = contract(
    z.discriminatedUnion('kind', [
      z.object({ kind: z.literal('email'), to: z.email() }),
      z.object({ kind: z.literal('sms'), phone: z.string().min(3) }),
    ]),
  );
  t.same(await errorsFor(event, { kind: 'sms', phone: '12345' }), []);
  t.same(lines(await errorsFor(event, { kind: 'sms', phone: '1' })), [
    'phone: must have at least 3 characters; got 1',
  ], 'the branch chosen by the discriminator explains the failure');
  t.same(lines(await errorsFor(event, { kind: 'fax' })), ['kind: must be one of "email", "sms"; got "fax"']);
  t.same(lines(await errorsFor(event, {})), ['kind: required property is missing (must be one of "email", "sms")']);

  const literals = contract(z.union([z.literal(1), z.literal(2)]));
  t.same(lines(await errorsFor(literals, 3)), [': must be one of 1, 2; got 3']);
});

t.test('tuples and records', async (t) => {
  const pair = contract(z.tuple([z.string(), z.number()]));
  t.same(await errorsFor(pair, ['a', 1]), []);
  t.same(lines(await errorsFor(pair, [1, 'a'])), ['[0]: expected string, got number', '[1]: expected number, got string']);
  t.same(lines(await errorsFor(pair, ['a', 1, 2])), [': must have at most 2 item(s); got 3']);

  const scores = contract(z.record(z.enum(['math', 'art']), z.number().min(0)));
  t.same(await errorsFor(scores, { math: 1, art: 0 }), []);
  t.same(lines(await errorsFor(scores, { math: -1, gym: 2 })).sort(), [
    'art: required property is missing',
    'gym: invalid property name: must be one of "math", "art"; got "gym"',
    'math: must be >= 0; got -1',
  ]);
});

t.test('recursive schemas through $ref', async (t) => {
  const Category: z.ZodType = z.object({
    name: z.string().min(1),
    get children() {
      return z.array(Category).optional();
    },
  });
  const tree = contract(Category) as { properties: { children: { items: { $ref: string } } } };
  t.equal(tree.properties.children.items.$ref, '#', 'zod emits a root $ref');
  t.same(await errorsFor(tree, { name: 'a', children: [{ name: 'b', children: [{ name: 'c' }] }] }), []);
  t.same(lines(await errorsFor(tree, { name: 'a', children: [{ name: 'b', children: [{ name: '' }, {}] }] })), [
    'children[0].children[0].name: must have at least 1 character; got 0',
    'children[0].children[1].name: required property is missing',
  ]);

  const Node = z.object({ id: z.int(), get next(): z.ZodOptional<typeof Node> { return Node.optional(); } })
    .meta({ id: 'Node' });
  const list = contract(z.object({ head: Node })) as { $defs?: Record<string, unknown> };
  t.ok(list.$defs?.Node, 'zod emits $defs');
  t.same(await errorsFor(list, { head: { id: 1, next: { id: 2 } } }), []);
  t.same(lines(await errorsFor(list, { head: { id: 1, next: { id: 2, next: { id: 'x' } } } })), [
    'head.next.next.id: expected integer, got string',
  ]);
});

t.test('a pattern Postgres cannot compile is skipped, not fatal', async (t) => {
  const emoji = contract(z.emoji()) as { pattern: string };
  t.match(emoji.pattern, /\\p\{/, 'zod emits a \\p{...} pattern, which Postgres regexes do not support');
  t.same(await errorsFor(emoji, 'not an emoji'), [], 'the pattern check is skipped');
  t.same(lines(await errorsFor(emoji, 5)), [': expected string, got number'], 'other checks still run');

  const handMade = { type: 'string', maxLength: 3, pattern: '(?<named>x' };
  t.same(lines(await errorsFor(handMade, 'abcd')), [': must have at most 3 characters; got 4']);
});

t.test('verdicts agree with zod safeParse', async (t) => {
  const cases: Array<[z.ZodType, unknown[]]> = [
    [Order, [{}, null, [], { name: 'a', priority: 'low', attempts: 1, customer: { email: 'a@b.co', address: { zip: '12345' } }, items: [{ sku: 'a', qty: 1 }] }]],
    [z.number().gt(0).lt(1).multipleOf(0.25), [0, 0.25, 0.5, 0.3, 1, '0.5']],
    [z.string().startsWith('ab').endsWith('z'), ['abz', 'abcz', 'xabz', 'ab']],
    [z.uuid(), ['123e4567-e89b-12d3-a456-426614174000', '123e4567-e89b-92d3-a456-426614174000', 'x']],
    [z.iso.datetime(), ['2024-02-29T10:00:00Z', '2023-02-29T10:00:00Z', '2024-01-01']],
    [z.array(z.string()).nonempty().max(2), [[], ['a'], ['a', 'b', 'c'], [1]]],
    [z.tuple([z.string()], z.number()), [['a'], ['a', 1, 2], ['a', 'b']]],
    [z.object({ tags: z.array(z.string()).default([]) }), [{}, { tags: ['a'] }, { tags: [1] }]],
    [z.string().regex(/\bcat\b/), ['a cat', 'concat']],
  ];
  for (const [schema, samples] of cases) {
    for (const sample of samples) {
      const rows = await errorsFor(contract(schema), sample);
      t.equal(rows.length === 0, schema.safeParse(sample).success, `${JSON.stringify(sample)}: ${lines(rows).join('; ')}`);
    }
  }
});

// Issue 13: validation stops working after 100 violations (migrations/0003_json_schema.sql), so a huge wrong
// input costs what 100 violations cost. The contract callers rely on: at most 100 real rows, then ONE final row with
// path '' and this message when it stopped early.
const STOPPED = 'stopped after 100 violations; the value may have more';

t.test('a 100,000-item input with every item wrong stops after 100 violations', async (t) => {
  const schema = { type: 'array', items: { type: 'object', required: ['sku'], properties: { qty: { type: 'integer' } } } };
  const value = Array.from({ length: 100_000 }, () => ({ qty: 'many' }));
  const started = Date.now();
  const rows = await errorsFor(schema, value);
  const ms = Date.now() - started;
  t.equal(rows.length, 101, '100 violations and the marker row');
  t.same(rows.at(-1), { path: '', message: STOPPED }, 'the last row says it stopped');
  t.same(rows.slice(0, 4), [
    { path: '[0].qty', message: 'expected integer, got string' },
    { path: '[0].sku', message: 'required property is missing' },
    { path: '[1].qty', message: 'expected integer, got string' },
    { path: '[1].sku', message: 'required property is missing' },
  ], 'the first violations in walk order');
  t.ok(rows.slice(0, 100).every((r) => r.message !== STOPPED), 'the marker appears only once, at the end');
  const size = rows.reduce((n, r) => n + r.path.length + r.message.length, 0);
  t.ok(size < 10_000, `the whole error stays small (${size} characters)`);
  t.ok(ms < 20_000, `it stops working early (${ms} ms; generous bound for a shared machine)`);
});

t.test('exactly 100 violations: 100 rows and no marker; 101: 100 rows and the marker', async (t) => {
  const schema = { type: 'array', items: { type: 'integer' } };
  const hundred = await errorsFor(schema, [...Array.from({ length: 100 }, () => 'x'), 1, 2, 3]);
  t.equal(hundred.length, 100);
  t.notOk(hundred.some((r) => r.message === STOPPED), 'no marker');
  t.same(hundred[99], { path: '[99]', message: 'expected integer, got string' });
  const more = await errorsFor(schema, Array.from({ length: 101 }, () => 'x'));
  t.equal(more.length, 101);
  t.same(more[100], { path: '', message: STOPPED });
  t.same(more[99], { path: '[99]', message: 'expected integer, got string' });
});

t.test('the cap holds through combinators, uniqueItems and contains', async (t) => {
  const many = Array.from({ length: 5000 }, (_, i) => i % 3);
  const unique = await errorsFor({ type: 'array', uniqueItems: true }, many);
  t.equal(unique.length, 101, 'duplicates are capped');
  t.same(unique[0], { path: '[3]', message: 'duplicate item (same as item 0); items must be unique' });
  const union = await errorsFor(
    { anyOf: [{ type: 'array', items: { type: 'string' } }, { type: 'array', items: { type: 'boolean' } }] },
    many,
  );
  t.equal(union.length, 101, 'anyOf: the explanation is capped too');
  t.equal(union.at(-1)?.message, STOPPED);
  const allOf = await errorsFor({ allOf: [{ type: 'array', items: { type: 'string' } }, { items: { maximum: -1 } }] }, many);
  t.equal(allOf.length, 101);
  t.same(await errorsFor({ type: 'array', contains: { const: 2 }, maxContains: 2 }, many), [
    { path: '', message: 'must contain at most 2 item(s) of the given shape; got 3 or more' },
  ], 'contains stops counting once the answer is known');
});

t.test('messages stay short whatever the value, key or schema', async (t) => {
  const huge = 'x'.repeat(1_000_000);
  const enumValues = Array.from({ length: 10_000 }, (_, i) => `value-${i}-${'y'.repeat(100)}`);
  const rows = [
    ...(await errorsFor({ enum: enumValues }, huge)),
    ...(await errorsFor({ const: huge }, 'short')),
    ...(await errorsFor({ type: 'string', pattern: `^${'a'.repeat(5000)}$` }, huge)),
    ...(await errorsFor({ type: 'object', additionalProperties: false }, { [huge]: 1 })),
    ...(await errorsFor({ type: 'object', propertyNames: { maxLength: 3 } }, { [huge]: 1 })),
    ...(await errorsFor({ oneOf: Array.from({ length: 50 }, () => ({})) }, 1)),
    ...(await errorsFor({ type: 'object', properties: { kind: { enum: enumValues } }, required: ['kind'] }, { kind: huge })),
  ];
  t.equal(rows.length, 7);
  for (const r of rows) {
    t.ok(r.message.length <= 500 && r.path.length <= 100, `short: ${r.path.slice(0, 20)}: ${r.message.slice(0, 80)}`);
  }
  t.match(rows[0]?.message, /^must be one of "value-0-y+\.\.\., .*, \.\.\. \(\d+ more\); got "x+\.\.\.$/, 'the first allowed values, then how many more');
});
