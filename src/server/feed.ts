// An async iterator fed by pushes: what one subscription hands to grafast. A consumer slower than its events gets
// SUBSCRIBER_TOO_SLOW once MAX_QUEUED messages wait (it resubscribes with `after`) instead of growing memory
// without bound. return() (the client unsubscribed or disconnected) runs the close callbacks: unregister from the hub.
import { clientError } from './errors.ts';

export const MAX_QUEUED = 10_000;

export class Feed<T> implements AsyncIterableIterator<T> {
  private readonly queue: T[] = [];
  private waiter: { resolve: (r: IteratorResult<T>) => void; reject: (e: unknown) => void } | undefined;
  private error: unknown;
  private finished = false;
  private readonly closers: (() => void)[] = [];

  onClose(fn: () => void): void {
    if (this.finished) fn();
    else this.closers.push(fn);
  }

  push(value: T): void {
    if (this.finished || this.error !== undefined) return;
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = undefined;
      w.resolve({ value, done: false });
      return;
    }
    this.queue.push(value);
    if (this.queue.length > MAX_QUEUED) {
      this.queue.length = 0;
      this.fail(clientError('SUBSCRIBER_TOO_SLOW', `more than ${MAX_QUEUED} messages waited for this subscription; subscribe again with \`after\` set to the last eventId you processed`));
    }
  }

  /** Ends the iteration with `error` after the messages already queued. */
  fail(error: unknown): void {
    if (this.finished || this.error !== undefined) return;
    this.error = error;
    this.close();
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = undefined;
      w.reject(error);
    }
  }

  private close(): void {
    for (const fn of this.closers.splice(0)) fn();
  }

  next(): Promise<IteratorResult<T>> {
    if (this.queue.length > 0) return Promise.resolve({ value: this.queue.shift()!, done: false });
    if (this.error !== undefined && !this.finished) {
      this.finished = true;
      return Promise.reject(this.error);
    }
    if (this.finished) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve, reject) => (this.waiter = { resolve, reject }));
  }

  return(): Promise<IteratorResult<T>> {
    this.finished = true;
    this.queue.length = 0;
    this.close();
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = undefined;
      w.resolve({ value: undefined, done: true });
    }
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): this {
    return this;
  }
}
