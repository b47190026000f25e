// LISTEN ballast_events on a connection of its own: every audit event and progress report, as the NOTIFY payload
// carries it (0010: id, job_id, step_id, type, status, tenant_id, step_name, at; progress reports: progress).
import pg from 'pg';

export interface LiveEvent {
  /** The event's id in ballast.events; absent for progress reports (they are not stored as events). */
  id?: number;
  job_id: number;
  step_id: number | null;
  type: string;
  status: string | null;
  tenant_id?: string;
  step_name?: string | null;
  at?: string;
  progress?: unknown;
}

export interface EventsListener {
  close(): Promise<void>;
}

/** Starts listening; resolves once LISTEN is in effect, so nothing committed after it is missed. */
export async function listenEvents(url: string, onEvent: (e: LiveEvent) => void, onError?: (err: Error) => void): Promise<EventsListener> {
  const client = new pg.Client({ connectionString: url, application_name: 'ballast-listen' });
  client.on('error', (err) => onError?.(err));
  client.on('notification', (msg) => {
    if (msg.channel !== 'ballast_events' || !msg.payload) return;
    try {
      onEvent(JSON.parse(msg.payload) as LiveEvent);
    } catch (err) {
      onError?.(err as Error);
    }
  });
  await client.connect();
  await client.query('listen ballast_events');
  return { close: () => client.end() };
}
