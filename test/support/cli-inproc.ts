// Runs a `ballast` command function (src/cli/*.ts) in the test's process: its exit code and what it printed, or the
// one error line the CLI would print (src/cli/errors.ts). Cheaper than spawning the CLI for each flag case.
import type { BallastDb } from '../../src/db/api.ts';
import { describeError, formatError } from '../../src/cli/errors.ts';

export async function runInProcess(db: BallastDb, command: (db: BallastDb, args: string[]) => Promise<number>, ...args: string[]) {
  const lines: string[] = [];
  const log = console.log;
  console.log = (...parts: unknown[]) => { lines.push(parts.join(' ')); };
  try {
    const code = await command(db, args);
    return { code, stdout: lines.join('\n') };
  } catch (err) {
    const report = describeError(err);
    if (!report) throw err;
    return { code: report.exitCode, stdout: lines.join('\n'), stderr: formatError(report) };
  } finally {
    console.log = log;
  }
}
