// The database doorway for live tokens (migrations/0043_live_tokens.sql): the worker's flushes and the sweep, the
// reads of a step's token log (a subscriber's backlog under its own role, the API's live reads, `ballast watch`), and
// the NOTIFY channel ballast_tokens with its payload {"step_id", "job_id"}: a hint to read, never trusted for content.
import pg from 'pg';
import type { BallastDb } from './api.ts';
import type { Queryable } from './verbs.ts';

export const TOKENS_CHANNEL = 'ballast_tokens';

/** One row of a step's token log. Ids as decimal strings. */
export interface TokenChunk {
  stepId: string;
  seq: string;
  attemptId: string;
  segment: number;
  rung: string | null;
  model: string | null;
  startOffset: number;
  endOffset: number;
  text: string;
  first: boolean;
  done: boolean;
}

/** A ballast_tokens payload: the step (and its job) whose token log grew; null for anything else. */
export function parseTokensNotice(text: string | undefined): { stepId: string; jobId: string } | null {
  let o: unknown;
  try {
    o = JSON.parse(text ?? '');
  } catch {
    return null;
  }
  const { step_id, job_id } = (o ?? {}) as Record<string, unknown>;
  const id = (v: unknown) => (typeof v === 'number' && Number.isSafeInteger(v) && v > 0 ? String(v) : null);
  const stepId = id(step_id);
  const jobId = id(job_id);
  return stepId && jobId ? { stepId, jobId } : null;
}

const CHUNK_COLUMNS = `step_id::text as "stepId", seq::text as seq, attempt_id::text as "attemptId", segment, rung, model,
  start_offset as "startOffset", end_offset as "endOffset", text, first, done`;

/**
 * One flush of a worker's token stream (ballast_private.append_tokens): the step's log grows by `text`, or ends the
 * attempt's streaming (`done`). Returns the log's new end offset, or null when the attempt no longer runs.
 */
export async function appendTokens(db: BallastDb, attemptId: string, b: {
  segment: number; rung: string | null; model: string | null; text: string; first: boolean; done: boolean;
}): Promise<number | null> {
  const { rows } = await db.pool.query<{ end: number | null }>(
    'select ballast_private.append_tokens($1, $2, $3, $4, $5, $6, $7) as "end"',
    [attemptId, b.segment, b.rung, b.model, b.text, b.first, b.done]);
  return rows[0]!.end;
}

/** ballast.prune_token_chunks: deletes the logs of final steps older than `keepMs`; returns the rows deleted. */
export async function pruneTokenChunks(db: BallastDb, keepMs = 60_000): Promise<number> {
  const { rows } = await db.pool.query<{ n: number }>(
    `select ballast.prune_token_chunks(make_interval(secs => $1::float8 / 1000)) as n`, [keepMs]);
  return rows[0]!.n;
}

/** A subscriber's backlog, read under its role: the step's status (null: not visible) and its log from an offset. */
export interface TokenBacklog {
  stepStatus: string | null;
  chunks: TokenChunk[];
  /** The seq of the step's last row (whatever the offset asked), or null for an empty log. */
  lastSeq: string | null;
  /** The last row ends an attempt's streaming. */
  ended: boolean;
}

// One statement, one snapshot: the step (row-level security decides whether the caller sees it), the rows from the
// offset (the first one cut to start at it) and the log's last row.
const BACKLOG_SQL = `
  select s.status as "stepStatus",
         (select coalesce(json_agg(json_build_object('stepId', c.step_id::text, 'seq', c.seq::text,
                   'attemptId', c.attempt_id::text, 'segment', c.segment, 'rung', c.rung, 'model', c.model,
                   'startOffset', greatest(c.start_offset, $2), 'endOffset', c.end_offset,
                   'text', substr(c.text, greatest($2 - c.start_offset, 0) + 1),
                   'first', c.first and c.start_offset >= $2, 'done', c.done) order by c.seq), '[]')
            from ballast.model_tokens c
           where c.step_id = s.id and (c.end_offset > $2 or (c.done and c.end_offset >= $2))) as chunks,
         l.seq::text as "lastSeq", coalesce(l.done, false) as ended
    from ballast.steps s
    left join lateral (select c.seq, c.done from ballast.model_tokens c where c.step_id = s.id
                        order by c.seq desc limit 1) l on true
   where s.id = $1`;

export async function readBacklog(c: Queryable, stepId: string, fromOffset: number): Promise<TokenBacklog> {
  const { rows } = await c.query<TokenBacklog>({ text: BACKLOG_SQL, values: [stepId, fromOffset] });
  const r = rows[0];
  return r ? { ...r, chunks: r.chunks ?? [] } : { stepStatus: null, chunks: [], lastSeq: null, ended: false };
}

/**
 * The step's rows after a seq, in order: the API's live reads (its own role, every tenant; the subscriptions were
 * authorized when they opened), or a subscriber's own last read under its role (row-level security applies).
 */
export async function readAfter(c: Queryable, stepId: string, afterSeq: string | null, limit = 1000): Promise<TokenChunk[]> {
  const { rows } = await c.query<TokenChunk>({
    text: `select ${CHUNK_COLUMNS} from ballast_private.token_chunks
      where step_id = $1 and seq > coalesce($2::bigint, 0) order by seq limit $3`,
    values: [stepId, afterSeq, limit],
  });
  return [...rows];
}

/** A row of a job's token logs as `ballast watch` prints it: with its step's name and its attempt's number. */
export type JobTokenChunk = TokenChunk & { stepName: string; attempt: number | null };

/** The rows of a job's steps after the seq seen per step (`ballast watch`; `seen`: step id -> last seq). */
export async function readJobAfter(c: pg.ClientBase | pg.Pool, jobId: string, seen: Record<string, string>): Promise<JobTokenChunk[]> {
  const { rows } = await c.query<JobTokenChunk>(
    `select c.step_id::text as "stepId", c.seq::text as seq, c.attempt_id::text as "attemptId", c.segment, c.rung, c.model,
            c.start_offset as "startOffset", c.end_offset as "endOffset", c.text, c.first, c.done, s.name as "stepName",
            a.number as attempt
       from ballast_private.token_chunks c join ballast_private.steps s on s.id = c.step_id
       left join ballast_private.attempts a on a.id = c.attempt_id
      where c.job_id = $1 and c.seq > coalesce(($2::jsonb ->> c.step_id::text)::bigint, 0)
      order by c.step_id, c.seq limit 1000`, [jobId, JSON.stringify(seen)]);
  return rows;
}

export interface JobTokensFollower {
  /** Reads what is new now; resolves once it (and any read it caused) is over. */
  read(): Promise<void>;
  close(): Promise<void>;
}

/**
 * Follows the token logs of one job's steps (`ballast watch --tokens`) on a connection of its own: LISTEN first, so
 * a row written after the first read() is announced; each read hands over the rows after the last seen per step.
 */
export async function followJobTokens(url: string, jobId: string, onChunk: (c: JobTokenChunk) => void): Promise<JobTokensFollower> {
  const client = new pg.Client({ connectionString: url, application_name: 'ballast-watch-tokens' });
  const seen: Record<string, string> = {};
  let reading: Promise<void> | undefined;
  let again = false;
  const loop = async () => {
    do {
      again = false;
      const rows = await readJobAfter(client, jobId, seen);
      for (const r of rows) {
        seen[r.stepId] = r.seq;
        onChunk(r);
      }
      if (rows.length === 1000) again = true;
    } while (again);
  };
  const read = (): Promise<void> => {
    if (reading) {
      again = true;
      return reading;
    }
    reading = loop().finally(() => (reading = undefined));
    return reading;
  };
  client.on('notification', (msg) => {
    if (parseTokensNotice(msg.payload)?.jobId === jobId) read().catch(() => {});
  });
  client.on('error', () => {});
  await client.connect();
  await client.query(`listen ${TOKENS_CHANNEL}`);
  return { read, close: async () => { await reading?.catch(() => {}); await client.end().catch(() => {}); } };
}
