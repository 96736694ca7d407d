import { setTimeout as delay } from 'node:timers/promises';
import pg from 'pg';
import type { Logger } from '../../core/logger.js';
import { CHANGES_CHANNEL, EVENTS_CHANNEL } from './queries.js';

/** Reconnect backoff of the LISTEN connection: doubles from the first to the last, in ms. */
const FIRST_RETRY_MS = 100;
const LAST_RETRY_MS = 5000;
const CLOSE_WAIT_MS = 1000;

/**
 * The store's change notifications: `emit` calls every subscriber in this process, and a
 * dedicated LISTEN connection (a pg.Client of its own, never a pooled one: a pooled
 * connection would be handed to queries and could drop the LISTEN) turns other processes'
 * NOTIFYs into the same calls.
 *
 * The connection opens lazily, on the first subscription, and survives failures: after an
 * 'error' or 'end' it is dropped and a new one is opened after a backoff (100 ms doubling to
 * 5 s, back to 100 ms once LISTEN succeeds), which LISTENs again. Notifications sent while
 * no connection listened are lost; subscribers keep a slow safety re-check of their own.
 *
 * A change committed by this process is emitted by the store right after its commit, not
 * through the database, so it reaches local subscribers even while the LISTEN connection
 * is still opening or down. The NOTIFYs of this process's own pooled connections (`own`,
 * by backend pid) are therefore ignored when they come back, to call subscribers once.
 *
 * The same connection carries news of the history (EVENTS_CHANNEL): `announceEvents` sends
 * a NOTIFY on it after this process committed events, and `onEvents` subscribers are called
 * for every other process's one, and once each time the connection is ready again, since
 * notifications sent while it was down are lost. The NOTIFY is its own tiny transaction on
 * this connection, never part of the lock transactions: PostgreSQL serializes the commits
 * of every transaction that notifies (a global lock held through the commit's WAL flush),
 * and a NOTIFY in each write transaction cut plain inserts at 50 clients from about 4,000
 * to 400 per second. Announcements are coalesced: one in flight at a time, and the calls
 * made meanwhile send one more after it.
 */
export class ChangeFeed {
  readonly #listeners = new Set<(service: string) => void>();
  readonly #eventListeners = new Set<() => void>();
  readonly #config: pg.ClientConfig;
  readonly #own: ReadonlySet<number>;
  readonly #logger: Logger;
  #client: pg.Client | null = null;
  #announcing = false;
  #announceAgain = false;
  #retry: NodeJS.Timeout | null = null;
  #retryMs = FIRST_RETRY_MS;
  #started = false;
  #closed = false;

  constructor(config: pg.ClientConfig, own: ReadonlySet<number>, logger: Logger) {
    this.#config = config;
    this.#own = own;
    this.#logger = logger;
  }

  subscribe(listener: (service: string) => void): () => void {
    if (this.#closed) throw new Error('the store is closed');
    // A function subscribed twice is called once per change; wrap it to count it twice.
    const entry = (service: string) => listener(service);
    this.#listeners.add(entry);
    this.#start();
    return () => {
      this.#listeners.delete(entry);
    };
  }

  /** Calls `listener()` on news of the history from any process, and after each reconnect. */
  subscribeEvents(listener: () => void): () => void {
    if (this.#closed) throw new Error('the store is closed');
    const entry = () => listener();
    this.#eventListeners.add(entry);
    this.#start();
    return () => {
      this.#eventListeners.delete(entry);
    };
  }

  #start(): void {
    if (this.#started) return;
    this.#started = true;
    void this.#connect();
  }

  /**
   * Tells every other process that this one committed new history events (NOTIFY, on the
   * LISTEN connection; while it is still connecting, the NOTIFY waits for it). Nothing
   * while there is none (between a failure and the reconnect): the others' safety poll finds
   * the events then.
   */
  announceEvents(): void {
    const client = this.#client;
    if (client === null || this.#closed) return;
    if (this.#announcing) {
      this.#announceAgain = true;
      return;
    }
    this.#announcing = true;
    void (async () => {
      try {
        do {
          this.#announceAgain = false;
          await client.query(`NOTIFY ${EVENTS_CHANNEL}`);
        } while (this.#announceAgain && this.#client === client);
      } catch {
        // The connection failed: its 'error' or 'end' handler reconnects.
      } finally {
        this.#announcing = false;
      }
    })();
  }

  #emitEvents(): void {
    for (const listener of [...this.#eventListeners]) {
      try {
        listener();
      } catch (error) {
        this.#logger.error({ err: error }, 'history news listener failed');
      }
    }
  }

  /** Calls every subscriber; one that throws is logged and does not stop the others. */
  emit(service: string): void {
    for (const listener of [...this.#listeners]) {
      try {
        listener(service);
      } catch (error) {
        this.#logger.error({ err: error, service }, 'lock change listener failed');
      }
    }
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#listeners.clear();
    this.#eventListeners.clear();
    if (this.#retry) clearTimeout(this.#retry);
    this.#retry = null;
    const client = this.#client;
    this.#client = null;
    // Bounded: a graceful close of a connection that stopped answering never completes.
    if (client)
      await Promise.race([client.end().catch(() => {}), delay(CLOSE_WAIT_MS, undefined, { ref: false })]);
  }

  async #connect(): Promise<void> {
    if (this.#closed) return;
    // Named after this process, so that an operator (or a test) can tell the replicas'
    // LISTEN connections apart in pg_stat_activity; an application_name given (URL or
    // PGAPPNAME) wins.
    const client = new pg.Client({
      ...this.#config,
      fallback_application_name: `tracker listen ${process.pid}`,
    });
    this.#client = client;
    let lost = false;
    const drop = (error?: unknown) => {
      if (lost) return;
      lost = true;
      if (this.#client === client) this.#client = null;
      client.end().catch(() => {});
      if (this.#closed) return;
      this.#logger.warn(
        { err: error, retryInMs: this.#retryMs },
        'postgres LISTEN connection lost; reconnecting',
      );
      this.#retry = setTimeout(() => {
        this.#retry = null;
        void this.#connect();
      }, this.#retryMs);
      this.#retryMs = Math.min(this.#retryMs * 2, LAST_RETRY_MS);
    };
    // Without an 'error' listener a dropped connection would kill the process.
    client.on('error', drop);
    client.on('end', () => drop(new Error('LISTEN connection ended')));
    client.on('notification', ({ channel, payload, processId }) => {
      if (lost || this.#closed) return;
      if (channel === EVENTS_CHANNEL) {
        // This connection's own announcement: this process read its events already.
        if (processId === (client as unknown as { processID: number | null }).processID) return;
        this.#emitEvents();
        return;
      }
      if (channel !== CHANGES_CHANNEL || payload === undefined) return;
      if (this.#own.has(processId)) return;
      this.emit(payload);
    });
    try {
      await client.connect();
      // One round trip for both (the simple query protocol runs several statements).
      await client.query(`LISTEN ${CHANGES_CHANNEL}; LISTEN ${EVENTS_CHANNEL}`);
    } catch (error) {
      drop(error);
      return;
    }
    if (this.#closed || lost) {
      client.end().catch(() => {});
      return;
    }
    this.#retryMs = FIRST_RETRY_MS;
    this.#logger.debug({ channels: [CHANGES_CHANNEL, EVENTS_CHANNEL] }, 'postgres LISTEN connection ready');
    // Events committed while no connection listened were announced to nobody: read now.
    this.#emitEvents();
  }
}
