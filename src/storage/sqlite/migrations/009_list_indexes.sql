-- Listing held locks by service or by who is an index lookup in list order (created_at,
-- then id: the primary key ends every index of a WITHOUT ROWID table), not a scan of the
-- table. The (service) index of migration 008 becomes (service, created_at): every lookup
-- by service uses it as before, at no extra write. (who, created_at) is new: one more index
-- entry written per acquire and removed per release.
DROP INDEX locks_service;
CREATE INDEX locks_service_created_at ON locks (service, created_at);
CREATE INDEX locks_who_created_at ON locks (who, created_at);
