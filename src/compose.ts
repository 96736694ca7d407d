import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { proxyTrust } from './auth/client-address.js';
import { createGate } from './auth/gate.js';
import { createTokenAuthority, type TokenAuthority } from './auth/token-file.js';
import type { Config } from './config/load-config.js';
import { loadResourcesFile, type ResourcesFile } from './config/resources-file.js';
import { AUTHENTICATION_OFF } from './core/auth.js';
import { systemClock } from './core/clock.js';
import { createEventFeed } from './core/event-feed.js';
import { startHousekeeping } from './core/housekeeping.js';
import { createLockService, type LockEvent } from './core/lock-service.js';
import type { LockStore } from './core/lock-store.js';
import type { Logger } from './core/logger.js';
import { createRateLimiter } from './core/rate-limiter.js';
import { createWatcherRegistry } from './core/watchers.js';
import { createWebhookAdmin, startWebhookDelivery } from './core/webhooks.js';
import { type GrpcListener, listenGrpcGuarded } from './grpc/listener.js';
import { buildGrpcServer, shutdownGrpc } from './grpc/server.js';
import { buildHttpApp } from './http/app.js';
import { alertToJson, eventToJson } from './http/present.js';
import { createHostCheck } from './http/request-guard.js';
import { createMetrics } from './metrics.js';
import { openSqliteLockStore } from './storage/sqlite/sqlite-lock-store.js';
import { sendWebhook, signWebhook, urlChecker } from './webhook-transport.js';

/** Listening failed; `message` is the one line to print. */
export class ListenError extends Error {
  override readonly name = 'ListenError';
}

export interface Tracker {
  readonly httpPort: number;
  readonly grpcPort: number;
  /** Reads the tokens file again (SIGHUP); nothing when authentication is off. */
  reloadTokens(): void;
  /**
   * Reads the resources file again and applies it (SIGHUP); resolves when done (a bad file
   * is logged and changes nothing). Nothing without --resources-file.
   */
  reloadResources(): Promise<void>;
  /** Stops accepting, lets in-flight requests finish (up to `graceMs`), closes the store. */
  stop(graceMs?: number): Promise<void>;
}

/** Opens the store the database URL names, migrating its schema first. */
export async function openStore(config: Config, logger: Logger): Promise<LockStore> {
  const { database } = config;
  if (database.kind === 'sqlite') {
    return openSqliteLockStore({
      path: database.path,
      synchronous: database.synchronous,
      clock: systemClock,
    });
  }
  // Loaded only when used: the embedded store's processes never pay for the pg driver.
  const { openPostgresLockStore } = await import('./storage/postgres/postgres-lock-store.js');
  return openPostgresLockStore({
    connectionString: database.url,
    poolSize: database.poolSize,
    connectTimeoutMs: database.connectTimeoutMs,
    poolTimeoutMs: database.poolTimeoutMs,
    statementTimeoutMs: database.statementTimeoutMs,
    schema: database.schema,
    synchronousCommit: database.synchronousCommit,
    logger,
  });
}

/** The composition root: config → store → service → transports. The only place that wires. */
export async function startTracker(config: Config, logger: Logger): Promise<Tracker> {
  const opened = await openStore(config, logger);
  const feed = createEventFeed({
    store: opened,
    // A store that announces its news (PostgreSQL's NOTIFY) needs the poll only as a safety
    // net; SQLite's feed keeps polling often for any other process on the same file.
    ...(opened.onEvents ? { pollMs: config.watchPollMs } : {}),
    onError: (error) => logger.warn({ err: error }, 'reading the lock history failed; retrying'),
  });
  const watchers = createWatcherRegistry(config.watchLimits);
  const metrics = createMetrics({
    stats: () => opened.stats(),
    resources: () => opened.listResources(),
    watchers,
    webhooks: () => webhooks.list(AUTHENTICATION_OFF),
  });
  const store = metrics.instrument(opened);
  // Names this process in the queue and in webhook claims; unique across restarts, so a
  // restarted replica never inherits a dead one's waiters.
  const owner = `${hostname()}:${process.pid}:${randomUUID().slice(0, 8)}`;
  const checkUrl = urlChecker(config.webhooksAllowPrivate);
  const delivery = startWebhookDelivery({
    store,
    clock: systemClock,
    owner,
    send: sendWebhook,
    sign: signWebhook,
    checkUrl,
    present: { event: eventToJson, alert: alertToJson },
    onAttempt: (webhook, ok) => metrics.webhookAttempt(webhook, ok),
    onError: (error) => logger.warn({ err: error }, 'a webhook delivery round failed; retrying'),
  });
  // Another replica's events (PostgreSQL's NOTIFY) are news for the webhooks too.
  const stopHearing = opened.onEvents?.(() => delivery.kick());
  const webhooks = createWebhookAdmin({
    store,
    clock: systemClock,
    checkUrl,
    onChange: () => delivery.refresh(),
  });
  const service = createLockService({
    store,
    feed,
    clock: systemClock,
    newId: randomUUID,
    maxWaitersPerService: config.maxWaitersPerService,
    maxWaiters: config.maxWaiters,
    maxLocks: config.maxLocks,
    defaultTtlSeconds: config.defaultTtlSeconds,
    maxTtlSeconds: config.maxTtlSeconds,
    owner,
    onEvent: (event) => {
      metrics.observe(event);
      logEvent(logger, event);
      // Watchers hear of this process's own changes at once, not at the next poll, and
      // (PostgreSQL) the other replicas' watchers through a NOTIFY.
      feed.kick();
      if (event.type !== 'refused') {
        opened.announceEvents?.();
        delivery.kick();
      }
    },
  });
  const housekeeping = startHousekeeping({
    sweep: () => service.sweep(),
    store,
    retentionMs: config.historyRetentionSeconds === null ? null : config.historyRetentionSeconds * 1000,
    keyRetentionMs: config.idempotencyRetentionSeconds * 1000,
    onError: (task, error) => logger.warn({ err: error, task }, `${task} failed; retrying`),
  });
  let authority: TokenAuthority | null = null;
  let tls: { cert: Buffer; key: Buffer; ca: Buffer | undefined } | undefined;
  let resources: ResourcesFile | null = null;
  /** What runs beside the transports, closed in this order: on a failed start, and at stop. */
  const closeBackground = async () => {
    authority?.close();
    await resources?.close();
    await housekeeping.stop();
    stopHearing?.();
    await delivery.stop();
    feed.close();
    await store.close();
  };
  try {
    authority = config.authTokensFile === null ? null : createTokenAuthority(config.authTokensFile, logger);
    tls = config.tls === null ? undefined : readTls(config.tls);
    // Before the ports open: the first request already sees the declared resources.
    resources =
      config.resourcesFile === null
        ? null
        : await loadResourcesFile({ path: config.resourcesFile, store, logger });
  } catch (error) {
    await closeBackground();
    throw error;
  }
  if (authority && authority.certificateEntries > 0 && tls?.ca === undefined) {
    logger.warn(
      { entries: authority.certificateEntries },
      'tokens-file entries with a certificateSubject need mutual TLS (--tls-ca): no request can act as them',
    );
  }
  // Revoking or narrowing a token ends what it had started: watch streams, waiting acquires.
  authority?.onReload((check) => {
    const ended = service.revalidate(check);
    if (ended > 0) logger.info({ ended }, 'watch streams and waits of revoked or narrowed tokens ended');
  });
  if (authority === null && !isLoopback(config.host)) {
    logger.warn(
      { host: config.host },
      'authentication is off and the server listens beyond loopback: anyone who reaches it may take or release any lock (see --auth-tokens-file)',
    );
  }
  const gate = createGate({
    // Without a tokens file, every caller may do everything (the guide's behaviour): the one
    // place where that is decided.
    authentication: authority ?? AUTHENTICATION_OFF,
    limiter: config.rateLimit ? createRateLimiter({ ...config.rateLimit, clock: systemClock }) : null,
    failureLimiter: config.authFailureLimit
      ? createRateLimiter({ ...config.authFailureLimit, clock: systemClock })
      : null,
    onAuthFailure: (result) => metrics.authFailure(result),
    logger,
    clock: systemClock,
  });
  const trustProxy = config.trustProxy ? proxyTrust(config.trustProxy) : undefined;
  const ready = () => store.ping();
  const hosts = createHostCheck({
    listenHost: config.host,
    allowedHosts: config.allowedHosts,
    machineHostname: hostname(),
  });
  logger.info(
    { hosts: hosts.names ?? '*' },
    hosts.names === null
      ? 'REST answers to any Host name (--allowed-host *): nothing stops DNS rebinding'
      : 'REST answers to IP addresses and these host names only; others get 403 HOST_NOT_ALLOWED (--allowed-host adds names)',
  );
  const http = buildHttpApp({
    service,
    webhooks,
    watchers,
    metrics,
    gate,
    hosts,
    ready,
    logger,
    server: { tls, headersTimeoutMs: config.headersTimeoutMs, requestTimeoutMs: config.requestTimeoutMs },
    trustProxy,
  });
  const { server: grpc, stopping: grpcStopping } = buildGrpcServer({
    service,
    watchers,
    idleTimeoutMs: config.grpcLimits.idleTimeoutMs,
    metrics,
    gate,
    ready,
    logger,
    trustProxy,
  });

  let grpcListener: GrpcListener | undefined;
  let httpPort: number;
  try {
    grpcListener = await listenGrpcGuarded(grpc, {
      host: config.host,
      port: config.grpcPort,
      tls,
      ...config.grpcLimits,
      logger,
      onRefused: (reason) => metrics.grpcConnectionRefused(reason),
    }).catch((error: Error) => {
      throw new ListenError(
        `cannot serve gRPC on ${config.host}:${config.grpcPort}: ${describeListenError(error)}`,
      );
    });
    const listening = grpcListener;
    metrics.countGrpcConnections(() => listening.connections);
    await http.listen({ host: config.host, port: config.httpPort }).catch((error: Error) => {
      throw new ListenError(
        `cannot serve REST on ${config.host}:${config.httpPort}: ${describeListenError(error)}`,
      );
    });
    httpPort = addressPort(http.server.address());
  } catch (error) {
    grpc.forceShutdown();
    await grpcListener?.close();
    await http.close();
    await closeBackground();
    throw error;
  }

  const grpcPort = grpcListener.port;
  const listener = grpcListener;
  return {
    httpPort,
    grpcPort,
    reloadTokens: () => authority?.reload(),
    reloadResources: async () => {
      await resources?.reload('SIGHUP');
    },
    async stop(graceMs = 8000) {
      // Requests waiting in a queue could outlast any grace period: send them away first
      // (503, retry on another replica), then let the rest finish.
      service.close();
      // Watch streams and health watches end now (clients reconnect elsewhere and resume);
      // gRPC health turns NOT_SERVING.
      grpcStopping();
      // Fastify closes the connections idle when the close starts; one whose last request
      // finishes during the close would stay open for keep-alive and hold the stop up.
      const sweep = setInterval(() => http.server.closeIdleConnections(), 100);
      try {
        await Promise.all([http.close(), shutdownGrpc(grpc, graceMs), listener.close()]);
      } finally {
        clearInterval(sweep);
      }
      await closeBackground();
    },
  };
}

/** Reads the TLS files; a missing or unreadable one is a one-line TlsError. */
function readTls(files: NonNullable<Config['tls']>): { cert: Buffer; key: Buffer; ca: Buffer | undefined } {
  const read = (what: string, path: string) => {
    try {
      return readFileSync(path);
    } catch (error) {
      throw new TlsError(
        `cannot read the TLS ${what} ${path} (${(error as NodeJS.ErrnoException).code ?? 'error'})`,
      );
    }
  };
  return {
    cert: read('certificate', files.cert),
    key: read('key', files.key),
    ca: files.ca === null ? undefined : read('CA bundle', files.ca),
  };
}

/** A TLS file that cannot be read; `message` is the one line to print. */
export class TlsError extends Error {
  override readonly name = 'TlsError';
}

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || host.startsWith('127.');
}

/** One log line per thing this process did to a lock. */
function logEvent(logger: Logger, event: LockEvent): void {
  switch (event.type) {
    case 'queued': {
      const { service, who, holder } = event;
      logger.info({ event: 'queued', service, who, holder: holder.id }, 'lock request queued');
      return;
    }
    case 'refused': {
      const { service, who, reason } = event;
      logger.debug({ event: 'refused', service, who, reason }, 'lock request refused');
      return;
    }
    case 'force-released': {
      const { lock, reason } = event;
      logger.warn(
        { event: 'force-released', service: lock.service, who: lock.who, id: lock.id, reason },
        'lock force-released',
      );
      return;
    }
    case 'stolen': {
      const { lock, by, reason } = event;
      logger.warn(
        {
          event: 'stolen',
          service: lock.service,
          who: lock.who,
          id: lock.id,
          by: by.who,
          byId: by.id,
          reason,
        },
        'lock stolen',
      );
      return;
    }
    default: {
      const { type, lock } = event;
      logger.info({ event: type, service: lock.service, who: lock.who, id: lock.id }, `lock ${type}`);
    }
  }
}

function describeListenError(error: Error & { code?: string }): string {
  const text = `${error.code ?? ''} ${error.message}`;
  if (/EADDRINUSE|address already in use/i.test(text)) return 'address already in use';
  if (/EACCES|permission denied/i.test(text)) return 'permission denied';
  if (/EADDRNOTAVAIL|ENOTFOUND|EAI_AGAIN/i.test(text)) return 'address not available on this host';
  return error.message.split('\n')[0] ?? 'unknown error';
}

function addressPort(address: ReturnType<import('node:net').Server['address']>): number {
  if (address && typeof address === 'object') return address.port;
  throw new Error(`unexpected server address ${String(address)}`);
}
