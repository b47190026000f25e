// Reading the command line and the environment for the `ballast` commands: options, job ids, --input, integers
// from the environment. Every mistake is a UsageError (exit 2) that names the flag or variable and says what to pass.
import { readFileSync } from 'node:fs';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { UsageError } from './errors.ts';

/** Who you are, recorded on cancel/replay/send-event events. */
export function actor(): string {
  return process.env.BALLAST_ACTOR || `cli:${process.env.USER ?? 'unknown'}`;
}

export function jobIdArg(value: string | undefined, command: string): string {
  if (!value || !/^\d+$/.test(value)) throw new UsageError(`${command} needs a job id (a number), e.g. \`ballast ${command} 42\``);
  return value;
}

export function intEnv(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1) throw new UsageError(`${name}=${raw} is not a positive integer; unset it or set e.g. ${name}=${fallback}`);
  return n;
}

/** A JSON value given as text, @file or - (stdin), for the option `flag`. */
export function readInput(value: string | undefined, flag = '--input'): unknown {
  if (value === undefined) return {};
  let text: string;
  if (value.startsWith('@') || value === '-') {
    const file = value === '-' ? 0 : value.slice(1);
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      const what = code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'is a folder' : code === 'EACCES' ? 'may not be read' : (err as Error).message;
      throw new UsageError(`${flag} ${value}: ${what}`, `pass @ and the path of a JSON file, a JSON value, or - for stdin`);
    }
  } else {
    text = value;
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    const source = value.startsWith('@') ? ` (the file ${value.slice(1)})` : value === '-' ? ' (stdin)' : '';
    throw new UsageError(`${flag}${source} is not valid JSON (${(err as Error).message}); pass a JSON value, @file.json or - for stdin`);
  }
}

/**
 * node:util parseArgs, with two fixes for a command line: a value that starts with "-" (`--priority -5`) is taken as
 * the value of the option before it instead of refused, and a parse error is a usage error (exit 2), not a crash.
 */
export function parseCommandArgs<O extends NonNullable<ParseArgsConfig['options']>>(args: string[], options: O) {
  const takesValue = new Set(Object.entries(options).filter(([, o]) => o.type === 'string').map(([name]) => `--${name}`));
  const joined: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    const next = args[i + 1];
    if (takesValue.has(arg) && next !== undefined && next.startsWith('-') && next !== '-' && !next.startsWith('--')) {
      joined.push(`${arg}=${next}`);
      i++;
    } else {
      joined.push(arg);
    }
  }
  try {
    return parseArgs({ args: joined, allowPositionals: true, options });
  } catch (err) {
    throw new UsageError(`${(err as Error).message}; run \`ballast help\` for the options`);
  }
}

/** A positive integer option (e.g. --limit), or `fallback` when it is absent. */
export function intOption(flag: string, value: string | undefined, fallback: number, max = Number.MAX_SAFE_INTEGER): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > max) {
    throw new UsageError(`${flag} ${value} is not an integer from 1 to ${max === Number.MAX_SAFE_INTEGER ? 'any size' : max}`);
  }
  return n;
}

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/**
 * A duration option (e.g. --delay): a number with a unit, 500ms, 30s, 10m, 2h, 1d (a bare number is milliseconds);
 * undefined when absent. A usage error names the flag otherwise.
 */
export function durationOption(flag: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$/.exec(value.trim());
  if (!m) throw new UsageError(`${flag} ${value} is not a duration: a number with a unit, e.g. 500ms, 30s, 10m, 2h, 1d`);
  return Number(m[1]) * DURATION_UNITS[m[2] ?? 'ms']!;
}

/** A time option (e.g. --run-at): an ISO 8601 time, e.g. 2030-01-01T09:00:00Z; undefined when absent. */
export function timeOption(flag: string, value: string | undefined): Date | undefined {
  if (value === undefined) return undefined;
  const at = new Date(value);
  if (!/^\d{4}-\d{2}-\d{2}/.test(value) || Number.isNaN(at.getTime())) {
    throw new UsageError(`${flag} ${value} is not a time: use ISO 8601, e.g. 2030-01-01T09:00:00Z`);
  }
  return at;
}

/**
 * A time option that may also be a duration from now (e.g. --deadline 10m or --deadline 2030-01-01T09:00:00Z): the
 * time, by this machine's clock for a duration; undefined when absent.
 */
export function timeOrDurationOption(flag: string, value: string | undefined): Date | undefined {
  if (value === undefined) return undefined;
  if (/^\d+(?:\.\d+)?(ms|s|m|h|d)?$/.test(value.trim())) return new Date(Date.now() + durationOption(flag, value)!);
  if (/^\d{4}-\d{2}-\d{2}/.test(value) && !Number.isNaN(new Date(value).getTime())) return new Date(value);
  throw new UsageError(`${flag} ${value} is neither a time (ISO 8601, e.g. 2030-01-01T09:00:00Z) nor a duration (30s, 10m, 2h, 1d)`);
}
