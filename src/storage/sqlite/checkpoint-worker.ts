// The worker thread of checkpointer.ts: its own connection to the store's file, a PASSIVE
// checkpoint every intervalMs and, when the WAL has grown past restartFrames, a RESTART one
// while the store holds its writes back; until the store says 'stop'.
import { parentPort, workerData } from 'node:worker_threads';
import Database from 'better-sqlite3';

const { path, intervalMs, restartFrames } = workerData as {
  path: string;
  intervalMs: number;
  restartFrames: number;
};
const db = new Database(path, { fileMustExist: true, timeout: 0 });
const passive = db.prepare('PRAGMA wal_checkpoint(PASSIVE)');
const restart = db.prepare('PRAGMA wal_checkpoint(RESTART)');

/** Frames in the WAL, and how many of them are now in the database file. */
interface Checkpoint {
  busy: number;
  log: number;
  checkpointed: number;
}

let waiting = false;
/**
 * The WAL's length when it was last restarted: until a writer starts it over (or adds to
 * it), there is nothing to restart again. Without this an idle store whose WAL is long
 * would be held back and restarted every tick.
 */
let restartedAt = -1;

const timer = setInterval(() => {
  if (waiting) return;
  try {
    // PASSIVE copies what no reader still needs and returns at once, never waiting for
    // anyone (another checkpoint running at the same time makes it a no-op).
    const done = passive.get() as Checkpoint | undefined;
    // The WAL starts over only when a writer begins after a checkpoint that copied it all;
    // under steady writes PASSIVE never quite catches up. Past restartFrames, the store is
    // asked to hold its next batch back ('hold'), and answers 'go' at once.
    if (done && done.log >= restartFrames && done.log !== restartedAt) {
      waiting = true;
      parentPort?.postMessage('hold');
    }
  } catch {
    // A busy or locked file: the next tick tries again.
  }
}, intervalMs);

parentPort?.on('message', (message) => {
  if (message === 'go') {
    try {
      // Copies the few frames PASSIVE left, then lets the next writer start the WAL over.
      // Another process's writer may hold the lock: wait for it, here (up to 1 s).
      db.pragma('busy_timeout = 1000');
      const done = restart.get() as Checkpoint | undefined;
      // busy: a reader or writer kept it from finishing; the next tick tries again.
      if (done && done.busy === 0) restartedAt = done.log;
    } catch {
      // Busy past 1 s: the next tick tries again.
    } finally {
      db.pragma('busy_timeout = 0');
      waiting = false;
      parentPort?.postMessage('done');
    }
  } else if (message === 'stop') {
    clearInterval(timer);
    db.close();
    parentPort?.close();
  }
});
