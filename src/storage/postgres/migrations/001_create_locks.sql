-- One row per held lock. UNIQUE(service) is what makes a lock exclusive: of concurrent
-- INSERTs for one service, the database lets exactly one through (ON CONFLICT (service)
-- turns the losers into "already held" instead of an error).
CREATE TABLE locks (
  id         uuid        PRIMARY KEY,
  service    text        NOT NULL UNIQUE,
  who        text        NOT NULL,
  -- The database's clock, to the microsecond; the store reads it back truncated to the ms.
  created_at timestamptz NOT NULL DEFAULT now()
);

-- List order: oldest first, then id.
CREATE INDEX locks_created_at_id ON locks (created_at, id);
