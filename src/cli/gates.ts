// `ballast pause`, `resume`, `pauses`, `limit set|delete`, `limits` and `gate-history`: pauses and limits on keys
// from the command line (migration 0037, docs/flow-control.md). Each is one call of its SQL function through
// BallastDb (src/db/gates.ts); the flags are checked here first, so that a mistake is one line naming the flag and
// what to pass (exit 2), and what SQL refuses still names the flag (errors.ts). Returns the process exit code.
import type { BallastDb } from '../db/api.ts';
import { LIMIT_KINDS, type LimitKind, type LimitRow } from '../db/gates.ts';
import { actor, intOption, parseCommandArgs } from './args.ts';
import { UsageError } from './errors.ts';
import { withNumbers } from './json.ts';
import { table } from './table.ts';

const UNITS: Record<string, number> = {
  ms: 1, s: 1000, sec: 1000, second: 1000, seconds: 1000, m: 60_000, min: 60_000, minute: 60_000, minutes: 60_000,
  h: 3_600_000, hour: 3_600_000, hours: 3_600_000, d: 86_400_000, day: 86_400_000, days: 86_400_000,
};
const MAX_PERIOD_MS = 31 * 86_400_000;
const MAX_AMOUNT = 1e12;

/**
 * A duration such as 30s, 10m, 1h, 1d (also 500ms, 1.5h, 2 days) in milliseconds; for a period (`per`) the number may
 * be left out (`minute`: one minute). Throws a UsageError naming `flag`.
 */
export function parseDurationMs(flag: string, text: string, opts: { bareUnit?: boolean; example?: string } = {}): number {
  const m = /^\s*(\d+(?:\.\d+)?)?\s*([a-z]+)\s*$/.exec(text.toLowerCase());
  const unit = m ? UNITS[m[2]!] : undefined;
  if (!m || unit === undefined || (m[1] === undefined && !opts.bareUnit)) {
    throw new UsageError(`${flag} ${text} is not a duration`, `pass a number and a unit: ms, s, m, h or d, e.g. ${opts.example ?? `${flag} 10m`}`);
  }
  const ms = Number(m[1] ?? 1) * unit;
  if (!(ms >= 1)) throw new UsageError(`${flag} ${text} is not more than 0`, `pass a positive duration, e.g. ${opts.example ?? `${flag} 10m`}`);
  return ms;
}

/** A duration in words for the output: 1m, 90s, 1.5h, 250ms. */
export function formatMs(ms: number): string {
  for (const [unit, size] of [['d', 86_400_000], ['h', 3_600_000], ['m', 60_000], ['s', 1000]] as const) {
    if (ms >= size && Number.isInteger((ms / size) * 1000)) return `${ms / size}${unit}`;
  }
  return `${ms}ms`;
}

/** A whole number from 1 to 10^12 for `flag`. */
function amountOf(flag: string, text: string, example: string, given = text): number {
  const n = Number(text);
  if (!/^\d+$/.test(text.trim()) || !Number.isSafeInteger(n) || n < 1 || n > MAX_AMOUNT) {
    throw new UsageError(`${flag} ${given}: ${text.trim() === '' ? 'no amount' : `${text} is not a whole number from 1 to 10^12`}`, `pass e.g. ${example}`);
  }
  return n;
}

/** `<n>/<period>` (100/1m, 10000/minute) for --requests or --weight. */
function rateOf(flag: string, text: string): { amount: number; perMs: number } {
  const example = flag === '--weight' ? '--weight 90000/1m (weight, e.g. tokens, per minute)' : '--requests 100/1m (100 steps per minute)';
  const slash = text.indexOf('/');
  if (slash < 0) throw new UsageError(`${flag} ${text} has no period`, `pass <amount>/<period>, e.g. ${example}`);
  const amount = amountOf(flag, text.slice(0, slash), example, text);
  const perMs = parseDurationMs(flag, text.slice(slash + 1), { bareUnit: true, example });
  if (perMs > MAX_PERIOD_MS) throw new UsageError(`${flag} ${text}: the period is longer than 31 days`, `pass a period from 1ms to 31d, e.g. ${example}`);
  return { amount, perMs };
}

/** The key of `pause`/`resume`/`gate-history`, or the pattern of `limit`: a positional argument. */
function keyArg(value: string | undefined, what: string, example: string): string {
  if (!value) throw new UsageError(`${what}`, `e.g. \`ballast ${example}\``);
  return value;
}

const print = (json: boolean | undefined, value: unknown, line: string) => console.log(json ? JSON.stringify(withNumbers(value)) : line);
const iso = (d: Date | null) => (d ? d.toISOString() : null);

/** Postgres interval text of a limit's period ('00:01:00', '1 day', '00:00:00.5') in words (1m, 1d, 500ms). */
function periodText(per: string | null): string {
  if (per === null) return '';
  const m = /^(?:(\d+) days? ?)?(?:(\d+):(\d+):(\d+(?:\.\d+)?))?$/.exec(per);
  if (!m) return per;
  const ms = Number(m[1] ?? 0) * 86_400_000 + Number(m[2] ?? 0) * 3_600_000 + Number(m[3] ?? 0) * 60_000 + Math.round(Number(m[4] ?? 0) * 1000);
  return formatMs(ms);
}

const limitText = (l: LimitRow) => l.kind === 'running'
  ? `at most ${l.amount} running at once`
  : `${l.amount}${l.kind === 'weight' ? ' weight' : ''} per ${periodText(l.per)}${l.burst === '1' ? '' : ` (burst ${l.burst})`}`;

/** `ballast pause <key> (--for <duration> | --until <time>) --reason <text>` */
export async function pauseCommand(db: BallastDb, args: string[]): Promise<number> {
  const { values, positionals } = parseCommandArgs(args, {
    for: { type: 'string' }, until: { type: 'string' }, reason: { type: 'string' }, json: { type: 'boolean' },
  });
  const key = keyArg(positionals[0], 'pause needs a key', "pause provider:openai --for 10m --reason '429 from the provider'");
  if (values.reason === undefined || values.reason.trim() === '') {
    throw new UsageError('pause needs --reason <text>', "say why (kept in the history), e.g. --reason 'maintenance'");
  }
  if (values.for !== undefined && values.until !== undefined) {
    throw new UsageError('pause takes --for or --until, not both', 'pass --for <duration> (e.g. 10m), --until <time> (e.g. 2026-12-24T18:00:00Z), or neither: until resumed');
  }
  let until: Date | null = null;
  if (values.until !== undefined) {
    until = new Date(values.until);
    if (Number.isNaN(until.getTime()) || !/^\d{4}-\d\d-\d\d/.test(values.until.trim())) {
      throw new UsageError(`--until ${values.until} is not a time`, 'pass an ISO 8601 time, e.g. --until 2026-12-24T18:00:00Z (or --for 10m)');
    }
  }
  const forMs = values.for === undefined ? null : parseDurationMs('--for', values.for, { example: '--for 10m (or 30s, 1h, 1d)' });
  const p = await db.pauseKey({ key, reason: values.reason, until, forMs, actor: actor() });
  const kept = (until ?? (forMs !== null ? 'for' : null)) !== null && p.until === null ? ' (a pause until resumed was in force and is kept)' : '';
  print(values.json, p, `key ${p.key} paused ${p.until ? `until ${iso(p.until)}` : 'until resumed'}${kept}: ${p.reason}`);
  return 0;
}

/** `ballast resume <key> [--reason <text>]` */
export async function resumeCommand(db: BallastDb, args: string[]): Promise<number> {
  const { values, positionals } = parseCommandArgs(args, { reason: { type: 'string' }, json: { type: 'boolean' } });
  const key = keyArg(positionals[0], 'resume needs a key', "resume provider:openai --reason 'provider back'");
  const resumed = await db.resumeKey(key, values.reason, actor());
  print(values.json, { key, resumed }, resumed ? `key ${key} resumed; the steps it held back are queued again` : `key ${key} was not paused; nothing held back`);
  return 0;
}

/** `ballast pauses`: the paused keys, in force first. */
export async function pausesCommand(db: BallastDb, args: string[]): Promise<number> {
  const { values } = parseCommandArgs(args, { json: { type: 'boolean' } });
  const rows = await db.listPauses();
  if (values.json) console.log(JSON.stringify(withNumbers(rows)));
  else console.log(table(rows.map((r) => ({ key: r.key, until: r.until ?? 'resumed', 'in force': r.inForce ? 'yes' : 'no (ended)', reason: r.reason, by: r.pausedBy }))));
  return 0;
}

const LIMIT_USAGE = 'limit set <pattern> --requests <n>/<period> | --weight <n>/<period> | --running <n> [--burst <n>] [--note <text>], or limit delete <pattern> <kind>';

/** `ballast limit set <pattern> ...` and `ballast limit delete <pattern> <kind>`. */
export async function limitCommand(db: BallastDb, args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  const { values, positionals } = parseCommandArgs(rest, {
    requests: { type: 'string' }, weight: { type: 'string' }, running: { type: 'string' }, burst: { type: 'string' },
    note: { type: 'string' }, json: { type: 'boolean' },
  });
  if (sub === 'set') {
    const pattern = keyArg(positionals[0], 'limit set needs a key or a pattern', "limit set provider:openai --requests 500/1m, or limit set 'tenant:*' --running 10");
    const given = (['requests', 'weight', 'running'] as const).filter((k) => values[k] !== undefined);
    if (given.length !== 1) {
      throw new UsageError(`limit set needs exactly one of --requests, --weight and --running${given.length ? ` (got ${given.map((k) => `--${k}`).join(' and ')})` : ''}`,
        'pass --requests <n>/<period> (steps per period, e.g. 100/1m), --weight <n>/<period> (weight per period, e.g. 90000/1m) or --running <n> (at once)');
    }
    const kind = given[0]!;
    const rate = kind === 'running'
      ? { amount: amountOf('--running', values.running!, '--running 10 (at most 10 at once)'), perMs: null }
      : rateOf(`--${kind}`, values[kind]!);
    if (kind === 'running' && values.burst !== undefined) throw new UsageError('--burst is for --requests and --weight', 'a --running limit counts steps at once: leave --burst out');
    const burst = intOption('--burst', values.burst, 1, MAX_AMOUNT);
    const l = await db.setLimit({ pattern, kind, ...rate, burst, note: values.note ?? null, actor: actor() });
    print(values.json, l, `limit ${l.kind} on ${l.pattern} set: ${limitText(l)}`);
    return 0;
  }
  if (sub === 'delete') {
    const pattern = keyArg(positionals[0], 'limit delete needs the limit\'s pattern and kind', 'limit delete provider:openai requests');
    const kind = positionals[1];
    if (!kind || !LIMIT_KINDS.includes(kind as LimitKind)) {
      throw new UsageError(`limit delete ${pattern} needs a kind${kind ? `: ${kind} is not one` : ''}`, `pass requests, weight or running, e.g. \`ballast limit delete ${pattern} requests\``);
    }
    const deleted = await db.deleteLimit(pattern, kind as LimitKind, actor());
    print(values.json, { deleted }, deleted ? `limit ${kind} on ${pattern} deleted` : `no ${kind} limit on ${pattern}; nothing deleted`);
    return deleted ? 0 : 3;
  }
  throw new UsageError(`unknown limit command "${sub ?? ''}"`, `use ${LIMIT_USAGE}`);
}

/** `ballast limits`: the limits, by pattern and kind. */
export async function limitsCommand(db: BallastDb, args: string[]): Promise<number> {
  const { values } = parseCommandArgs(args, { json: { type: 'boolean' } });
  const rows = await db.listLimits();
  if (values.json) console.log(JSON.stringify(withNumbers(rows)));
  else console.log(table(rows.map((r) => ({
    pattern: r.pattern, kind: r.kind, amount: r.amount, per: periodText(r.per), burst: r.kind === 'running' ? '' : r.burst,
    'keys seen': r.keysSeen, note: r.note, 'set by': r.setBy, 'set at': r.setAt,
  }))));
  return 0;
}

/** `ballast gate-history [<key>] [--limit <n>]`: the newest pauses, resumes and limit changes first. */
export async function gateHistoryCommand(db: BallastDb, args: string[]): Promise<number> {
  const { values, positionals } = parseCommandArgs(args, { limit: { type: 'string' }, json: { type: 'boolean' } });
  const rows = await db.gateHistory(positionals[0], intOption('--limit', values.limit, 100, 10_000));
  if (values.json) console.log(JSON.stringify(withNumbers(rows)));
  else console.log(table(rows.map((r) => ({ at: r.at, action: r.action, key: r.key, until: r.until, reason: r.reason, data: r.data, by: r.actor }))));
  return 0;
}
