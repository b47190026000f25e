// `ballast watch <job>`: a job's progress, live, in the terminal. LISTEN first, then read the current state, so
// nothing that happens in between is missed; events already shown (by id) are not shown twice. Ends with the result
// or the error, and an exit code a script can use (WATCH_EXIT). With --tokens, also the text streaming model steps
// send (live tokens, src/db/token-stream.ts), batch by batch, from the first character of each step's token log: a
// call's first batch names its attempt, rung, model and call, and the end of an attempt's streaming is a line of its
// own, so a retry (a new attempt streaming on after a failure or a dead worker) reads as one.
import type { BallastDb, Job, Step } from '../db/api.ts';
import { listenEvents, type LiveEvent } from '../db/events-listener.ts';
import { followJobTokens, type JobTokenChunk, type JobTokensFollower } from '../db/token-stream.ts';
import { isFinalJobStatus, type FinalJobStatus } from '../statuses.ts';

/** Exit codes of `watch`, by the job's final status. */
export const WATCH_EXIT = { completed: 0, partially_completed: 5, failed: 6, cancelled: 7, timeout: 124, not_found: 3 } as const satisfies
  Record<FinalJobStatus | 'timeout' | 'not_found', number>;

export interface WatchOptions {
  url: string;
  db: BallastDb;
  jobId: string;
  /** JSON lines instead of text: the state, then one line per event, then the final job. */
  json: boolean;
  /** Give up after this many ms (exit 124). */
  timeoutMs: number | null;
  /** Also print the text streaming model steps send (live tokens). */
  tokens?: boolean;
  out?: (line: string) => void;
}

function time(at: string | Date | null | undefined): string {
  const d = at ? new Date(at) : new Date();
  return d.toISOString().slice(11, 23);
}

function stepLine(s: Pick<Step, 'name' | 'status' | 'attempts' | 'max_attempts'>): string {
  return `  ${s.name.padEnd(24)} ${String(s.status).padEnd(12)} attempt ${s.attempts}/${s.max_attempts}`;
}

function describe(e: LiveEvent): string {
  if (e.type === 'step_progress') return `${time(e.at)}  step ${e.step_name ?? e.step_id} progress ${JSON.stringify(e.progress)}`;
  if (e.step_id !== null) return `${time(e.at)}  step ${e.step_name ?? e.step_id} ${e.type.replace(/^step_/, '')}`;
  return `${time(e.at)}  job ${e.type.replace(/^job_/, '')}`;
}

function tokenLine(c: JobTokenChunk, json: boolean): string {
  if (json) {
    return JSON.stringify({ type: c.done ? 'tokens_attempt_end' : 'tokens', step_id: c.stepId, step_name: c.stepName, offset: c.startOffset,
      text: c.text, attempt_id: c.attemptId, attempt: c.attempt, segment: c.segment, rung: c.rung, model: c.model, new_segment: c.first });
  }
  const attempt = c.attempt === null ? `attempt ${c.attemptId}` : `attempt ${c.attempt}`;
  if (c.done) return `${time(null)}  step ${c.stepName} tokens end of ${attempt}`;
  const head = c.first ? `(${attempt}, ${c.rung} ${c.model}, call ${c.segment}) ` : '';
  return `${time(null)}  step ${c.stepName} tokens ${head}${JSON.stringify(c.text)}`;
}

/** Follows the job until it is final; returns the exit code. */
export async function watchJob(o: WatchOptions): Promise<number> {
  const out = o.out ?? ((line: string) => console.log(line));
  const buffered: LiveEvent[] = [];
  let deliver: ((e: LiveEvent) => void) | null = null;
  let failed: Error | null = null;
  const listener = await listenEvents(o.url, (e) => {
    if (String(e.job_id) !== o.jobId) return;
    if (deliver) deliver(e);
    else buffered.push(e);
  }, (err) => { failed = err; });
  let tokens: JobTokensFollower | undefined;
  try {
    if (o.tokens) tokens = await followJobTokens(o.url, o.jobId, (c) => out(tokenLine(c, o.json)));
    const job = await o.db.getJob(o.jobId);
    if (!job) {
      (o.json ? out(JSON.stringify({ error: `job ${o.jobId} does not exist` })) : out(`job ${o.jobId} does not exist`));
      return WATCH_EXIT.not_found;
    }
    const steps = await o.db.getSteps(o.jobId);
    const events = await o.db.getEvents(o.jobId);
    // Events already part of the state read above are not printed again (the listener started before that read).
    const seen = new Set(events.map((e) => String(e.id)));
    if (o.json) out(JSON.stringify({ job, steps }));
    else {
      out(`job ${job.id} ${job.pipeline}@${job.pipeline_version} ${job.status}${job.parent_job_id ? ` (child of job ${job.parent_job_id})` : ''}`);
      for (const s of steps.filter((s) => !(s.name.includes('__')))) out(stepLine(s));
    }
    await tokens?.read();
    if (isFinalJobStatus(job.status)) return await finish(job);

    let done: (job: Job) => void = () => {};
    const finished = new Promise<Job>((resolve) => { done = resolve; });
    const onEvent = (e: LiveEvent) => {
      if (e.id !== null && seen.has(String(e.id))) return;
      // tx is a bigint (the event's place in the order): written as a string, JSON.stringify cannot write it.
      out(o.json ? JSON.stringify(e, (_k, v: unknown) => (typeof v === 'bigint' ? String(v) : v)) : describe(e));
      if (e.step_id === null && isFinalJobStatus(e.status)) void o.db.getJob(o.jobId).then((j) => j && done(j));
    };
    for (const e of buffered) onEvent(e);
    deliver = onEvent;
    const timer = o.timeoutMs === null ? null : new Promise<null>((resolve) => setTimeout(() => resolve(null), o.timeoutMs!).unref());
    const final = await Promise.race([finished, ...(timer ? [timer] : [])]);
    if (failed) throw failed;
    if (!final) {
      (o.json ? out(JSON.stringify({ error: 'timeout' })) : out(`still ${((await o.db.getJob(o.jobId))?.status) ?? 'unknown'} after ${o.timeoutMs} ms; stopped watching`));
      return WATCH_EXIT.timeout;
    }
    return await finish(final);
  } finally {
    await tokens?.close();
    await listener.close();
  }

  async function finish(job: Job): Promise<number> {
    await tokens?.read();
    if (o.json) out(JSON.stringify({ job }));
    else if (job.status === 'completed' || job.status === 'partially_completed') out(`${job.status}: ${JSON.stringify(job.result)}`);
    else out(`${job.status}: ${JSON.stringify(job.error)}`);
    return WATCH_EXIT[job.status as keyof typeof WATCH_EXIT] ?? 1;
  }
}
