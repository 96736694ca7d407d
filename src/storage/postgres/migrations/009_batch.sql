-- One round trip per batch (issue 17): the plain acquires and releases pending together in
-- one process go to the database as one call of tracker_batch, in one transaction, each
-- answered with its own result.
--
-- The ops are given as parallel arrays, in the order they were asked: p_kinds ('acquire' or
-- 'release'), p_ids (the request's id, or the lock's), p_services (acquire), p_whos and
-- p_ttls (acquire), p_owners (the owner's token name, or null), p_keys (the owner key, or
-- null), p_waits (acquire: whether the request may wait), p_attempts (release: the keyed
-- request's attempt, or null).
--
-- First the `services` rows of every service the batch touches (those acquired, and those
-- of the locks released) are locked in name order, as every other transaction of the store
-- locks them, so two batches (or a batch and a grant pass) never wait for each other in a
-- cycle. Then each op runs in order, as tracker_acquire_plain or tracker_release_plain
-- would alone, so two acquires of one service in one batch give one winner (the first),
-- the second sees the first's lock. Each op runs in a block of its own (a subtransaction):
-- one that fails is undone alone and answers 'error' with its SQLSTATE and message, the
-- others stand. A statement timeout or a lost connection cannot be caught: the whole call
-- fails, and nothing of it commits.
--
-- Answers a JSON array, one result per op, as the plain functions answer ('acquired',
-- 'refused', 'released', 'missing', 'general': the caller runs the full grant pass for
-- that op), or 'error'.
CREATE FUNCTION tracker_batch(p_kinds text[], p_ids uuid[], p_services text[], p_whos text[], p_ttls int[],
                              p_owners text[], p_keys text[], p_waits boolean[], p_attempts text[])
  RETURNS json LANGUAGE plpgsql AS $$
DECLARE
  names text[];
  results json[] := '{}';
  r json;
BEGIN
  SELECT array_agg(name ORDER BY name) INTO names FROM (
    SELECT p_services[i] FROM generate_subscripts(p_kinds, 1) AS i WHERE p_kinds[i] = 'acquire'
    UNION
    SELECT l.service FROM locks l
    WHERE l.id = ANY (ARRAY(SELECT p_ids[i] FROM generate_subscripts(p_kinds, 1) AS i WHERE p_kinds[i] = 'release'))
  ) AS touched (name);
  IF names IS NOT NULL THEN
    BEGIN
      PERFORM tracker_lock_services(names, false);
    EXCEPTION WHEN OTHERS THEN
      -- Undone (a deadlock with a transaction locking out of order): each op then locks
      -- its own row as it goes, and one that fails falls back alone.
      NULL;
    END;
  END IF;
  FOR i IN 1 .. coalesce(cardinality(p_kinds), 0) LOOP
    BEGIN
      IF p_kinds[i] = 'acquire' THEN
        r := tracker_acquire_plain(p_ids[i], p_services[i], p_whos[i], p_ttls[i], p_owners[i], p_keys[i], p_waits[i]);
      ELSE
        r := tracker_release_plain(p_ids[i], p_keys[i], p_owners[i], p_attempts[i]);
      END IF;
    EXCEPTION WHEN OTHERS THEN
      r := json_build_object('outcome', 'error', 'code', SQLSTATE, 'message', SQLERRM);
    END;
    results := results || r;
  END LOOP;
  RETURN to_json(results);
END $$;
