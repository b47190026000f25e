// Retrying a write whose connection died under it. Used for the writes that record work already done (an attempt's
// outcome in src/worker/runner.ts, an effect's result in src/worker/effects.ts): left unrecorded, the work would be done
// again by the next attempt. Only safe for statements that are idempotent when the lost try did commit (the
// ballast verbs they call are: a second record finds the first, or the attempt finished and BA008 stops the retry).
import type { Logger } from 'pino';

/**
 * How long a write is retried while the database connection is lost (e.g. Postgres restarting: an immediate-mode
 * restart was measured at 17-19 s before it accepted connections again; the target is to survive 30 s).
 */
export const CONNECTION_RETRY_MS = 120_000;

/** A connection that died under the statement (terminated backend, server restart, reset socket), not a SQL error. */
export function connectionLost(err: unknown): boolean {
  const e = err as { code?: unknown; message?: unknown } | null;
  const code = typeof e?.code === 'string' ? e.code : '';
  if (code.startsWith('08') || ['57P01', '57P02', '57P03', 'ECONNRESET', 'ECONNREFUSED', 'EPIPE', 'ETIMEDOUT'].includes(code)) return true;
  return typeof e?.message === 'string' && /^Connection terminated|Client has encountered a connection error/.test(e.message);
}

/**
 * Runs fn; while it fails because the connection was lost, runs it again with backoff (100 ms doubling to 2 s) for
 * up to `retryMs`. Any other error, or a lost connection past the deadline, is thrown. `what` names the write in
 * the warning logged before each retry.
 */
export async function retryOnConnectionLoss<T>(fn: () => Promise<T>, log: Logger, what: string,
  retryMs = CONNECTION_RETRY_MS): Promise<T> {
  const until = Date.now() + retryMs;
  for (let delay = 100; ; delay = Math.min(delay * 2, 2000)) {
    try {
      return await fn();
    } catch (err) {
      if (!connectionLost(err) || Date.now() + delay > until) throw err;
      log.warn({ err: (err as Error).message, retry_ms: delay }, `could not ${what} (database connection lost); retrying`);
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
  }
}
