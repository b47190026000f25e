// LISTEN ballast_events on a connection of its own: every audit event and progress report. A notification carries
// ids only (migrations/0014); the listener reads the rows they name with one query per notification on the same
// connection, under its role, and hands them over one by one (id, job_id, step_id, type, status, tenant_id,
// step_name, at; progress reports: type step_progress with the step's progress), each event once, in id order
// within a notification and in commit order across notifications.
import pg from 'pg';
import { AnnouncementReader, CHANNEL, type LiveEvent } from './event-notifications.ts';

export type { LiveEvent } from './event-notifications.ts';

export interface EventsListener {
  close(): Promise<void>;
}

/** Starts listening; resolves once LISTEN is in effect, so nothing committed after it is missed. */
export async function listenEvents(url: string, onEvent: (e: LiveEvent) => void, onError?: (err: Error) => void): Promise<EventsListener> {
  const client = new pg.Client({ connectionString: url, application_name: 'ballast-listen' });
  client.on('error', (err) => onError?.(err));
  const reader = new AnnouncementReader(client, {
    deliver: (e, firstSeq) => {
      if (firstSeq === undefined) onEvent(e);
    },
    error: (err) => onError?.(err),
  });
  client.on('notification', (msg) => {
    if (msg.channel === CHANNEL) reader.push(msg.payload);
  });
  await client.connect();
  await client.query(`listen ${CHANNEL}`);
  return {
    close: async () => {
      reader.close();
      await client.end();
    },
  };
}
