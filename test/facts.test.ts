// One source for each fact: where a fact has to be written in more than one place (SQL and TypeScript, code and
// documentation), this file checks that the copies agree, so that a change to one of them fails here instead of
// drifting. The TypeScript side holds each fact once:
//   - the error catalogue: SQLSTATE_CODES (src/errors.ts) against ballast.error_codes, the documentation's table of
//     errors and the GraphQL mapping (src/server/errors.ts);
//   - the statuses: src/statuses.ts against the state machines (ballast.job_transitions, step_transitions) and
//     every hand-written list of statuses in the SQL functions, views, constraints and index predicates;
//   - the worker defaults: src/worker/defaults.ts against the documentation's configuration table, the CLI's help
//     and the defaults of the SQL functions that take the same values;
//   - the NOTIFY payloads: what the SQL sends on ballast_events and ballast_cancel is what
//     src/db/event-notifications.ts accepts;
//   - the kysely row types: src/db/schema.ts against the columns of the views it describes.
// The documentation is found by the header of its table, in README.md or any file under docs/, wherever it lives.
import t from 'tap';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import pg from 'pg';
import ts from 'typescript';
import { freshDatabase, registerTestWorker, repoRoot } from './helpers.ts';
import { SQLSTATE_CODES } from '../src/errors.ts';
import { describePgError } from '../src/server/errors.ts';
import { FINAL_JOB_STATUSES, FINAL_STEP_STATUSES, JOB_STATUSES, STEP_STATUSES } from '../src/statuses.ts';
import { WORKER_DEFAULTS, WORKER_SETTINGS } from '../src/worker/defaults.ts';
import { CHANNELS, parseAnnouncement, parseCancelNotice } from '../src/db/event-notifications.ts';

const { pool, db, url } = await freshDatabase(t);

const sorted = (xs: Iterable<string>) => [...new Set(xs)].sort();

// --- The documentation's tables -----------------------------------------------------------------------------------

function markdownFiles(): string[] {
  const files = [join(repoRoot, 'README.md')];
  const walk = (dir: string) => {
    let names: string[];
    try {
      names = readdirSync(dir);
    } catch {
      return;
    }
    for (const name of names.sort()) {
      const path = join(dir, name);
      if (statSync(path).isDirectory()) walk(path);
      else if (name.endsWith('.md')) files.push(path);
    }
  };
  walk(join(repoRoot, 'docs'));
  return files;
}

const cellsOf = (line: string) => line.trim().replace(/^\|/, '').replace(/\|$/, '').split('|').map((c) => c.trim());
const unquote = (cell: string) => cell.replace(/^`(.*)`$/, '$1');

/** Every markdown table whose header is `header` (cells compared case-insensitively), with the file it is in. */
function tablesWithHeader(header: string[]): { file: string; rows: string[][] }[] {
  const want = header.map((h) => h.toLowerCase());
  const found: { file: string; rows: string[][] }[] = [];
  for (const file of markdownFiles()) {
    const lines = readFileSync(file, 'utf8').split('\n');
    for (let i = 0; i + 1 < lines.length; i++) {
      if (!lines[i]!.trim().startsWith('|')) continue;
      const cells = cellsOf(lines[i]!).map((c) => c.toLowerCase());
      if (cells.length !== want.length || cells.some((c, k) => c !== want[k]) || !/^\s*\|?\s*:?-{3,}/.test(lines[i + 1]!)) continue;
      const rows: string[][] = [];
      for (let j = i + 2; j < lines.length && lines[j]!.trim().startsWith('|'); j++) rows.push(cellsOf(lines[j]!));
      found.push({ file: file.slice(repoRoot.length), rows });
    }
  }
  return found;
}

// --- 1. The error catalogue ---------------------------------------------------------------------------------------

t.test('the error catalogue: SQLSTATE_CODES, ballast.error_codes, the documentation and the GraphQL mapping agree', async (t) => {
  const { rows } = await pool.query<{ sqlstate: string; name: string }>('select sqlstate, name from ballast.error_codes order by sqlstate');
  t.ok(rows.length >= 14, 'the database has its catalogue');
  t.same(Object.entries(SQLSTATE_CODES).sort(), rows.map((r) => [r.sqlstate, r.name]),
    'src/errors.ts SQLSTATE_CODES lists exactly the SQLSTATEs and names of ballast.error_codes');

  const tables = tablesWithHeader(['SQLSTATE', 'code', 'when']);
  t.ok(tables.length > 0, 'the documentation has a table of errors (header "| SQLSTATE | code | when |", README.md or docs/)');
  for (const table of tables) {
    const documented = table.rows.map((r) => [unquote(r[0]!), unquote(r[1]!)]).sort();
    t.same(documented, Object.entries(SQLSTATE_CODES).sort(), `${table.file}: the table of errors lists every SQLSTATE with its code`);
    t.ok(table.rows.every((r) => (r[2] ?? '').length > 0), `${table.file}: every error says when it is raised`);
  }

  for (const [sqlstate, code] of Object.entries(SQLSTATE_CODES)) {
    const err = Object.assign(new Error(`raised ${sqlstate}`), { code: sqlstate, severity: 'ERROR' });
    const described = describePgError(err);
    t.match(described, { message: `raised ${sqlstate}`, extensions: { code: code.toUpperCase(), sqlstate } },
      `GraphQL gives ${sqlstate} the code ${code.toUpperCase()}`);
  }
});

// --- 2. The statuses ----------------------------------------------------------------------------------------------

/** The statuses of a state machine and the final ones: those left only by a replay edge. */
async function machine(view: string): Promise<{ all: string[]; final: string[] }> {
  const { rows } = await pool.query<{ from_status: string; to_status: string; via_replay: boolean }>(
    `select from_status, to_status, via_replay from ${view}`);
  const all = sorted(rows.flatMap((r) => [r.from_status, r.to_status]));
  const final = all.filter((s) => !rows.some((r) => r.from_status === s && !r.via_replay));
  return { all, final };
}

t.test('src/statuses.ts says what the state machines say', async (t) => {
  const jobs = await machine('ballast.job_transitions');
  const steps = await machine('ballast.step_transitions');
  t.same(sorted(JOB_STATUSES), jobs.all, 'JOB_STATUSES: every status of ballast.job_transitions');
  t.same(sorted(FINAL_JOB_STATUSES), jobs.final, 'FINAL_JOB_STATUSES: the job statuses left only through a replay');
  t.same(sorted(STEP_STATUSES), steps.all, 'STEP_STATUSES: every status of ballast.step_transitions');
  t.same(sorted(FINAL_STEP_STATUSES), steps.final, 'FINAL_STEP_STATUSES: the step statuses left only through a replay');
});

const minus = (from: readonly string[], ...drop: (readonly string[] | string)[]) =>
  from.filter((s) => !drop.some((d) => (typeof d === 'string' ? d === s : d.includes(s))));
const LIVE_STEP = minus(STEP_STATUSES, FINAL_STEP_STATUSES);
// A live step that was started or is ready to start (pending steps wait for their dependencies, scheduled ones for
// their job's start time).
const ACTIVE_STEP = minus(LIVE_STEP, 'pending', 'scheduled');

/**
 * Every hand-written list of statuses in the SQL, by the object it is in, and what it is meant to be in terms of the
 * lists of src/statuses.ts. A list that is not here, or that differs from what it is meant to be, fails the test:
 * when a status is added, every list that must change shows up; when a list is written anew, it must be named here.
 */
const SQL_STATUS_LISTS: { in: string; meaning: string; is: readonly string[] }[] = [
  { in: 'constraint ballast_private.jobs.job_status_known', meaning: 'every job status', is: JOB_STATUSES },
  { in: 'constraint ballast_private.jobs.job_finished_when_terminal', meaning: 'final job statuses', is: FINAL_JOB_STATUSES },
  { in: 'constraint ballast_private.steps.step_status_known', meaning: 'every step status', is: STEP_STATUSES },
  { in: 'index ballast_private.jobs_live_idx', meaning: 'final job statuses (excluded)', is: FINAL_JOB_STATUSES },
  { in: 'index ballast_private.steps_live_idx', meaning: 'active step statuses', is: ACTIVE_STEP },
  { in: 'view ballast.queue_depth', meaning: 'active step statuses', is: ACTIVE_STEP },
  { in: 'index ballast_private.jobs_expiry_idx', meaning: 'job statuses of a job not started yet (its expiry applies)', is: ['scheduled', 'queued'] },
  { in: 'function ballast_private.expire_jobs', meaning: 'job statuses of a job not started yet (its expiry applies)', is: ['scheduled', 'queued'] },
  { in: 'function ballast_private.expire_jobs', meaning: 'live step statuses (failed or skipped at a deadline)', is: LIVE_STEP },
  { in: 'function ballast.claim_steps', meaning: 'job statuses of a job not started yet (its expiry applies)', is: ['scheduled', 'queued'] },
  { in: 'function ballast.reap', meaning: 'job statuses of a job not started yet (its expiry applies)', is: ['scheduled', 'queued'] },
  { in: 'function ballast_private.steps_inserted', meaning: 'step statuses that announce work on ballast_queue (queued, or scheduled: a worker sets a timer)', is: ['queued', 'scheduled'] },
  { in: 'function ballast.replay_step', meaning: 'live step statuses but scheduled (a replay would race them; a scheduled step is not started, replaying it starts it now)', is: minus(LIVE_STEP, 'scheduled') },
  { in: 'function ballast.replay_step', meaning: 'active step statuses', is: ACTIVE_STEP },
  { in: 'function ballast.replay_job', meaning: 'final step statuses that did not succeed, skipped aside', is: minus(FINAL_STEP_STATUSES, 'succeeded', 'skipped') },
  { in: 'function ballast.recount_job', meaning: 'final step statuses', is: FINAL_STEP_STATUSES },
  { in: 'function ballast.recount_job', meaning: 'final step statuses but success', is: minus(FINAL_STEP_STATUSES, 'succeeded') },
  { in: 'function ballast_private.apply_step_deltas', meaning: 'final step statuses', is: FINAL_STEP_STATUSES },
  { in: 'function ballast_private.apply_step_deltas', meaning: 'final step statuses but success', is: minus(FINAL_STEP_STATUSES, 'succeeded') },
  { in: 'function ballast_private.cancel_job', meaning: 'final job statuses but cancelled (nothing to cancel)', is: minus(FINAL_JOB_STATUSES, 'cancelled') },
  { in: 'function ballast_private.cancel_job', meaning: 'live step statuses (cancelled with the job)', is: LIVE_STEP },
  { in: 'function ballast_private.update_job_counters', meaning: 'final job statuses', is: FINAL_JOB_STATUSES },
  { in: 'function ballast_private.update_job_counters', meaning: 'final job statuses that count as success', is: minus(FINAL_JOB_STATUSES, 'failed', 'cancelled') },
  { in: 'function ballast.report_pipelines', meaning: 'final job statuses', is: FINAL_JOB_STATUSES },
  { in: 'function ballast.report_pipelines', meaning: 'final job statuses but cancelled (the failure rate)', is: minus(FINAL_JOB_STATUSES, 'cancelled') },
  { in: 'function ballast.report_steps', meaning: 'final step statuses', is: FINAL_STEP_STATUSES },
  { in: 'function ballast.prune_token_chunks', meaning: 'final step statuses', is: FINAL_STEP_STATUSES },
];

t.test('every hand-written list of statuses in the SQL is one of the lists of src/statuses.ts, or derived from them', async (t) => {
  const { rows } = await pool.query<{ object: string; text: string }>(`
    select 'function ' || n.nspname || '.' || p.proname as object, p.prosrc as text
      from pg_proc p join pg_namespace n on n.oid = p.pronamespace
     where n.nspname in ('ballast', 'ballast_private') and p.prolang <> (select oid from pg_language where lanname = 'internal')
    union all
    select 'view ' || c.oid::regclass::text, pg_get_viewdef(c.oid)
      from pg_class c join pg_namespace n on n.oid = c.relnamespace
     where n.nspname in ('ballast', 'ballast_private') and c.relkind in ('v', 'm')
    union all
    select 'constraint ' || co.conrelid::regclass::text || '.' || co.conname, pg_get_constraintdef(co.oid)
      from pg_constraint co join pg_namespace n on n.oid = co.connamespace
     where n.nspname in ('ballast', 'ballast_private') and co.contype = 'c'
    union all
    select 'index ' || i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid)
      from pg_index i join pg_class c on c.oid = i.indexrelid join pg_namespace n on n.oid = c.relnamespace
     where n.nspname in ('ballast', 'ballast_private') and i.indpred is not null
    union all
    select 'trigger ' || tg.tgrelid::regclass::text || '.' || tg.tgname, pg_get_triggerdef(tg.oid)
      from pg_trigger tg join pg_class c on c.oid = tg.tgrelid join pg_namespace n on n.oid = c.relnamespace
     where n.nspname in ('ballast', 'ballast_private') and not tg.tgisinternal and tg.tgqual is not null`);
  t.ok(rows.some((r) => r.object === 'function ballast_private.cancel_job'), 'the definitions are read');
  const statuses = new Set<string>([...JOB_STATUSES, ...STEP_STATUSES]);
  const found: { in: string; list: string[] }[] = [];
  for (const r of rows) {
    const text = r.text.replace(/--[^\n]*/g, ''); // a list in a comment is no definition
    for (const m of text.matchAll(/'[a-z_]+'(?:::text)?(?:\s*,\s*'[a-z_]+'(?:::text)?)+/g)) {
      const words = [...m[0].matchAll(/'([a-z_]+)'/g)].map((w) => w[1]!);
      if (words.every((w) => statuses.has(w))) found.push({ in: r.object, list: words });
    }
  }
  t.ok(found.length >= SQL_STATUS_LISTS.length, `${found.length} lists of statuses found`);
  const used = new Set<number>();
  for (const f of found) {
    const at = SQL_STATUS_LISTS.findIndex((e) => e.in === f.in && sorted(e.is).join() === sorted(f.list).join());
    if (at >= 0) used.add(at);
    const meant = SQL_STATUS_LISTS.filter((e) => e.in === f.in).map((e) => `${e.meaning}: ${sorted(e.is).join(', ')}`);
    t.ok(at >= 0, `${f.in}: (${f.list.join(', ')}) is one of the known lists`, { meant_one_of: meant });
  }
  for (const [i, e] of SQL_STATUS_LISTS.entries()) {
    t.ok(used.has(i), `${e.in} still has its list of ${e.meaning} (${sorted(e.is).join(', ')})`);
  }
});

// --- 3. The worker defaults ---------------------------------------------------------------------------------------

t.test('the worker defaults: one object, documented as it is, and the same as the SQL functions\' defaults', async (t) => {
  const tables = tablesWithHeader(['variable', 'default', 'meaning']);
  t.ok(tables.length > 0, 'the documentation has a configuration table (header "| variable | default | meaning |", README.md or docs/)');
  // A page may split its variables over several such tables (the worker's, the providers'...): each setting must be
  // in one of them, and every row that names it must give the default the code uses.
  for (const { env, key } of WORKER_SETTINGS) {
    const rows = tables.flatMap((table) => table.rows.filter((r) => unquote(r[0]!) === env).map((r) => ({ file: table.file, r })));
    t.ok(rows.length > 0, `a configuration table lists ${env}`);
    for (const { file, r } of rows) t.equal(unquote(r[1]!), String(WORKER_DEFAULTS[key]), `${file}: ${env} defaults to ${WORKER_DEFAULTS[key]}`);
  }

  // The CLI's help comes from the same object (and `ballast help` loads no database module to print it).
  const help = spawnSync(process.execPath, [join(repoRoot, 'src/cli.ts'), 'help'], { cwd: repoRoot, encoding: 'utf8', env: { ...process.env, LOG_LEVEL: 'silent' } });
  t.equal(help.status, 0, 'ballast help exits 0');
  for (const { env, key } of WORKER_SETTINGS) {
    t.match(help.stdout, new RegExp(`^  ${env} [^\\n]*(?:\\n {20,}[^\\n]*)*?\\(default ${WORKER_DEFAULTS[key]}\\)$`, 'm'), `ballast help: ${env} (default ${WORKER_DEFAULTS[key]})`);
  }

  // The SQL verbs a worker calls take the same values, with defaults for callers from psql.
  const { rows } = await pool.query<{ fn: string; args: string }>(`
    select p.oid::regprocedure::text as fn, pg_get_function_arguments(p.oid) as args
      from pg_proc p join pg_namespace n on n.oid = p.pronamespace
     where n.nspname in ('ballast', 'ballast_private')`);
  const sqlDefaults: [RegExp, number][] = [
    [/\bp_lease_ms integer DEFAULT (\d+)/, WORKER_DEFAULTS.leaseMs],
    [/\bp_dead_after_ms integer DEFAULT (\d+)/, WORKER_DEFAULTS.deadAfterMs],
    [/\bp_lost_after_ms integer DEFAULT (\d+)/, WORKER_DEFAULTS.lostAfterMs],
    [/\bp_quarantine_after integer DEFAULT (\d+)/, WORKER_DEFAULTS.quarantineAfter],
  ];
  let checked = 0;
  for (const r of rows) {
    for (const [re, value] of sqlDefaults) {
      const m = re.exec(r.args);
      if (!m) continue;
      checked++;
      t.equal(Number(m[1]), value, `${r.fn}: ${re.source.split(' ')[0]!.replace('\\b', '')} defaults to ${value}`);
    }
  }
  t.ok(checked >= 4, `${checked} SQL defaults checked`);
});

// --- 4. The NOTIFY payloads ---------------------------------------------------------------------------------------

t.test('what the SQL sends on ballast_events, ballast_queue and ballast_cancel is what the parsers accept', async (t) => {
  await db.registerPipeline('facts.p', 1, {
    steps: [
      { name: 'a', depends_on: [], max_attempts: 1, backoff_base_ms: 0, backoff_cap_ms: 0 },
      { name: 'b', depends_on: ['a'], max_attempts: 1, backoff_base_ms: 0, backoff_cap_ms: 0 },
    ],
  }, {});
  const workerId = await registerTestWorker(db, 'facts-worker');

  const listener = new pg.Client({ connectionString: url });
  await listener.connect();
  t.teardown(() => listener.end());
  const received: { channel: string; payload: string }[] = [];
  let fenceSeen: ((n: number) => void) | undefined;
  listener.on('notification', (m) => {
    if (m.channel === 'facts_fence') fenceSeen?.(Number(m.payload));
    else received.push({ channel: m.channel, payload: m.payload ?? '' });
  });
  for (const channel of [...Object.values(CHANNELS), 'facts_fence']) await listener.query(`listen ${channel}`);
  let fences = 0;
  /** The notifications sent since the last call (a fence notification, sent last, marks the end). */
  const drain = async () => {
    const fence = ++fences;
    const seen = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`fence ${fence} did not arrive within 20 s`)), 20_000);
      fenceSeen = (n) => {
        if (n === fence) {
          clearTimeout(timer);
          resolve();
        }
      };
    });
    await pool.query(`select pg_notify('facts_fence', $1)`, [String(fence)]);
    await seen;
    return received.splice(0);
  };
  const on = (got: { channel: string; payload: string }[], channel: string) => got.filter((n) => n.channel === channel).map((n) => n.payload);

  // A submission: events (ids) and a wake-up for the queued step.
  const { jobId } = await db.submitJob({ pipeline: 'facts.p', input: {} });
  let got = await drain();
  t.ok(on(got, CHANNELS.events).length > 0, 'a submission notifies ballast_events');
  for (const p of on(got, CHANNELS.events)) t.match(parseAnnouncement(p), { kind: 'ids' }, `submission: ${p} parses as ids`);
  t.ok(on(got, CHANNELS.queue).length > 0, 'and ballast_queue');
  t.ok(on(got, CHANNELS.queue).every((p) => p === ''), 'ballast_queue carries no payload (a wake-up)');

  // A progress report.
  const [stepA] = (await db.getSteps(jobId)).filter((s) => s.name === 'a');
  const claim = await db.claimStep(stepA!.id, workerId, WORKER_DEFAULTS.leaseMs);
  t.ok(claim, 'step a is claimed');
  await drain();
  t.equal(await db.reportProgress(claim!.attemptId, { done: 1 }), true);
  got = await drain();
  t.same(on(got, CHANNELS.events).map(parseAnnouncement), [{ kind: 'progress', jobId: Number(jobId), stepId: Number(stepA!.id) }],
    'a progress report parses as progress, naming the job and the step');

  // A worker's batch (settle_and_claim collects the events and sends one notification at its end).
  await db.settleAndClaim({ workerId, ok: [claim!.attemptId], outputs: ['{}'], failed: [], errors: [], tasks: [], n: 0, leaseMs: WORKER_DEFAULTS.leaseMs });
  got = await drain();
  t.ok(on(got, CHANNELS.events).length > 0, 'a settled batch notifies ballast_events');
  for (const p of on(got, CHANNELS.events)) t.match(parseAnnouncement(p), { kind: 'ids' }, `settled batch: ${p} parses as ids`);

  // Too many events for an id list: a range.
  await pool.query(`insert into ballast_private.events (job_id, type, actor) select $1, 'facts_note', 'facts' from generate_series(1, 1500)`, [jobId]);
  got = await drain();
  t.match(on(got, CHANNELS.events).map(parseAnnouncement), [{ kind: 'range', count: 1500 }], '1,500 events in one statement parse as a range');

  // A cancellation of a running attempt.
  const [stepB] = (await db.getSteps(jobId)).filter((s) => s.name === 'b');
  const claimB = await db.claimStep(stepB!.id, workerId, WORKER_DEFAULTS.leaseMs);
  t.ok(claimB, 'step b is claimed');
  await drain();
  await db.cancelJob(jobId, 'facts', 'facts-test');
  got = await drain();
  t.same(on(got, CHANNELS.cancel).map(parseCancelNotice), [{ jobId, attempts: [{ attemptId: claimB!.attemptId, workerId }] }],
    'the cancellation notice parses, naming the job, the running attempt and its worker');
  for (const p of on(got, CHANNELS.events)) t.not(parseAnnouncement(p), null, `cancellation: ${p} parses`);

  t.equal(parseCancelNotice('not json'), null, 'a payload that is not JSON is refused');
  t.same(parseCancelNotice(JSON.stringify({ job_id: 1, attempts: [{ attempt_id: 'x; drop', worker_id: 'w' }, { attempt_id: 2, worker_id: 'w' }] })),
    { jobId: '1', attempts: [{ attemptId: '2', workerId: 'w' }] }, 'a malformed attempt is dropped, the rest kept');
});

// --- 5. The kysely row types --------------------------------------------------------------------------------------

/** The interfaces of src/db/schema.ts: field name -> type text, and the Database map (table -> interface). */
function schemaTypes(): { interfaces: Map<string, Map<string, string>>; tables: Map<string, string> } {
  const path = join(repoRoot, 'src/db/schema.ts');
  const source = ts.createSourceFile(path, readFileSync(path, 'utf8'), ts.ScriptTarget.Latest, true);
  const interfaces = new Map<string, Map<string, string>>();
  for (const node of source.statements) {
    if (!ts.isInterfaceDeclaration(node)) continue;
    const fields = new Map<string, string>();
    for (const m of node.members) {
      if (ts.isPropertySignature(m) && m.type) fields.set(m.name.getText(source).replace(/^'(.*)'$/, '$1'), m.type.getText(source));
    }
    interfaces.set(node.name.text, fields);
  }
  const tables = new Map<string, string>();
  for (const [name, type] of interfaces.get('Database') ?? []) tables.set(name, type);
  return { interfaces, tables };
}

/** What a column reads as in TypeScript, by its Postgres type (pg's defaults: int8 and numeric as strings). */
const PG_KIND: Record<string, string> = {
  text: 'string', varchar: 'string', int8: 'string', numeric: 'string', int4: 'number', int2: 'number', float8: 'number',
  timestamptz: 'Date', jsonb: 'Json', json: 'Json', bool: 'boolean', _text: 'string[]', _int8: 'string[]',
};

/** The same for a field's declared type: ColumnType<S, ...> reads as S; string unions and aliases of them as string. */
function tsKind(type: string): { kind: string; nullable: boolean } {
  let base = type.trim();
  const columnType = /^ColumnType<([\s\S]*)>$/.exec(base);
  if (columnType) base = columnType[1]!.split(/,(?![^<]*>)/)[0]!.trim();
  const parts = base.split('|').map((p) => p.trim()).filter(Boolean);
  const nullable = parts.includes('null');
  const rest = parts.filter((p) => p !== 'null');
  const one = rest.length === 1 ? rest[0]! : '';
  let kind: string;
  if (one === 'Timestamp' || one === 'Date') kind = 'Date';
  else if (one === 'Json' || one === 'unknown') kind = 'Json';
  else if (['number', 'boolean', 'string[]', 'string'].includes(one)) kind = one;
  else if (rest.every((p) => /^'[^']*'$/.test(p) || /^(JobStatus|StepStatus|ContractOutcome)$/.test(p))) kind = 'string';
  else kind = `?${base}`;
  return { kind, nullable };
}

t.test('src/db/schema.ts describes the views as they are', async (t) => {
  const { interfaces, tables } = schemaTypes();
  t.ok(tables.size >= 6, `the Database map names ${tables.size} views`);
  for (const [table, iface] of tables) {
    const [schema, name] = table.split('.');
    const { rows } = await pool.query<{ column_name: string; udt_name: string }>(
      `select column_name, udt_name from information_schema.columns where table_schema = $1 and table_name = $2 order by ordinal_position`,
      [schema, name]);
    t.ok(rows.length > 0, `${table} exists`);
    const fields = interfaces.get(iface);
    t.ok(fields, `${iface} is declared`);
    if (!fields) continue;
    t.same(sorted(fields.keys()), sorted(rows.map((r) => r.column_name)), `${iface} has exactly the columns of ${table}`);
    for (const r of rows) {
      const declared = fields.get(r.column_name);
      if (declared === undefined) continue;
      const expected = PG_KIND[r.udt_name] ?? `?${r.udt_name}`;
      t.equal(tsKind(declared).kind, expected, `${iface}.${r.column_name}: ${r.udt_name} reads as ${expected}`);
    }
  }
});
