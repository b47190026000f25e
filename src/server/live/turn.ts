// How much of one event-loop turn the live fan-out may use: the hub's dispatch (hub.ts) and the sockets' flush
// (connection.ts) each stop after this much work and yield, so HTTP requests waiting behind them wait little.

/** Connections written per turn of the event loop, at most... */
export const FLUSH_PER_TURN = 100;
/** ...and for about this long (ms), so that the HTTP requests waiting behind a round wait little. */
export const TURN_BUDGET_MS = 2;
