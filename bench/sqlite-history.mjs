// What the history costs on SQLite, and whether writing it from the store would be cheaper
// than the triggers (issue 17, point 2). A migrated store file, then better-sqlite3 straight:
// batches of 25 acquires (INSERT_FREE) and 25 releases (REMOVE, MAY_GRANT), a savepoint each,
// one BEGIN IMMEDIATE … COMMIT per batch, as the store's group commit runs them. Variants:
//   triggers  the schema as it is (the history triggers write each event);
//   rows      no history triggers; the same events, one prepared INSERT per event;
//   json      no history triggers; one INSERT … SELECT FROM json_each(?) per batch;
//   none      no history at all (the floor).
// Prints CPU µs and wall µs per pair, 2 rounds interleaved.
//
//   npm run build && node bench/sqlite-history.mjs [--pairs 30000]

import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import Database from 'better-sqlite3';
import * as sql from '../dist/src/storage/sqlite/queries.js';
import { openSqliteLockStore } from '../dist/src/storage/sqlite/sqlite-lock-store.js';

const { values } = parseArgs({ options: { pairs: { type: 'string' } } });
const PAIRS = Number(values.pairs ?? 30000);
/** 25 acquires and 25 releases per transaction. */
const BATCH = 25;
const COLS =
  'at, type, lock_id, service, who, owner, created_at, ttl_seconds, expires_at, fencing_token, waiters, held_ms, reason, group_id, mode, max_holders';
async function run(variant) {
  const dir = mkdtempSync(join(tmpdir(), 'rawh-'));
  const path = join(dir, 'r.db');
  const store = openSqliteLockStore({ path, clock: { now: () => new Date() }, checkpointer: false });
  await store.close();
  const db = new Database(path);
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = NORMAL');
  let now = Date.now();
  db.function('tracker_now', { deterministic: false }, () => now);
  // One argument, as the triggers call it: nothing in this run is a force release or a grant.
  db.function('tracker_context', { deterministic: false }, (_key) => null);
  if (variant !== 'triggers') {
    db.exec('DROP TRIGGER locks_event_acquired; DROP TRIGGER locks_event_ended;');
  }
  const ins = db.prepare(sql.INSERT_FREE);
  const rem = db.prepare(sql.REMOVE);
  const may = db.prepare(sql.MAY_GRANT);
  const ev = db.prepare(
    `INSERT INTO lock_events (${COLS}) VALUES (@at,@type,@lock_id,@service,@who,@owner,@created_at,@ttl_seconds,@expires_at,@fencing_token,@waiters,@held_ms,@reason,@group_id,@mode,@max_holders)`,
  );
  const evJson = db.prepare(
    `INSERT INTO lock_events (${COLS}) SELECT e->>0,e->>1,e->>2,e->>3,e->>4,e->>5,e->>6,e->>7,e->>8,e->>9,e->>10,e->>11,e->>12,e->>13,e->>14,e->>15 FROM (SELECT value AS e FROM json_each(?))`,
  );
  const sp = db.prepare('SAVEPOINT w'),
    rel = db.prepare('RELEASE w');
  const begin = db.prepare('BEGIN IMMEDIATE'),
    commit = db.prepare('COMMIT');
  // One event row, in the column order of COLS (json sends its values as an array).
  const event = (type, r, heldMs) => ({
    at: now,
    type,
    lock_id: r.id,
    service: r.service,
    who: r.who,
    owner: null,
    created_at: r.created_at,
    ttl_seconds: null,
    expires_at: null,
    fencing_token: r.fencing_token,
    waiters: 0,
    held_ms: heldMs,
    reason: null,
    group_id: null,
    mode: r.mode,
    max_holders: r.max_holders,
  });
  // Only the variants that write events from here build them.
  const record = (events, type, r, heldMs) => {
    if (variant === 'rows') ev.run(event(type, r, heldMs));
    if (variant === 'json') events.push(Object.values(event(type, r, heldMs)));
  };
  const held = [];
  const cpu = process.cpuUsage();
  const t0 = performance.now();
  for (let n = 0; n < PAIRS; n += BATCH) {
    now = Date.now();
    begin.run();
    const events = [];
    for (let i = 0; i < BATCH; i++) {
      sp.run();
      const r = ins.all({
        id: randomUUID(),
        service: `s-${i}-${n}`,
        who: 'w',
        now,
        ttl: null,
        expires: null,
        owner: null,
        ownerKey: null,
        limit: 1,
        mode: 'exclusive',
      })[0];
      record(events, 'acquired', r, null);
      rel.run();
      held.push(r.id);
    }
    for (const id of held.splice(0, held.length)) {
      sp.run();
      const r = rem.all({ id, now, ownerKey: null, ownerName: null })[0];
      may.get({ service: r.service });
      record(events, 'released', r, now - r.created_at);
      rel.run();
    }
    if (variant === 'json') evJson.run(JSON.stringify(events));
    commit.run();
  }
  const ms = performance.now() - t0;
  const u = process.cpuUsage(cpu);
  const count = db.prepare('SELECT count(*) c FROM lock_events').get().c;
  db.close();
  rmSync(dir, { recursive: true, force: true });
  return {
    variant,
    usPerPair: ((u.user + u.system) / PAIRS).toFixed(1),
    wall: ((ms * 1000) / PAIRS).toFixed(1),
    events: count,
  };
}
for (let r = 0; r < 2; r++)
  for (const v of ['triggers', 'rows', 'json', 'none']) console.log(JSON.stringify(await run(v)));
