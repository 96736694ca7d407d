// What each index and trigger on the SQLite acquire/release path costs (issue 17, point 2).
// For each variant, a fresh store file; a side connection drops the piece; then 50 clients
// each alternate acquiring a fresh service and releasing it through the store itself (group
// commit included), for a fixed number of pairs. Prints µs of this process's CPU per pair and
// pairs/s, interleaved over rounds, against the full schema measured the same way.
//
//   npm run build && node bench/sqlite-pieces.mjs [--pairs 20000] [--rounds 3]
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import Database from 'better-sqlite3';
import { openSqliteLockStore } from '../dist/src/storage/sqlite/sqlite-lock-store.js';

const { values } = parseArgs({ options: { pairs: { type: 'string' }, rounds: { type: 'string' } } });
const PAIRS = Number(values.pairs ?? 20000);
const ROUNDS = Number(values.rounds ?? 3);
const CLIENTS = 50;

const VARIANTS = {
  'full schema': [],
  'without lock_events_at (retention by time)': ['DROP INDEX lock_events_at'],
  'without lock_events_who_id (history ?who=)': ['DROP INDEX lock_events_who_id'],
  'without lock_events_service_id (history ?service=)': ['DROP INDEX lock_events_service_id'],
  'without locks_created_at_id (list order)': ['DROP INDEX locks_created_at_id'],
  'without locks_service_created_at (list ?service=)': ['DROP INDEX locks_service_created_at'],
  'without locks_who_created_at (list ?who=)': ['DROP INDEX locks_who_created_at'],
  'without the fencing-token trigger (services upsert)': ['DROP TRIGGER locks_record_fencing_token'],
  'without the history triggers (no lock_events rows)': [
    'DROP TRIGGER locks_event_acquired',
    'DROP TRIGGER locks_event_ended',
  ],
};

async function measure(name, statements) {
  const dir = mkdtempSync(join(tmpdir(), 'tracker-pieces-'));
  const path = join(dir, 'p.db');
  const store = openSqliteLockStore({ path, clock: { now: () => new Date() } });
  const side = new Database(path);
  for (const sql of statements) side.exec(sql);
  side.close();
  let next = 0;
  const cpu = process.cpuUsage();
  const started = performance.now();
  await Promise.all(
    Array.from({ length: CLIENTS }, async (_, c) => {
      while (next < PAIRS) {
        next++;
        const result = await store.acquire({
          id: randomUUID(),
          service: `p-${c}-${next}`,
          who: `client-${c}`,
          ttlSeconds: null,
        });
        await store.release(result.lock.id);
      }
    }),
  );
  const ms = performance.now() - started;
  const used = process.cpuUsage(cpu);
  await store.close();
  rmSync(dir, { recursive: true, force: true });
  return { name, usPerPair: (used.user + used.system) / PAIRS, pairsPerS: (PAIRS / ms) * 1000 };
}

const results = new Map(Object.keys(VARIANTS).map((name) => [name, []]));
for (let round = 0; round < ROUNDS; round++) {
  const names = Object.keys(VARIANTS);
  if (round % 2 === 1) names.reverse();
  for (const name of names) results.get(name).push(await measure(name, VARIANTS[name]));
}
const mean = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length;
const base = results.get('full schema');
const baseUs = mean(base.map((r) => r.usPerPair));
console.log(`${PAIRS} pairs, ${CLIENTS} clients, ${ROUNDS} rounds interleaved (means)`);
console.log('| variant | CPU µs/pair | saved | pairs/s |');
console.log('|---|---:|---:|---:|');
for (const [name, runs] of results) {
  const us = mean(runs.map((r) => r.usPerPair));
  const saved = name === 'full schema' ? '' : `${(((baseUs - us) / baseUs) * 100).toFixed(1)} %`;
  console.log(
    `| ${name} | ${us.toFixed(1)} | ${saved} | ${Math.round(mean(runs.map((r) => r.pairsPerS)))} |`,
  );
}
