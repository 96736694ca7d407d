import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import { ErrorCode, TrackerError } from './core/errors.js';
import { freeSlots } from './core/grants.js';
import type { Resource } from './core/lock.js';
import type { LockEvent } from './core/lock-service.js';
import type { LockStore } from './core/lock-store.js';
import type { WebhookStatus } from './core/webhooks.js';

/** Hold times run from milliseconds (a quick job) to days (a forgotten lock). */
const HOLD_BUCKETS = [0.01, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 86_400, 7 * 86_400];
/** Request and acquire latencies: sub-millisecond on SQLite, up to a long wait in a queue. */
const LATENCY_BUCKETS = [
  0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 30, 300, 3600,
];

export interface MetricsSources {
  /** Held locks and live waiters, read from the store at each scrape. */
  readonly stats: () => Promise<{ locks: number; waiters: number }>;
  /**
   * The registered resources with their holders and waiters, read from the store at each
   * scrape (once for all the per-label gauges). The registry is small: a few hundred entries.
   */
  readonly resources: () => Promise<readonly Resource[]>;
  /** Connected watchers (SSE and gRPC streams): how many, what they have waiting, how many were dropped. */
  readonly watchers: { readonly size: number; readonly bufferedBytes: number; readonly dropped: number };
  /** The webhooks and how far behind each one's delivery is, read at each scrape. */
  readonly webhooks?: () => Promise<readonly WebhookStatus[]>;
}

/** What the per-label gauges show of one label. */
export interface LabelTotals {
  /** Registered resources carrying the label. */
  resources: number;
  /** Their capacities, added up. */
  capacity: number;
  /** Locks held on them (every mode). */
  holders: number;
  /** Requests waiting for one of them (by name or by label), each counted once. */
  waiters: number;
  /** How many more exclusive holders they admit now, added up. */
  free: number;
}

/** The registry's totals per label (a resource without labels counts under none). */
export function labelTotals(resources: readonly Resource[]): Map<string, LabelTotals> {
  const totals = new Map<string, LabelTotals>();
  // A label request waits on every resource carrying its label: count each request once.
  const waiting = new Map<string, Set<string>>();
  for (const resource of resources) {
    const free = freeSlots(resource);
    for (const label of resource.labels) {
      const total = totals.get(label) ?? { resources: 0, capacity: 0, holders: 0, waiters: 0, free: 0 };
      const requests = waiting.get(label) ?? new Set<string>();
      for (const waiter of resource.waiters) requests.add(waiter.lockId);
      total.resources++;
      total.capacity += resource.capacity;
      total.holders += resource.holders.length;
      total.free += free;
      total.waiters = requests.size;
      totals.set(label, total);
      waiting.set(label, requests);
    }
  }
  return totals;
}

/**
 * The process's Prometheus metrics, in a registry of its own (several servers may share one
 * process in tests). Counters and histograms count what this process did, so summing them
 * over replicas gives the cluster's totals; the two gauges read the shared store, so every
 * replica reports the same value (aggregate them with max, not sum).
 */
export function createMetrics(sources: MetricsSources) {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const registers = [registry];

  new Gauge({
    name: 'tracker_locks_held',
    help: 'Locks held right now (in the whole store, as this replica reads it).',
    registers,
    async collect() {
      this.set((await sources.stats()).locks);
    },
  });
  new Gauge({
    name: 'tracker_waiters',
    help: 'Requests waiting in a queue right now (in the whole store).',
    registers,
    async collect() {
      this.set((await sources.stats()).waiters);
    },
  });
  // One read of the registry per scrape, shared by the per-label gauges (prom-client starts
  // every metric's collect in the same turn).
  const perLabel = oncePerScrape(() => sources.resources().then(labelTotals));
  const labelGauge = (name: string, help: string, field: keyof LabelTotals) =>
    new Gauge({
      name,
      help,
      labelNames: ['label'],
      registers,
      async collect() {
        const totals = await perLabel();
        this.reset();
        for (const [label, total] of totals) this.set({ label }, total[field]);
      },
    });
  labelGauge(
    'tracker_label_resources',
    'Registered resources carrying the label (in the whole store).',
    'resources',
  );
  labelGauge(
    'tracker_label_capacity',
    'Capacities of the resources carrying the label, added up.',
    'capacity',
  );
  labelGauge('tracker_label_holders', 'Locks held on resources carrying the label.', 'holders');
  labelGauge(
    'tracker_label_waiters',
    'Requests waiting for a resource carrying the label (by name or by label), each counted once.',
    'waiters',
  );
  labelGauge(
    'tracker_label_free',
    'How many more exclusive holders the resources carrying the label admit now, added up.',
    'free',
  );
  new Gauge({
    name: 'tracker_watchers',
    help: 'Watch streams (SSE and gRPC) connected to this replica.',
    registers,
    collect() {
      this.set(sources.watchers.size);
    },
  });
  new Gauge({
    name: 'tracker_watchers_buffered_bytes',
    help: 'Bytes written to watch streams and not yet sent (slow readers), on this replica.',
    registers,
    collect() {
      this.set(sources.watchers.bufferedBytes);
    },
  });
  new Counter({
    name: 'tracker_watchers_dropped_total',
    help: 'Watch streams ended for reading too slowly (WATCHER_TOO_SLOW), on this replica.',
    registers,
    collect() {
      this.reset();
      this.inc(sources.watchers.dropped);
    },
  });
  const acquisitions = new Counter({
    name: 'tracker_acquisitions_total',
    help: 'Acquire requests by result: granted, held (refused at once), timeout (waited in vain), cancelled, failed.',
    labelNames: ['result'],
    registers,
  });
  const acquireSeconds = new Histogram({
    name: 'tracker_acquire_duration_seconds',
    help: 'How long acquire requests took, a wait in the queue included, by result.',
    labelNames: ['result'],
    buckets: LATENCY_BUCKETS,
    registers,
  });
  const releases = new Counter({
    name: 'tracker_releases_total',
    help: 'Locks that ended, by kind: released, force-released, stolen, expired (expiries this replica swept).',
    labelNames: ['kind'],
    registers,
  });
  const holdSeconds = new Histogram({
    name: 'tracker_lock_hold_seconds',
    help: 'How long locks were held, by how they ended.',
    labelNames: ['kind'],
    buckets: HOLD_BUCKETS,
    registers,
  });
  const httpSeconds = new Histogram({
    name: 'tracker_http_request_duration_seconds',
    help: 'REST requests by method, route (as declared) and status code.',
    labelNames: ['method', 'route', 'status_code'],
    buckets: LATENCY_BUCKETS,
    registers,
  });
  const grpcSeconds = new Histogram({
    name: 'tracker_grpc_request_duration_seconds',
    help: 'gRPC calls by method and status code.',
    labelNames: ['method', 'code'],
    buckets: LATENCY_BUCKETS,
    registers,
  });
  const storeErrors = new Counter({
    name: 'tracker_store_errors_total',
    help: 'Store operations that failed because the store was unreachable or too slow, by operation.',
    labelNames: ['operation'],
    registers,
  });
  const grpcRefused = new Counter({
    name: 'tracker_grpc_connections_refused_total',
    help: 'gRPC connections refused or cut, by reason: total and per-address (the caps), handshake-timeout, not-http2.',
    labelNames: ['reason'],
    registers,
  });
  let grpcConnections: () => number = () => 0;
  new Gauge({
    name: 'tracker_grpc_connections',
    help: 'Open gRPC connections (handshaking ones included), on this replica.',
    registers,
    collect() {
      this.set(grpcConnections());
    },
  });
  for (const reason of ['total', 'per-address', 'handshake-timeout', 'not-http2'])
    grpcRefused.inc({ reason }, 0);
  const authFailures = new Counter({
    name: 'tracker_auth_failures_total',
    help: 'Failed authentications by result: refused (answered 401), limited (answered 429: the client address used up its allowance of failures).',
    labelNames: ['result'],
    registers,
  });
  const webhookDeliveries = new Counter({
    name: 'tracker_webhook_deliveries_total',
    help: 'Webhook delivery attempts by this replica, by webhook and result: ok (a 2xx) or failed.',
    labelNames: ['webhook', 'result'],
    registers,
  });
  const webhookStatus = oncePerScrape(async () => (sources.webhooks ? await sources.webhooks() : []));
  const webhookGauge = (name: string, help: string, value: (status: WebhookStatus) => number) =>
    new Gauge({
      name,
      help,
      labelNames: ['webhook'],
      registers,
      async collect() {
        const statuses = await webhookStatus();
        this.reset();
        for (const status of statuses) this.set({ webhook: status.webhook.name }, value(status));
      },
    });
  webhookGauge(
    'tracker_webhook_lag_seconds',
    'How old the oldest history event the webhook has not delivered yet is (0: caught up).',
    (status) => status.lagSeconds,
  );
  webhookGauge(
    'tracker_webhook_pending_events',
    'History events after the webhook’s cursor, counted up to 1000.',
    (status) => status.pending,
  );
  webhookGauge(
    'tracker_webhook_failures',
    'Consecutive failed delivery attempts of the webhook (0 after a success).',
    (status) => status.webhook.failures,
  );
  for (const result of ['granted', 'held', 'timeout', 'cancelled', 'failed']) acquisitions.inc({ result }, 0);
  for (const result of ['refused', 'limited']) authFailures.inc({ result }, 0);
  for (const kind of ['released', 'force-released', 'stolen', 'expired']) releases.inc({ kind }, 0);

  return {
    registry,

    /** A webhook delivery attempt's outcome. */
    webhookAttempt(webhook: string, ok: boolean): void {
      webhookDeliveries.inc({ webhook, result: ok ? 'ok' : 'failed' });
    },

    /** The service's events (onEvent). */
    observe(event: LockEvent): void {
      switch (event.type) {
        case 'acquired':
          acquisitions.inc({ result: 'granted' });
          acquireSeconds.observe({ result: 'granted' }, event.ms / 1000);
          return;
        case 'refused':
          acquisitions.inc({ result: event.reason });
          acquireSeconds.observe({ result: event.reason }, event.ms / 1000);
          return;
        case 'released':
        case 'force-released':
        case 'stolen':
        case 'expired': {
          const { lock } = event;
          const end = event.type === 'expired' && lock.expiresAt ? lock.expiresAt.getTime() : Date.now();
          releases.inc({ kind: event.type });
          holdSeconds.observe({ kind: event.type }, Math.max(0, end - lock.createdAt.getTime()) / 1000);
          return;
        }
        default:
          return;
      }
    },

    http(method: string, route: string, statusCode: number, seconds: number): void {
      httpSeconds.observe({ method, route, status_code: String(statusCode) }, seconds);
    },

    grpc(method: string, code: string, seconds: number): void {
      grpcSeconds.observe({ method, code }, seconds);
    },

    /** A gRPC connection refused or cut before it spoke (see grpc/listener.ts). */
    grpcConnectionRefused(reason: string): void {
      grpcRefused.inc({ reason });
    },

    /** Where the count of open gRPC connections comes from, once the port listens. */
    countGrpcConnections(source: () => number): void {
      grpcConnections = source;
    },

    /** A failed authentication, refused (401) or limited (429). */
    authFailure(result: 'refused' | 'limited'): void {
      authFailures.inc({ result });
    },

    /** Counts the store's STORE_UNAVAILABLE failures, by operation, without changing them. */
    instrument(store: LockStore): LockStore {
      const count = (operation: string) => (error: unknown) => {
        if (error instanceof TrackerError && error.code === ErrorCode.STORE_UNAVAILABLE) {
          storeErrors.inc({ operation });
        }
        throw error;
      };
      // A proxy, so that every method of the store (own or inherited from its class) is counted.
      return new Proxy(store, {
        get(target, name, receiver) {
          const member: unknown = Reflect.get(target, name, receiver);
          if (typeof member !== 'function') return member;
          if (
            name === 'onChange' ||
            name === 'onEvents' ||
            name === 'announceEvents' ||
            typeof name !== 'string'
          )
            return member.bind(target);
          return (...args: unknown[]) =>
            Promise.resolve((member as (...a: unknown[]) => unknown).apply(target, args)).catch(count(name));
        },
      });
    },
  };
}

export type Metrics = ReturnType<typeof createMetrics>;

/**
 * `read`, at most once at a time: the gauges of one scrape (prom-client starts every
 * metric's collect in the same turn) share one read of the store.
 */
function oncePerScrape<T>(read: () => Promise<T>): () => Promise<T> {
  let reading: Promise<T> | null = null;
  return () => {
    reading ??= read().finally(() => {
      reading = null;
    });
    return reading;
  };
}
