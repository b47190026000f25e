// ballast's NOTIFY channels and their payloads, read in one place. The SQL that sends them:
//   ballast_events  ballast_private.notify_events and flush_events_notice (0004_state_machines): {"ids":[...]} or, when the ids
//                   would not fit, {"min_id","max_id","count"}; ballast.report_progress: {"progress":{"job_id","step_id"}}.
//   ballast_queue   ballast_private.announce_queued and ballast.settle_and_claim: an empty payload, a wake-up.
//   ballast_cancel  ballast_private.cancel_job: {"job_id", "attempts": [{"attempt_id", "worker_id"}]}.
//   ballast_gates   ballast.pause_key and ballast.set_limit (0037): an empty payload; workers give back the claims they
//                   have not started, so that those pass the claim's gate again.
// A payload is readable (and forgeable) by every login of the cluster, so it is a hint: event-stream.ts reads the
// events by position whatever a payload says, and uses only a progress report's step id, to read that step's progress
// under its own role; the worker aborts a cancelled attempt only after the database confirms it ended (worker.ts).
// test/facts.test.ts checks that what the SQL sends is what these parsers accept.

export const CHANNELS = { events: 'ballast_events', queue: 'ballast_queue', cancel: 'ballast_cancel', gates: 'ballast_gates' } as const;

export type Announcement =
  | { kind: 'ids'; ids: number[] }
  | { kind: 'range'; minId: number; maxId: number; count: number }
  | { kind: 'progress'; jobId: number; stepId: number };

/** A ballast_cancel notice: the job, and its attempts that were running (ids as decimal strings). */
export interface CancelNotice {
  jobId: string;
  attempts: { attemptId: string; workerId: string | null }[];
}

const isId = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v > 0;

function parseObject(text: string | undefined): Record<string, unknown> | null {
  let value: unknown;
  try {
    value = JSON.parse(text ?? '');
  } catch {
    return null;
  }
  return value && typeof value === 'object' && !Array.isArray(value) ? value as Record<string, unknown> : null;
}

/** The announcement a ballast_events payload carries; null for anything else (not JSON, or another shape). */
export function parseAnnouncement(text: string | undefined): Announcement | null {
  const o = parseObject(text);
  if (!o) return null;
  if (Array.isArray(o.ids) && o.ids.every(isId)) return { kind: 'ids', ids: o.ids as number[] };
  if (isId(o.min_id) && isId(o.max_id)) return { kind: 'range', minId: o.min_id, maxId: o.max_id, count: Number(o.count) || 0 };
  const p = o.progress as Record<string, unknown> | undefined;
  if (p && typeof p === 'object' && isId(p.job_id) && isId(p.step_id)) return { kind: 'progress', jobId: p.job_id, stepId: p.step_id };
  return null;
}

const DECIMAL_ID = /^[1-9][0-9]{0,18}$/;
const idText = (v: unknown): string | null =>
  isId(v) ? String(v) : typeof v === 'string' && DECIMAL_ID.test(v) ? v : null;

/**
 * The notice a ballast_cancel payload carries; null for anything else. Attempts that are not well formed are
 * dropped (a forged or damaged entry costs nothing).
 */
export function parseCancelNotice(text: string | undefined): CancelNotice | null {
  const o = parseObject(text);
  if (!o) return null;
  const jobId = idText(o.job_id);
  if (jobId === null || !Array.isArray(o.attempts)) return null;
  const attempts: CancelNotice['attempts'] = [];
  for (const a of o.attempts as unknown[]) {
    if (!a || typeof a !== 'object') continue;
    const { attempt_id, worker_id } = a as Record<string, unknown>;
    const attemptId = idText(attempt_id);
    if (attemptId === null || (worker_id !== null && typeof worker_id !== 'string')) continue;
    attempts.push({ attemptId, workerId: worker_id });
  }
  return { jobId, attempts };
}
