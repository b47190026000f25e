// NOTIFY ballast_events (migrations/0014) carries ids only: {"ids":[...]}, {"min_id","max_id","count"} or
// {"progress":{"job_id","step_id"}}. A payload is readable (and forgeable) by every login of the cluster, so it is a
// hint: event-stream.ts reads the events by position whatever a payload says, and uses only a progress report's step
// id, to read that step's progress under its own role.

export type Announcement =
  | { kind: 'ids'; ids: number[] }
  | { kind: 'range'; minId: number; maxId: number; count: number }
  | { kind: 'progress'; jobId: number; stepId: number };

const isId = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v > 0;

/** The announcement a payload carries; null for anything else (not JSON, or another shape). */
export function parseAnnouncement(text: string | undefined): Announcement | null {
  let value: unknown;
  try {
    value = JSON.parse(text ?? '');
  } catch {
    return null;
  }
  if (!value || typeof value !== 'object') return null;
  const o = value as Record<string, unknown>;
  if (Array.isArray(o.ids) && o.ids.every(isId)) return { kind: 'ids', ids: o.ids as number[] };
  if (isId(o.min_id) && isId(o.max_id)) return { kind: 'range', minId: o.min_id, maxId: o.max_id, count: Number(o.count) || 0 };
  const p = o.progress as Record<string, unknown> | undefined;
  if (p && typeof p === 'object' && isId(p.job_id) && isId(p.step_id)) return { kind: 'progress', jobId: p.job_id, stepId: p.step_id };
  return null;
}
