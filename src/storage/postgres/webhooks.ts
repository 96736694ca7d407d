import {
  type AlertSubject,
  globToLike,
  type Webhook,
  type WebhookAlert,
  type WebhookEventType,
  type WebhookFormat,
  type WebhookProgress,
  type WebhookSpec,
  type WebhookStore,
} from '../../core/webhooks.js';

/** Unix ms of a timestamptz column, computed by the database (as for locks, queries.ts). */
const MS = (column: string) => `floor(extract(epoch FROM ${column}) * 1000)::int8`;
const COLUMNS = `name, url, secret, events, services, format, alert_after_seconds, cursor,
  ${MS('created_at')} AS created_ms, ${MS('updated_at')} AS updated_ms, failures,
  ${MS('failing_since')} AS failing_since_ms, ${MS('next_attempt_at')} AS next_attempt_ms, last_status,
  last_error, ${MS('last_attempt_at')} AS last_attempt_ms, ${MS('last_success_at')} AS last_success_ms,
  delivered, dropped`;

interface WebhookRow {
  name: string;
  url: string;
  secret: string;
  events: WebhookEventType[];
  services: string | null;
  format: string;
  alert_after_seconds: number | null;
  /** bigint columns arrive as strings. */
  cursor: string;
  created_ms: string;
  updated_ms: string;
  failures: number;
  failing_since_ms: string | null;
  next_attempt_ms: string | null;
  last_status: number | null;
  last_error: string | null;
  last_attempt_ms: string | null;
  last_success_ms: string | null;
  delivered: string;
  dropped: string;
}

const date = (ms: string | null) => (ms === null ? null : new Date(Number(ms)));
const ms = (at: Date | null) => (at === null ? null : at.getTime());

function toWebhook(row: WebhookRow): Webhook {
  return {
    name: row.name,
    url: row.url,
    secret: row.secret,
    events: row.events,
    services: row.services,
    format: row.format as WebhookFormat,
    alertAfterSeconds: row.alert_after_seconds,
    cursor: Number(row.cursor),
    failures: row.failures,
    failingSince: date(row.failing_since_ms),
    nextAttemptAt: date(row.next_attempt_ms),
    lastStatus: row.last_status,
    lastError: row.last_error,
    lastAttemptAt: date(row.last_attempt_ms),
    lastSuccessAt: date(row.last_success_ms),
    delivered: Number(row.delivered),
    dropped: Number(row.dropped),
    createdAt: new Date(Number(row.created_ms)),
    updatedAt: new Date(Number(row.updated_ms)),
  };
}

/** The PostgreSQL store's webhooks: one statement each, through the store's pool (`query`, guarded). */
export function postgresWebhooks(
  query: <Row>(text: string, values: unknown[]) => Promise<Row[]>,
): WebhookStore {
  const at = (value: number | null) => (value === null ? null : new Date(value).toISOString());
  return {
    async putWebhook(spec: WebhookSpec, cursor: number) {
      const [row] = await query<WebhookRow & { created: boolean }>(
        `INSERT INTO webhooks AS w (name, url, secret, events, services, format, alert_after_seconds, cursor,
           created_at, updated_at)
         VALUES ($1, $2, $3, $4::jsonb, $5, $6, $7, $8, tracker_now(), tracker_now())
         ON CONFLICT (name) DO UPDATE SET url = excluded.url, secret = excluded.secret, events = excluded.events,
           services = excluded.services, format = excluded.format,
           alert_after_seconds = excluded.alert_after_seconds, updated_at = excluded.updated_at
         RETURNING ${COLUMNS}, (xmax = 0) AS created`,
        [
          spec.name,
          spec.url,
          spec.secret,
          JSON.stringify(spec.events),
          spec.services,
          spec.format,
          spec.alertAfterSeconds,
          cursor,
        ],
      );
      if (!row) throw new Error(`webhook ${spec.name} was not written`);
      return { webhook: toWebhook(row), created: row.created };
    },
    async getWebhook(name) {
      const [row] = await query<WebhookRow>(`SELECT ${COLUMNS} FROM webhooks WHERE name = $1`, [name]);
      return row ? toWebhook(row) : null;
    },
    async listWebhooks() {
      return (await query<WebhookRow>(`SELECT ${COLUMNS} FROM webhooks ORDER BY name`, [])).map(toWebhook);
    },
    async deleteWebhook(name) {
      const rows = await query<{ name: string }>(
        `WITH gone AS (DELETE FROM webhooks WHERE name = $1 RETURNING name),
              alerts AS (DELETE FROM webhook_alerts WHERE webhook = $1)
         SELECT name FROM gone`,
        [name],
      );
      return rows.length > 0;
    },
    async claimWebhook(name, owner, leaseMs) {
      const [row] = await query<WebhookRow>(
        `UPDATE webhooks SET claimed_by = $2, claimed_until = tracker_now() + $3::int8 * interval '1 millisecond'
         WHERE name = $1 AND (claimed_until <= tracker_now() OR claimed_by = $2)
           AND (next_attempt_at IS NULL OR next_attempt_at <= tracker_now())
         RETURNING ${COLUMNS}`,
        [name, owner, leaseMs],
      );
      return row ? toWebhook(row) : null;
    },
    async recordWebhook(name, owner, progress: WebhookProgress, leaseMs) {
      const rows = await query<{ name: string }>(
        `UPDATE webhooks SET cursor = $3, failures = $4, failing_since = $5, next_attempt_at = $6,
           last_status = $7, last_error = $8, last_attempt_at = $9, last_success_at = $10, delivered = $11,
           dropped = $12, claimed_until = tracker_now() + $13::int8 * interval '1 millisecond'
         WHERE name = $1 AND claimed_by = $2 AND claimed_until > tracker_now()
         RETURNING name`,
        [
          name,
          owner,
          progress.cursor,
          progress.failures,
          at(ms(progress.failingSince)),
          at(ms(progress.nextAttemptAt)),
          progress.lastStatus,
          progress.lastError,
          at(ms(progress.lastAttemptAt)),
          at(ms(progress.lastSuccessAt)),
          progress.delivered,
          progress.dropped,
          leaseMs,
        ],
      );
      return rows.length > 0;
    },
    async releaseWebhook(name, owner) {
      await query(`UPDATE webhooks SET claimed_until = '-infinity' WHERE name = $1 AND claimed_by = $2`, [
        name,
        owner,
      ]);
    },
    async dueAlerts(name, kind: WebhookAlert, before, services, limit): Promise<AlertSubject[]> {
      const like = services === null ? null : globToLike(services);
      const rows = await query<{
        id: string;
        service: string;
        who: string;
        owner: string | null;
        since_ms: string;
        note: string | null;
        link: string | null;
      }>(
        kind === 'held-too-long'
          ? `SELECT id, service, who, owner, ${MS('created_at')} AS since_ms, note, link FROM locks
             WHERE created_at <= $2 AND (expires_at IS NULL OR expires_at > tracker_now())
               AND ($3::text IS NULL OR service LIKE $3)
               AND NOT EXISTS (SELECT FROM webhook_alerts a
                               WHERE a.webhook = $1 AND a.kind = 'held-too-long' AND a.subject = locks.id)
             ORDER BY created_at, id LIMIT $4`
          : `SELECT lock_id AS id, service, who, lock_owner AS owner, ${MS('since')} AS since_ms, note, link
             FROM waiters
             WHERE since <= $2 AND alive_until > tracker_now() AND ($3::text IS NULL OR service LIKE $3)
               AND NOT EXISTS (SELECT FROM webhook_alerts a
                               WHERE a.webhook = $1 AND a.kind = 'waited-too-long' AND a.subject = waiters.lock_id)
             ORDER BY ticket LIMIT $4`,
        [name, before.toISOString(), like, limit],
      );
      return rows.map(({ since_ms, ...row }) => ({ ...row, since: new Date(Number(since_ms)) }));
    },
    async markAlerted(name, kind, subject) {
      await query(
        'INSERT INTO webhook_alerts (webhook, kind, subject) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING',
        [name, kind, subject],
      );
    },
    async pruneAlerts(name) {
      await query(
        `DELETE FROM webhook_alerts a WHERE a.webhook = $1
           AND NOT EXISTS (SELECT FROM locks WHERE locks.id = a.subject)
           AND NOT EXISTS (SELECT FROM waiters WHERE waiters.lock_id = a.subject)`,
        [name],
      );
    },
  };
}
