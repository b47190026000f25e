// The operator scripts in sql/ run by the real psql binary with -v variables, against the history of
// test/support/history.ts (the session clock set to its NOW through PGOPTIONS): what they print, and what they change.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { freshDatabase, repoRoot } from './helpers.ts';
import { CALLS, HISTORY, NOW, seed } from './support/history.ts';

const which = spawnSync('which', ['psql'], { encoding: 'utf8' });
const psqlPath = which.status === 0 ? which.stdout.trim() : '';
if (!psqlPath) {
  t.fail('psql is not installed (not on PATH): the sql/ scripts are tested with the real psql; install the PostgreSQL client (e.g. apt-get install postgresql-client)');
  process.exit(1);
}

const { pool, url } = await freshDatabase(t);
const ids = await seed(pool, [...HISTORY,
  // Two more dead letters of rep.c: J15's replays cleanly; J14's cannot (its dependant b is queued: BA011). J14 is
  // running: its status follows its steps (a failed, b still queued), as the job counters (0004_state_machines) derive it.
  { key: 'J15', tenant: 'acme', pipeline: 'rep.c', version: 1, status: 'failed', created: '09:00:00', finished: '09:00:02', steps: [
    { name: 'a', status: 'failed', error: { class: 'transport', message: 'reset by peer', retryable: true, attempt: 3 },
      attempts: [{ outcome: 'failed', start: '09:00:01', end: '09:00:02', errorClass: 'transport' }] },
    { name: 'b', status: 'skipped', deps: ['a'] }] },
  { key: 'J14', tenant: 'acme', pipeline: 'rep.c', version: 1, status: 'running', created: '09:30:00', steps: [
    { name: 'a', status: 'failed', error: { class: 'transport', message: 'reset by peer', retryable: true, attempt: 3 },
      attempts: [{ outcome: 'failed', start: '09:30:01', end: '09:30:02', errorClass: 'transport' }] },
    { name: 'b', status: 'queued', deps: ['a'] }] },
], CALLS);

interface Run { status: number | null; stdout: string; stderr: string }
/** Runs sql/<script> with psql -v name=value for each var, at the history's clock. */
function psql(script: string, vars: Record<string, string> = {}): Run {
  const args = ['-X', '-q', ...Object.entries(vars).flatMap(([k, v]) => ['-v', `${k}=${v}`]), '-f', `sql/${script}`, url];
  const r = spawnSync(psqlPath, args, { cwd: repoRoot, encoding: 'utf8', env: { ...process.env, PGOPTIONS: `-c ballast.now=${NOW}`, PAGER: '' } });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}
const status = async (stepId: string | undefined) => (await pool.query(`select status from ballast.steps where id = $1`, [stepId])).rows[0].status;
/** The lines of `out` that contain `text`. */
const lines = (out: string, text: string) => out.split('\n').filter((l) => l.includes(text));

t.test('explain_job.sql: the job, its steps and one timeline in time order', async (t) => {
  const r = psql('explain_job.sql', { job_id: ids.job.J3! });
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, /== job \d+/);
  t.match(r.stdout, /pipeline\s+\| rep\.a@1/);
  t.match(r.stdout, /status\s+\| failed/);
  t.match(r.stdout, /rate\s+\| failed\s+\| 1\/3 .*\| client\s+\| the provider refused the key/);
  const timeline = r.stdout.slice(r.stdout.indexOf('== timeline'));
  const order = ['event job_submitted', 'attempt 1 started', 'attempt 1 succeeded', 'attempt 1 started', 'model call primary openai:gpt-4o-mini',
    'model call primary openai:gpt-4o-mini', 'attempt 1 failed'];
  let at = 0;
  for (const what of order) {
    const next = timeline.indexOf(what, at);
    t.ok(next >= 0, `"${what}" follows`);
    at = next + what.length;
  }
  t.match(timeline, /error client: client error; contract rejected/);
  t.match(timeline, /2000 ms; tokens 50\/5; cost 0\.00500000; error client; prompt review\.rate@1/);
  t.match(timeline, /0 ms; error budget; prompt review\.rate@1/);

  const missing = psql('explain_job.sql');
  t.equal(missing.status, 3, 'no job_id: psql stops with an error');
  t.match(missing.stderr, /set job_id, e\.g\. psql -v job_id=42/);
  const unknown = psql('explain_job.sql', { job_id: '987654' });
  t.equal(unknown.status, 3);
  t.match(unknown.stderr, /job 987654 does not exist/);
});

t.test('report_pipelines.sql and report_models.sql', async (t) => {
  const r = psql('report_pipelines.sql');
  t.equal(r.status, 0, r.stderr);
  const [h10] = lines(r.stdout, '2030-01-02 10:00:00+00 | rep.a@1 ');
  t.match(h10, /\|\s+5 \|\s+2 \|\s+1 \|\s+0 \|\s+1 \|\s+1 \|\s+66\.7 \|\s+25\.0 \|\s+3 \|\s+33\.3 \|\s+33\.3 \|/, 'jobs, outcomes, success and retry %, model rates');
  t.match(h10, /\|\s+1000\.0 \|\s+3400\.0 \|\s+2000\.0 \|\s+3700\.0 \|\s+9000\.0 \|\s+9900\.0 \|\s+0\.0350 \|\s+350 \|\s+35$/);
  t.ok(lines(r.stdout, '| split ').length >= 2, 'the steps section lists the map step and its items');
  const b = psql('report_pipelines.sql', { pipeline: 'rep.b', since: '7 days', period: 'day' });
  t.equal(b.status, 0, b.stderr);
  t.same(lines(b.stdout, 'rep.a@').length, 0, 'filtered to rep.b');
  t.ok(lines(b.stdout, '2030-01-02 00:00:00+00 | rep.b@1').length >= 1, 'by day');
  const bad = psql('report_pipelines.sql', { period: 'fortnight' });
  t.equal(bad.status, 3);
  t.match(bad.stderr, /period: 'fortnight' is not minute, hour, day, week or month/);

  const m = psql('report_models.sql', { quality_since: '7 days' });
  t.equal(m.status, 0, m.stderr);
  t.match(lines(m.stdout, '2030-01-02 10:00:00+00 | openai:gpt-4o-mini')[0], /\|\s+3 \|\s+2 \|\s+66\.7 \| \{"budget": 1, "client": 1, "schema": 1\} \|\s+1 \|\s+2000\.0 \|\s+3800\.0 \|/);
  t.match(m.stdout, /2029-12-30 \| review\.rate@1 \| openai:gpt-4o-mini\s+\|\s+1 \|\s+0\.9500/);
  t.match(m.stdout, /2030-01-02 \| review\.rate@1 \| openai:gpt-4o-mini\s+\|\s+2 \|\s+0\.7000/);
});

t.test('dead_letters.sql, stuck.sql and queue.sql', async (t) => {
  const d = psql('dead_letters.sql');
  t.equal(d.status, 0, d.stderr);
  t.same(['rate', 'split__1', 'a'].map((s) => lines(d.stdout, `| ${s} `).length > 0), [true, true, true]);
  t.match(lines(d.stdout, '| split__1 ')[0], /1:failed\(transport\) 2:failed\(transport\)/);
  const f = psql('dead_letters.sql', { error_class: 'client' });
  t.same([lines(f.stdout, '| rate ').length > 0, lines(f.stdout, '| split__1 ').length], [true, 0], 'filtered by error class');

  const s = psql('stuck.sql');
  t.equal(s.status, 0, s.stderr);
  const kinds = lines(s.stdout, ' | 2030-01-02 ').map((l) => l.split('|')[0]!.trim());
  t.same(kinds, ['queued_too_long', 'lease_expired', 'queued_too_long', 'wait_past_deadline', 'retry_overdue'], 'oldest first: J14\'s b since 09:30, J4, J9, J11, J12');
  t.match(s.stdout, /== workers/);
  const strict = psql('stuck.sql', { queued_for: '1 hour', overdue_by: '10 seconds' });
  t.same(lines(strict.stdout, ' | 2030-01-02 ').map((l) => l.split('|')[0]!.trim()),
    ['queued_too_long', 'lease_expired', 'wait_past_deadline', 'retry_overdue', 'retry_overdue'], 'J9 is not queued for an hour; J10 is 30 s overdue');

  const q = psql('queue.sql');
  t.equal(q.status, 0, q.stderr);
  t.match(lines(q.stdout, ' rep.a ')[0], /rep\.a\s+\|\s+1 \|\s+1 \|\s+1 \|\s+1 \|\s+1 \|\s+1 \| 2030-01-02 11:30:00\+00 \| 00:30:00/);
  t.match(q.stdout, new RegExp(`2030-01-02 11:30:00\\+00 \\|\\s+${ids.job.J9} \\|`), 'the oldest runnable step is listed');
});

t.test('requeue_dead_letters.sql: a dry run, then only the matches, audited, in one transaction', async (t) => {
  const dry = psql('requeue_dead_letters.sql', { pipeline: 'rep.b', error_class: 'transport', reason: 'upstream back', dry_run: '1' });
  t.equal(dry.status, 0, dry.stderr);
  t.match(dry.stdout, /dry run: these would be replayed/);
  t.match(lines(dry.stdout, '| split__1 ')[0], /\| f\s+\|/);
  t.equal(await status(ids.step['J8.split__1']), 'failed', 'the dry run changed nothing');

  const r = psql('requeue_dead_letters.sql', { pipeline: 'rep.b', error_class: 'transport', since: '1 day', reason: 'upstream back' });
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, /== replayed/);
  t.match(lines(r.stdout, '| split__1 ')[0], new RegExp(`\\| t\\s+\\| \\{${ids.step['J8.split']},${ids.step['J8.split__1']}\\}`),
    'the item and its map step, which waits for it again');
  t.equal(await status(ids.step['J8.split__1']), 'queued', 'the matching dead letter runs again');
  t.equal(await status(ids.step['J3.rate']), 'failed', 'another pipeline\'s dead letter is left alone');
  t.equal(await status(ids.step['J15.a']), 'failed', 'and another error class\'s... of another pipeline too');
  const { rows: events } = await pool.query(`select actor, reason from ballast.events where step_id = $1 and type = 'step_replayed'`, [ids.step['J8.split__1']]);
  t.same(events, [{ actor: 'psql:postgres', reason: 'upstream back' }], 'the reason and the psql user are in the audit trail');

  const atomic = psql('requeue_dead_letters.sql', { pipeline: 'rep.c', reason: 'try both' });
  t.equal(atomic.status, 3, 'one of them cannot be replayed');
  t.match(atomic.stderr, /step \d+ \("b"\) depends on step \d+ and is queued: replaying now would run it twice/);
  t.same([await status(ids.step['J15.a']), await status(ids.step['J14.a'])], ['failed', 'failed'], 'so neither was');

  const noReason = psql('requeue_dead_letters.sql', { pipeline: 'rep.c' });
  t.equal(noReason.status, 3);
  t.match(noReason.stderr, /set reason/);
});

t.test('replay_job.sql: the failed steps, or from a named step', async (t) => {
  const r = psql('replay_job.sql', { job_id: ids.job.J3!, reason: 'key rotated', actor: 'ops@example.com' });
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, new RegExp(`${ids.job.J3} \\| \\{${ids.step['J3.rate']}\\}\\s+\\| running`));
  t.equal(await status(ids.step['J3.rate']), 'queued');
  const { rows: [e] } = await pool.query(`select actor, reason from ballast.events where step_id = $1 and type = 'step_replayed'`, [ids.step['J3.rate']]);
  t.same(e, { actor: 'ops@example.com', reason: 'key rotated' });

  const from = psql('replay_job.sql', { job_id: ids.job.J1!, reason: 'new prompt', from_step: 'rate' });
  t.equal(from.status, 0, from.stderr);
  t.same([await status(ids.step['J1.fetch']), await status(ids.step['J1.rate'])], ['succeeded', 'queued'], 'rate only; fetch keeps its output');

  const noReason = psql('replay_job.sql', { job_id: ids.job.J2! });
  t.equal(noReason.status, 3);
  t.match(noReason.stderr, /set reason/);
  t.equal(await status(ids.step['J2.rate']), 'succeeded', 'nothing replayed without a reason');
});
