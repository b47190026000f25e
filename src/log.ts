// Structured logs (pino, JSON). In a terminal they are pretty-printed; piped or in CI they stay JSON lines.
// Every log line about work carries job_id, step_id and attempt_id through child loggers (see worker.ts).
import { pino, type Logger } from 'pino';

export type { Logger };

export function createLogger(options: { level?: string; pretty?: boolean; name?: string } = {}): Logger {
  const level = options.level ?? process.env.LOG_LEVEL ?? 'info';
  const pretty = options.pretty ?? (process.stdout.isTTY === true && process.env.LOG_FORMAT !== 'json');
  return pino({
    name: options.name ?? 'ballast',
    level,
    ...(pretty
      ? { transport: { target: 'pino-pretty', options: { colorize: true, translateTime: 'HH:MM:ss.l', ignore: 'pid,hostname,worker_id', singleLine: true } } }
      : {}),
  });
}
