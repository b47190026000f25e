// The HTTP probe of the subscriptions scenario: a worker thread of the load client (bench/scenarios/subs-client.ts),
// so it has an event loop of its own and a probe's latency is the API's answer time, not the time the answer waited
// behind a thousand clients' messages in the client's loop (the machine's cores are still shared).
// Every PROBE_EVERY_MS a `{ __typename }` POST to /graphql and a GET /health, each without waiting for the previous
// ones (a stalled server collects timeouts rather than fewer samples); a probe without an answer within
// PROBE_TIMEOUT_MS counts as PROBE_TIMEOUT_MS.
// workerData: { httpUrl, healthUrl, token }. Messages: 'start'; 'stop' -> { graphql: ms[], health: ms[], timeouts, errors }
// once the probes in flight have settled.
import { parentPort, workerData } from 'node:worker_threads';

const PROBE_TIMEOUT_MS = 10_000;
const PROBE_EVERY_MS = 100;

const { httpUrl, healthUrl, token } = workerData as { httpUrl: string; healthUrl: string; token: string };
const result = { graphql: [] as number[], health: [] as number[], timeouts: 0, errors: 0 };
const inFlight = new Set<Promise<void>>();
let timer: NodeJS.Timeout | undefined;

function probeOnce(kind: 'graphql' | 'health'): void {
  const t0 = performance.now();
  const init: RequestInit = kind === 'graphql'
    ? { method: 'POST', headers: { 'content-type': 'application/json', accept: 'application/json', authorization: `Bearer ${token}` },
        body: JSON.stringify({ query: '{ __typename }' }), signal: AbortSignal.timeout(PROBE_TIMEOUT_MS) }
    : { method: 'GET', signal: AbortSignal.timeout(PROBE_TIMEOUT_MS) };
  const p = fetch(kind === 'graphql' ? httpUrl : healthUrl, init).then(async (res) => {
    await res.arrayBuffer();
    result[kind].push(performance.now() - t0);
    if (!res.ok) result.errors++;
  }, (err: unknown) => {
    // Unanswered within the timeout (or the connection failed): counted as the timeout.
    result[kind].push(PROBE_TIMEOUT_MS);
    if ((err as Error)?.name === 'TimeoutError') result.timeouts++;
    else result.errors++;
  }).finally(() => inFlight.delete(p));
  inFlight.add(p);
}

parentPort!.on('message', (msg: string) => {
  if (msg === 'start') {
    timer = setInterval(() => {
      probeOnce('graphql');
      probeOnce('health');
    }, PROBE_EVERY_MS);
  } else if (msg === 'stop') {
    clearInterval(timer);
    void Promise.allSettled([...inFlight]).then(() => parentPort!.postMessage(result));
  }
});
