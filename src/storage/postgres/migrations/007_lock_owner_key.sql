-- Ownership bound to the credential, not its name: owner_key is the identity of the token (or
-- client certificate) that took the lock (see Principal.key), NULL when authentication was
-- off. Release and renew by a non-admin must present the same identity, so a new token that
-- reuses a revoked token's name owns none of its locks. A waiter keeps its request's key
-- (lock_owner_key) and hands it to the lock it is granted. Locks taken before this migration
-- (or by a replica still running an older version) have none: they are matched by the name
-- in `owner`, as before. `owner` stays the name shown to users; the history keeps only it.
ALTER TABLE locks ADD COLUMN owner_key text NULL;
ALTER TABLE waiters ADD COLUMN lock_owner_key text NULL;
