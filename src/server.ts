import { hostname } from 'node:os';
import { pino } from 'pino';
import { TokenFileError } from './auth/token-file.js';
import { ListenError, startTracker, TlsError } from './compose.js';
import { ConfigError, helpText, loadConfig } from './config/load-config.js';
import { ResourcesFileError } from './config/resources-file.js';
import { ErrorCode, TrackerError } from './core/errors.js';
import { SchemaTooNewError } from './storage/migrations.js';

/** Hard limit for a graceful stop; past it the process exits anyway. */
const SHUTDOWN_LIMIT_MS = 9500;
/** Most log bytes one write(2) takes from the queue (see runServer). */
const LOG_MAX_WRITE = 64 * 1024;

/** Prints one line for the operator, without a stack trace, and exits. */
function fail(message: string, exitCode: number): never {
  process.stderr.write(`tracker: ${message}\n`);
  process.exit(exitCode);
}

/** The first line of what went wrong underneath, without the stack. */
function describeCause(cause: unknown): string {
  const error = cause as { code?: unknown; message?: unknown } | undefined;
  const message = typeof error?.message === 'string' && error.message !== '' ? error.message : String(cause);
  const code = typeof error?.code === 'string' && !message.includes(error.code) ? ` (${error.code})` : '';
  return `${message.split('\n')[0]}${code}`;
}

/**
 * Runs the server process: configuration from `argv` (flags, without node and the script)
 * and the environment, signals, exit codes. `npm start` and `tracker serve` both land here.
 */
export async function runServer(argv: readonly string[], program = 'npm start --'): Promise<void> {
  let loaded: ReturnType<typeof loadConfig>;
  try {
    loaded = loadConfig(argv, process.env);
  } catch (error) {
    if (error instanceof ConfigError) fail(error.message, 2);
    throw error;
  }
  if (loaded.help) {
    process.stdout.write(helpText(program));
    return;
  }
  const { config } = loaded;
  // Asynchronous writes: a log line per request must not cost a write(2) on the request's
  // path. pino flushes what is buffered when the process exits normally. The process is
  // `app` (with pino's pid and hostname): `service` in a line is always a lock's service.
  // Each write takes up to LOG_MAX_WRITE bytes of what waits: the next write starts only
  // when the event loop handles the last one's completion, and with SonicBoom's 16 KiB a busy
  // loop wrote less than the info level logs at full load (about 3 MB/s), so the lines piled
  // up in the heap without end (29 MB of waiting lines in 4 minutes, in a heap snapshot).
  const destination = pino.destination({ dest: 1, sync: false, maxWrite: LOG_MAX_WRITE });
  const logger = pino(
    { level: config.logLevel, base: { app: 'tracker', pid: process.pid, hostname: hostname() } },
    destination,
  );

  let tracker: Awaited<ReturnType<typeof startTracker>>;
  try {
    tracker = await startTracker(config, logger);
  } catch (error) {
    if (error instanceof ListenError || error instanceof SchemaTooNewError || error instanceof TlsError) {
      fail(error.message, 1);
    }
    if (error instanceof TokenFileError || error instanceof ResourcesFileError) fail(error.message, 2);
    if (error instanceof TrackerError && error.code === ErrorCode.STORE_UNAVAILABLE) {
      fail(`cannot reach the database ${config.databaseUrl}: ${describeCause(error.cause)}`, 1);
    }
    const code = (error as { code?: string }).code;
    if (typeof code === 'string' && code.startsWith('SQLITE_')) {
      fail(`cannot open ${config.databaseUrl}: ${(error as Error).message}`, 1);
    }
    throw error;
  }
  logger.info(
    {
      host: config.host,
      httpPort: tracker.httpPort,
      grpcPort: tracker.grpcPort,
      database: config.databaseUrl,
      tls: config.tls !== null,
      auth: config.authTokensFile !== null,
      resourcesFile: config.resourcesFile,
    },
    'tracker listening',
  );

  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'shutting down');
    // Logs a last line, then exits once everything logged is written ('drain') or the write
    // failed ('error'). Exiting with lines still buffered made pino write them synchronously
    // at exit, and that synchronous write retries a broken pipe (stdout's reader gone: a log
    // collector that died) forever: the process never exited. Met by an asynchronous write,
    // the broken pipe is an error, after which pino drops the lines.
    const exitAfter = (code: number, last: () => void) => {
      const exit = () => process.exit(code);
      destination.once('drain', exit);
      destination.once('error', exit);
      setTimeout(exit, 2000);
      last();
    };
    setTimeout(() => {
      exitAfter(0, () => logger.warn('graceful shutdown took too long; exiting'));
    }, SHUTDOWN_LIMIT_MS).unref();
    tracker.stop().then(
      () => exitAfter(0, () => logger.info('stopped')),
      (error: unknown) => exitAfter(1, () => logger.error({ err: error }, 'error while shutting down')),
    );
  };
  // SIGHUP: read the tokens and resources files again (they are also watched for changes).
  process.on('SIGHUP', () => {
    tracker.reloadTokens();
    void tracker.reloadResources();
  });
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}
