-- Listing one owner's locks (`GET /locks/list?who=…`) is an index lookup, in list order,
-- however many locks are held (a scan of 100,000 locks took tens of ms). One more index
-- entry per acquire and per release; listing by service uses locks_service (migration 008),
-- whose few rows per service are sorted cheaply.
CREATE INDEX locks_who_created_at ON locks (who, created_at, id);
