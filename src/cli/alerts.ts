// `ballast alerts [--open]`, `ballast alerts ack <id>`, `ballast alerts check`: drift and budget alerts from the
// command line (migration 0045, docs/quality-alerts.md). Each is one statement of src/db/alerts.ts through the CLI's
// pool (BallastDb), errors translated as everywhere (src/errors.ts); the flags are checked here first, so that a
// mistake is one line naming the flag and what to pass (exit 2). Returns the process exit code.
import type { BallastDb } from '../db/api.ts';
import { ackAlert, checkAlerts, listAlerts } from '../db/alerts.ts';
import { translateError } from '../errors.ts';
import { actor, parseCommandArgs } from './args.ts';
import { UsageError } from './errors.ts';
import { withNumbers } from './json.ts';
import { table } from './table.ts';

const ALERTS_USAGE = 'alerts [--open] [--kind drift|budget] [--limit <n>], alerts ack <id> [--note <text>], or alerts check';

async function translated<T>(run: () => Promise<T>): Promise<T> {
  try {
    return await run();
  } catch (err) {
    throw translateError(err);
  }
}

const print = (json: boolean | undefined, value: unknown, line: string) => console.log(json ? JSON.stringify(withNumbers(value)) : line);

/** `ballast alerts ...` (see ALERTS_USAGE). */
export async function alertsCommand(db: BallastDb, args: string[]): Promise<number> {
  const { values, positionals } = parseCommandArgs(args, {
    open: { type: 'boolean' }, kind: { type: 'string' }, limit: { type: 'string' }, note: { type: 'string' }, json: { type: 'boolean' },
  });
  const [sub, ...rest] = positionals;
  if (sub === 'ack') {
    const [id, extra] = rest;
    if (!id || !/^\d+$/.test(id) || extra !== undefined) throw new UsageError('alerts ack needs one alert id (a number)', 'e.g. `ballast alerts ack 42 --note "looking at it"`; `ballast alerts --open` lists them');
    const r = await translated(() => ackAlert(db.pool, id, actor(), values.note ?? null));
    print(values.json, r, `alert ${r.alertId} acknowledged by ${r.ackedBy}`);
    return 0;
  }
  if (sub === 'check') {
    if (rest.length > 0) throw new UsageError(`alerts check takes no argument (got ${rest.join(' ')})`, 'run `ballast alerts check` alone: it evaluates every rule once');
    const changes = await translated(() => checkAlerts(db.pool));
    const raised = changes.filter((c) => c.change === 'raised').map((c) => c.alertId);
    const resolved = changes.filter((c) => c.change === 'resolved').map((c) => c.alertId);
    print(values.json, { raised, resolved }, `checked: ${raised.length} alert(s) raised${raised.length ? ` (${raised.join(', ')})` : ''}, ${resolved.length} resolved${resolved.length ? ` (${resolved.join(', ')})` : ''}`);
    return 0;
  }
  if (sub !== undefined) throw new UsageError(`unknown alerts command "${sub}"`, `use ${ALERTS_USAGE}`);
  if (values.kind !== undefined && values.kind !== 'drift' && values.kind !== 'budget') {
    throw new UsageError(`--kind ${values.kind} is not drift or budget`, 'pass --kind drift or --kind budget, or leave it out for both');
  }
  const limit = values.limit === undefined ? 50 : Number(values.limit);
  if (!Number.isInteger(limit) || limit < 1 || limit > 10_000) throw new UsageError(`--limit ${values.limit} is not a whole number from 1 to 10000`, 'e.g. --limit 20');
  const rows = await translated(() => listAlerts(db.pool, { open: values.open ?? false, ...(values.kind ? { kind: values.kind as 'drift' | 'budget' } : {}), limit }));
  if (values.json) console.log(JSON.stringify(withNumbers(rows)));
  else if (rows.length === 0) console.log(values.open ? 'no open alerts' : 'no alerts');
  else {
    console.log(table(rows.map((a) => ({
      id: a.id, kind: a.kind, rule: a.rule, about: a.groupKey, metric: a.metric, value: a.value,
      baseline: a.baseline, percent: a.percent,
      raised: a.raisedAt, resolved: a.resolvedAt, acked: a.ackedBy,
    }))));
  }
  return 0;
}
