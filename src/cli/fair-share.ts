// `ballast fair-share on|set|off` and `ballast fair-shares`: fair sharing between tenants from the command line
// (migration 0040, docs/flow-control.md). Each is one call of its SQL function through BallastDb (src/db/gates.ts);
// the flags are checked here first, so that a mistake is one line naming the flag and what to pass (exit 2).
// Returns the process exit code.
import type { BallastDb } from '../db/api.ts';
import { actor, parseCommandArgs } from './args.ts';
import { UsageError } from './errors.ts';
import { withNumbers } from './json.ts';
import { table } from './table.ts';

const MAX_WEIGHT = 1_000_000;
const FAIR_SHARE_USAGE = 'fair-share on [--weight <w>], fair-share set <tenant> <weight>, or fair-share off';

/** A weight above 0 and at most 1,000,000 given as `what` (--weight, or the <weight> of `set`). */
function weightOf(what: string, text: string, example: string): number {
  const n = Number(text);
  if (!/^\s*(\d+(\.\d*)?|\.\d+)(e[+-]?\d+)?\s*$/i.test(text) || !(n > 0 && n <= MAX_WEIGHT)) {
    throw new UsageError(`${what} ${text} is not a number above 0 and at most 1000000`, `pass a relative share, e.g. ${example} (3 gets three times the share of 1)`);
  }
  return n;
}

const print = (json: boolean | undefined, value: unknown, line: string) => console.log(json ? JSON.stringify(withNumbers(value)) : line);

/** `ballast fair-share on [--weight <w>]`, `fair-share set <tenant> <weight>`, `fair-share off`. */
export async function fairShareCommand(db: BallastDb, args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  const { values, positionals } = parseCommandArgs(rest, { weight: { type: 'string' }, json: { type: 'boolean' } });
  if (sub === 'on') {
    if (positionals.length > 0) throw new UsageError(`fair-share on takes no argument (got ${positionals.join(' ')})`, 'pass the default weight as --weight <w>, e.g. `ballast fair-share on --weight 2`, or a tenant\'s with `ballast fair-share set <tenant> <weight>`');
    const weight = values.weight === undefined ? 1 : weightOf('--weight', values.weight, '--weight 2');
    const r = await db.setFairShare('*', weight, actor());
    print(values.json, r, `fair sharing on: tenants without a weight of their own have weight ${r.weight}`);
    return 0;
  }
  if (sub === 'set') {
    const [tenant, given, extra] = positionals;
    if (!tenant || (given === undefined && values.weight === undefined) || extra !== undefined) {
      throw new UsageError('fair-share set needs a tenant and a weight', 'e.g. `ballast fair-share set acme 3` (acme gets three times the share of a weight-1 tenant)');
    }
    if (given !== undefined && values.weight !== undefined) {
      throw new UsageError('fair-share set takes the weight once', `pass it as the second argument, e.g. \`ballast fair-share set ${tenant} 3\`, not also as --weight`);
    }
    const weight = given !== undefined ? weightOf('<weight>', given, `\`ballast fair-share set ${tenant} 3\``) : weightOf('--weight', values.weight!, '--weight 3');
    const r = await db.setFairShare(tenant, weight, actor());
    print(values.json, r, r.tenantId === '*'
      ? `fair sharing on: tenants without a weight of their own have weight ${r.weight}`
      : `tenant ${r.tenantId} has weight ${r.weight} (fair sharing is on)`);
    return 0;
  }
  if (sub === 'off') {
    if (positionals.length > 0 || values.weight !== undefined) {
      throw new UsageError(`fair-share off takes no argument (got ${[...positionals, ...(values.weight !== undefined ? ['--weight'] : [])].join(' ')})`, 'run `ballast fair-share off` alone: it turns fair sharing off for every tenant');
    }
    const stopped = await db.stopFairSharing();
    print(values.json, { stopped }, stopped ? 'fair sharing off: weights forgotten, first come, first served' : 'fair sharing was off; nothing changed');
    return 0;
  }
  throw new UsageError(`unknown fair-share command "${sub ?? ''}"`, `use ${FAIR_SHARE_USAGE}`);
}

/** `ballast fair-shares`: the switch (*) and the tenants' weights. */
export async function fairSharesCommand(db: BallastDb, args: string[]): Promise<number> {
  const { values } = parseCommandArgs(args, { json: { type: 'boolean' } });
  const rows = await db.listFairShares();
  if (values.json) console.log(JSON.stringify(withNumbers(rows)));
  else if (rows.length === 0) console.log('fair sharing is off (first come, first served); turn it on with `ballast fair-share on`');
  else console.log(table(rows.map((r) => ({ tenant: r.tenantId, weight: r.weight, 'finish tag': r.finishTag, 'set by': r.setBy, 'set at': r.setAt }))));
  return 0;
}
