-- Webhooks (core/webhooks.ts): what each one wants, and where its delivery stands. `cursor`
-- is the last history event it has handled; a delivery round claims the row (claimed_by,
-- claimed_until) so that one replica at a time delivers a webhook, and each event is sent
-- by one replica. Instants by tracker_now(), the store's one clock.
CREATE TABLE webhooks (
  name                text        PRIMARY KEY,
  url                 text        NOT NULL,
  secret              text        NOT NULL,
  events              jsonb       NOT NULL,
  services            text        NULL,
  format              text        NOT NULL CHECK (format IN ('json', 'slack')),
  alert_after_seconds int         NULL,
  cursor              bigint      NOT NULL,
  created_at          timestamptz NOT NULL,
  updated_at          timestamptz NOT NULL,
  claimed_by          text        NULL,
  claimed_until       timestamptz NOT NULL DEFAULT '-infinity',
  failures            int         NOT NULL DEFAULT 0,
  failing_since       timestamptz NULL,
  next_attempt_at     timestamptz NULL,
  last_status         int         NULL,
  last_error          text        NULL,
  last_attempt_at     timestamptz NULL,
  last_success_at     timestamptz NULL,
  delivered           bigint      NOT NULL DEFAULT 0,
  dropped             bigint      NOT NULL DEFAULT 0
);

-- The alerts sent (held-too-long, waited-too-long): one per webhook, kind and lock (or
-- waiting request) id, so that none is sent twice.
CREATE TABLE webhook_alerts (
  webhook text NOT NULL,
  kind    text NOT NULL,
  subject uuid NOT NULL,
  PRIMARY KEY (webhook, kind, subject)
);
