import type Database from 'better-sqlite3';
import type {
  AlertSubject,
  Webhook,
  WebhookAlert,
  WebhookEventType,
  WebhookFormat,
  WebhookProgress,
  WebhookSpec,
  WebhookStore,
} from '../../core/webhooks.js';

/** A webhooks row (migration 011). */
interface WebhookRow {
  name: string;
  url: string;
  secret: string;
  events: string;
  services: string | null;
  format: string;
  alert_after_seconds: number | null;
  cursor: number;
  created_at: number;
  updated_at: number;
  failures: number;
  failing_since: number | null;
  next_attempt_at: number | null;
  last_status: number | null;
  last_error: string | null;
  last_attempt_at: number | null;
  last_success_at: number | null;
  delivered: number;
  dropped: number;
}

interface SubjectRow {
  id: string;
  service: string;
  who: string;
  owner: string | null;
  since: number;
  note: string | null;
  link: string | null;
}

const date = (ms: number | null) => (ms === null ? null : new Date(ms));
const ms = (at: Date | null) => (at === null ? null : at.getTime());

function toWebhook(row: WebhookRow): Webhook {
  return {
    name: row.name,
    url: row.url,
    secret: row.secret,
    events: JSON.parse(row.events) as WebhookEventType[],
    services: row.services,
    format: row.format as WebhookFormat,
    alertAfterSeconds: row.alert_after_seconds,
    cursor: row.cursor,
    failures: row.failures,
    failingSince: date(row.failing_since),
    nextAttemptAt: date(row.next_attempt_at),
    lastStatus: row.last_status,
    lastError: row.last_error,
    lastAttemptAt: date(row.last_attempt_at),
    lastSuccessAt: date(row.last_success_at),
    delivered: row.delivered,
    dropped: row.dropped,
    createdAt: new Date(row.created_at),
    updatedAt: new Date(row.updated_at),
  };
}

/**
 * The SQLite store's webhooks: plain statements on the store's connection (each its own
 * autocommit transaction; none needs the lock tables' group commit). `now` is the store's
 * clock in unix ms; `guard` maps a busy or broken file to STORE_UNAVAILABLE.
 */
export function sqliteWebhooks(
  db: Database.Database,
  now: () => number,
  guard: <T>(work: () => T) => T,
): WebhookStore {
  const s = {
    insert:
      db.prepare(`INSERT INTO webhooks (name, url, secret, events, services, format, alert_after_seconds, cursor,
        created_at, updated_at)
      VALUES (@name, @url, @secret, @events, @services, @format, @alertAfterSeconds, @cursor, @now, @now)
      ON CONFLICT (name) DO UPDATE SET url = excluded.url, secret = excluded.secret, events = excluded.events,
        services = excluded.services, format = excluded.format, alert_after_seconds = excluded.alert_after_seconds,
        updated_at = excluded.updated_at
      RETURNING *`),
    get: db.prepare<[{ name: string }], WebhookRow>('SELECT * FROM webhooks WHERE name = @name'),
    list: db.prepare<[], WebhookRow>('SELECT * FROM webhooks ORDER BY name'),
    remove: db.prepare<[{ name: string }]>('DELETE FROM webhooks WHERE name = @name'),
    removeAlerts: db.prepare<[{ name: string }]>('DELETE FROM webhook_alerts WHERE webhook = @name'),
    claim: db.prepare<[{ name: string; owner: string; until: number; now: number }], WebhookRow>(
      `UPDATE webhooks SET claimed_by = @owner, claimed_until = @until
       WHERE name = @name AND (claimed_until <= @now OR claimed_by = @owner)
         AND (next_attempt_at IS NULL OR next_attempt_at <= @now)
       RETURNING *`,
    ),
    record: db.prepare(
      `UPDATE webhooks SET cursor = @cursor, failures = @failures, failing_since = @failingSince,
         next_attempt_at = @nextAttemptAt, last_status = @lastStatus, last_error = @lastError,
         last_attempt_at = @lastAttemptAt, last_success_at = @lastSuccessAt, delivered = @delivered,
         dropped = @dropped, claimed_until = @until
       WHERE name = @name AND claimed_by = @owner AND claimed_until > @now
       RETURNING name`,
    ),
    release: db.prepare<[{ name: string; owner: string }]>(
      'UPDATE webhooks SET claimed_until = 0 WHERE name = @name AND claimed_by = @owner',
    ),
    held: db.prepare<
      [{ before: number; now: number; name: string; glob: string | null; limit: number }],
      SubjectRow
    >(
      `SELECT id, service, who, owner, created_at AS since, note, link FROM locks
       WHERE created_at <= @before AND (expires_at IS NULL OR expires_at > @now)
         AND (@glob IS NULL OR service GLOB @glob)
         AND NOT EXISTS (SELECT 1 FROM webhook_alerts a
                         WHERE a.webhook = @name AND a.kind = 'held-too-long' AND a.subject = locks.id)
       ORDER BY created_at, id LIMIT @limit`,
    ),
    waited: db.prepare<
      [{ before: number; now: number; name: string; glob: string | null; limit: number }],
      SubjectRow
    >(
      `SELECT lock_id AS id, service, who, lock_owner AS owner, since, note, link FROM waiters
       WHERE since <= @before AND alive_until > @now
         AND (@glob IS NULL OR service GLOB @glob)
         AND NOT EXISTS (SELECT 1 FROM webhook_alerts a
                         WHERE a.webhook = @name AND a.kind = 'waited-too-long' AND a.subject = waiters.lock_id)
       ORDER BY ticket LIMIT @limit`,
    ),
    mark: db.prepare<[{ name: string; kind: string; subject: string }]>(
      'INSERT OR IGNORE INTO webhook_alerts (webhook, kind, subject) VALUES (@name, @kind, @subject)',
    ),
    prune: db.prepare<[{ name: string }]>(
      `DELETE FROM webhook_alerts WHERE webhook = @name
         AND NOT EXISTS (SELECT 1 FROM locks WHERE locks.id = webhook_alerts.subject)
         AND NOT EXISTS (SELECT 1 FROM waiters WHERE waiters.lock_id = webhook_alerts.subject)`,
    ),
  };
  const put = db.transaction((spec: WebhookSpec, cursor: number) => {
    const created = s.get.get({ name: spec.name }) === undefined;
    const row = s.insert.get({
      ...spec,
      events: JSON.stringify(spec.events),
      cursor,
      now: now(),
    }) as WebhookRow;
    return { webhook: toWebhook(row), created };
  });
  const remove = db.transaction((name: string) => {
    s.removeAlerts.run({ name });
    return s.remove.run({ name }).changes > 0;
  });
  return {
    async putWebhook(spec: WebhookSpec, cursor: number) {
      return guard(() => put(spec, cursor));
    },
    async getWebhook(name) {
      return guard(() => {
        const row = s.get.get({ name });
        return row ? toWebhook(row) : null;
      });
    },
    async listWebhooks() {
      return guard(() => s.list.all().map(toWebhook));
    },
    async deleteWebhook(name) {
      return guard(() => remove(name));
    },
    async claimWebhook(name, owner, leaseMs) {
      return guard(() => {
        const at = now();
        const row = s.claim.all({ name, owner, until: at + leaseMs, now: at })[0];
        return row ? toWebhook(row) : null;
      });
    },
    async recordWebhook(name, owner, progress: WebhookProgress, leaseMs) {
      return guard(() => {
        const at = now();
        return (
          s.record.all({
            name,
            owner,
            now: at,
            until: at + leaseMs,
            cursor: progress.cursor,
            failures: progress.failures,
            failingSince: ms(progress.failingSince),
            nextAttemptAt: ms(progress.nextAttemptAt),
            lastStatus: progress.lastStatus,
            lastError: progress.lastError,
            lastAttemptAt: ms(progress.lastAttemptAt),
            lastSuccessAt: ms(progress.lastSuccessAt),
            delivered: progress.delivered,
            dropped: progress.dropped,
          }).length > 0
        );
      });
    },
    async releaseWebhook(name, owner) {
      guard(() => s.release.run({ name, owner }));
    },
    async dueAlerts(name, kind: WebhookAlert, before, services, limit): Promise<AlertSubject[]> {
      return guard(() =>
        (kind === 'held-too-long' ? s.held : s.waited)
          // SQLite's GLOB has classes ([a-z]); a name's `[` is matched as itself: `[[]`.
          .all({
            before: before.getTime(),
            now: now(),
            name,
            glob: services?.replace(/\[/g, '[[]') ?? null,
            limit,
          })
          .map((row) => ({ ...row, since: new Date(row.since) })),
      );
    },
    async markAlerted(name, kind, subject) {
      guard(() => s.mark.run({ name, kind, subject }));
    },
    async pruneAlerts(name) {
      guard(() => s.prune.run({ name }));
    },
  };
}
