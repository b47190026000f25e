// Every audit event and progress report, live, on a connection of its own (`ballast watch`, the start demo): a thin
// consumer of EventStream (event-stream.ts), so events arrive once each, final, in the order a resume returns them
// ((tx, id), migrations/0004_state_machines.sql), from the moment the listener started; progress reports (type step_progress, no id)
// arrive as they are read.
import { EventStream, type StreamEvent } from './event-stream.ts';

export type LiveEvent = StreamEvent;

export interface EventsListener {
  close(): Promise<void>;
}

/** Starts listening; resolves once LISTEN is in effect, so nothing that becomes final after it is missed. */
export async function listenEvents(url: string, onEvent: (e: LiveEvent) => void, onError?: (err: Error) => void): Promise<EventsListener> {
  const stream = new EventStream({
    connectionString: url,
    onEvents: (events, progress) => {
      for (const e of events) onEvent(e);
      for (const p of progress) onEvent(p);
    },
    onConnection: (connected, err) => {
      if (!connected && err) onError?.(err);
    },
  });
  await stream.start();
  return { close: () => stream.stop() };
}
