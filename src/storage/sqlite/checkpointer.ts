import { Worker } from 'node:worker_threads';

/** The WAL checkpointer of one store: a worker thread with its own connection to the file. */
export interface Checkpointer {
  /** Stops the worker and closes its connection; resolves when it has exited. */
  stop(): Promise<void>;
}

/** What the store lets the checkpointer do. */
export interface CheckpointerHooks {
  /** Hold writes back: commit nothing until `resume` (the event loop goes on). */
  hold(): void;
  resume(): void;
  /** The worker stopped without being asked: the store checkpoints by itself again. */
  lost(): void;
}

/** How often the worker checkpoints the WAL, in ms. */
export const CHECKPOINT_INTERVAL_MS = 25;
/** WAL frames (pages) past which the worker makes the WAL start over: SQLite's own 1000. */
export const RESTART_FRAMES = 1000;
/**
 * WAL frames past which the store's own commits checkpoint again (SQLite's automatic
 * checkpoint), should the worker fall behind: a worker thread starved of CPU (a loaded
 * machine) may not ask for its RESTART in time, and the WAL must stay bounded all the same.
 * Twice RESTART_FRAMES, so that a worker that keeps up leaves it unused.
 */
export const BACKSTOP_FRAMES = 2 * RESTART_FRAMES;
/** Longest the store holds its writes back for a RESTART checkpoint, in ms. */
const HOLD_LIMIT_MS = 1000;

/**
 * Starts a worker thread that checkpoints the WAL of the SQLite file at `path`, so that no
 * request pays for a checkpoint: with SQLite's automatic one, the commit that crosses 1000
 * pages of WAL copies them all into the file, and syncs it, before it answers. The worker
 * copies the WAL every CHECKPOINT_INTERVAL_MS without waiting for anyone (PASSIVE). Under
 * steady writes that never lets the WAL start over, so past RESTART_FRAMES the worker asks
 * the store to hold its writes back (the event loop goes on: requests are read, reads are
 * answered, writes queue for the next batch) while it copies the few frames left and
 * restarts the WAL; the hold ends when it is done, or after HOLD_LIMIT_MS whatever happens.
 * The store moves its own automatic checkpoint out to BACKSTOP_FRAMES while this runs.
 */
export function startCheckpointer(path: string, hooks: CheckpointerHooks): Checkpointer {
  const worker = new Worker(new URL('./checkpoint-worker.js', import.meta.url), {
    workerData: { path, intervalMs: CHECKPOINT_INTERVAL_MS, restartFrames: RESTART_FRAMES },
  });
  let stopping = false;
  let holding: NodeJS.Timeout | null = null;
  const release = () => {
    if (holding === null) return;
    clearTimeout(holding);
    holding = null;
    hooks.resume();
  };
  worker.on('message', (message) => {
    if (message === 'hold' && holding === null && !stopping) {
      hooks.hold();
      holding = setTimeout(release, HOLD_LIMIT_MS);
      worker.postMessage('go');
    } else if (message === 'done') {
      release();
    }
  });
  const exited = new Promise<void>((resolve) => {
    worker.once('exit', () => {
      release();
      if (!stopping) hooks.lost();
      resolve();
    });
  });
  // An error ends the worker ('exit' follows).
  worker.on('error', () => undefined);
  // The worker never keeps the process alive: a server that is done exits. (After the
  // listeners: adding a 'message' listener refs the worker again.)
  worker.unref();
  return {
    async stop() {
      stopping = true;
      release();
      worker.postMessage('stop');
      const timer = setTimeout(() => void worker.terminate(), 2000);
      await exited;
      clearTimeout(timer);
    },
  };
}
