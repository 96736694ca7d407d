-- Webhooks (core/webhooks.ts): what each one wants, and where its delivery stands. `cursor`
-- is the last history event it has handled; a delivery round claims the row (claimed_by,
-- claimed_until: unix ms) so that one process at a time delivers a webhook. Instants are
-- unix ms, as everywhere in this store.
CREATE TABLE webhooks (
  name                TEXT    NOT NULL PRIMARY KEY,
  url                 TEXT    NOT NULL,
  secret              TEXT    NOT NULL,
  events              TEXT    NOT NULL,
  services            TEXT,
  format              TEXT    NOT NULL CHECK (format IN ('json', 'slack')),
  alert_after_seconds INTEGER,
  cursor              INTEGER NOT NULL,
  created_at          INTEGER NOT NULL,
  updated_at          INTEGER NOT NULL,
  claimed_by          TEXT,
  claimed_until       INTEGER NOT NULL DEFAULT 0,
  failures            INTEGER NOT NULL DEFAULT 0,
  failing_since       INTEGER,
  next_attempt_at     INTEGER,
  last_status         INTEGER,
  last_error          TEXT,
  last_attempt_at     INTEGER,
  last_success_at     INTEGER,
  delivered           INTEGER NOT NULL DEFAULT 0,
  dropped             INTEGER NOT NULL DEFAULT 0
) STRICT, WITHOUT ROWID;

-- The alerts sent (held-too-long, waited-too-long): one per webhook, kind and lock (or
-- waiting request) id, so that none is sent twice.
CREATE TABLE webhook_alerts (
  webhook TEXT NOT NULL,
  kind    TEXT NOT NULL,
  subject TEXT NOT NULL,
  PRIMARY KEY (webhook, kind, subject)
) STRICT, WITHOUT ROWID;
