// `ballast schedule`: cron schedules from the command line (migration 0033). set creates or replaces one, pause and
// resume stop and restart it, delete removes it, list shows them. Each is one call of its SQL function; errors come
// back as one line naming the flag (errors.ts). Returns the process exit code.
import type { BallastDb } from '../db/api.ts';
import { actor, intOption, parseCommandArgs, readInput } from './args.ts';
import { UsageError } from './errors.ts';
import { withNumbers } from './json.ts';
import { table } from './table.ts';

const USAGE = 'schedule set|pause|resume|delete|list, e.g. `ballast schedule set nightly --pipeline demo.wordstats --cron \'0 3 * * *\' --tz Europe/Paris --input \'{"text":"hi"}\'`';

const print = (json: boolean | undefined, value: unknown, line: string) => console.log(json ? JSON.stringify(withNumbers(value)) : line);
const when = (d: Date | null) => (d ? d.toISOString() : 'never (paused)');

export async function scheduleCommand(db: BallastDb, args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  const { values, positionals } = parseCommandArgs(rest, {
    pipeline: { type: 'string' }, cron: { type: 'string' }, input: { type: 'string' }, tz: { type: 'string' },
    tenant: { type: 'string' }, version: { type: 'string' }, priority: { type: 'string' }, 'on-missed': { type: 'string' },
    'max-catch-up': { type: 'string' }, reason: { type: 'string' }, json: { type: 'boolean' },
  });
  const name = positionals[0];
  if (sub === 'list') {
    const rows = await db.listSchedules(values.tenant);
    if (values.json) console.log(JSON.stringify(withNumbers(rows)));
    else console.log(table(rows.map((r) => ({
      tenant: r.tenant_id, name: r.name, pipeline: r.pipeline, cron: r.cron, tz: r.time_zone, paused: r.paused,
      next: r.next_fire_at, fired: r.fired_count, skipped: r.skipped_count, last_error: r.last_error,
    }))));
    return 0;
  }
  if (!name) throw new UsageError(`schedule ${sub ?? ''} needs a schedule name; ${USAGE}`.replace('  ', ' '));
  switch (sub) {
    case 'set': {
      if (!values.pipeline) throw new UsageError('schedule set needs --pipeline <name>');
      if (!values.cron) throw new UsageError("schedule set needs --cron '<minute hour day-of-month month day-of-week>' (or @daily, @hourly, ...)");
      const onMissed = values['on-missed'] ?? 'skip';
      if (onMissed !== 'skip' && onMissed !== 'catch_up') throw new UsageError(`--on-missed ${onMissed} is not skip or catch_up`);
      const r = await db.setSchedule({
        name, pipeline: values.pipeline, cron: values.cron, input: values.input === undefined ? {} : readInput(values.input),
        ...(values.tz ? { timeZone: values.tz } : {}), ...(values.tenant ? { tenantId: values.tenant } : {}),
        ...(values.version ? { pipelineVersion: intOption('--version', values.version, 1, 2 ** 31 - 1) } : {}),
        ...(values.priority ? { priority: Number(values.priority) } : {}), onMissed,
        maxCatchUp: intOption('--max-catch-up', values['max-catch-up'], 10, 1000),
      }, actor());
      print(values.json, r, `schedule ${name} set; next slot ${when(r.nextFireAt)}`);
      return 0;
    }
    case 'pause':
    case 'resume': {
      const r = await db.pauseSchedule(name, sub === 'pause', { ...(values.reason ? { reason: values.reason } : {}), ...(values.tenant ? { tenantId: values.tenant } : {}), actor: actor() });
      print(values.json, r, sub === 'pause' ? `schedule ${name} paused` : `schedule ${name} resumed; next slot ${when(r.nextFireAt)}`);
      return 0;
    }
    case 'delete': {
      const deleted = await db.deleteSchedule(name, values.tenant);
      print(values.json, { deleted }, deleted ? `schedule ${name} deleted` : `no schedule ${name}; nothing deleted`);
      return deleted ? 0 : 3;
    }
    default:
      throw new UsageError(`unknown schedule command "${sub ?? ''}"; ${USAGE}`);
  }
}
