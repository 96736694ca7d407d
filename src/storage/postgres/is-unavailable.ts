/** Socket errors: the database host cannot be reached, or dropped the connection. */
const NETWORK_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'ETIMEDOUT',
  'EPIPE',
  'EHOSTUNREACH',
  'EHOSTDOWN',
  'ENETUNREACH',
  'ENETDOWN',
  // Name resolution failing after a successful start is an outage, not a typo.
  'ENOTFOUND',
  'EAI_AGAIN',
]);

/** SQLSTATEs for "the server cannot serve this now, try again later". */
const SQLSTATES = new Set([
  '57014', // query_canceled: statement_timeout fired
  '57P01', // admin_shutdown: server stopping, or pg_terminate_backend
  '57P02', // crash_shutdown
  '57P03', // cannot_connect_now: starting up or in recovery
  '57P05', // idle_session_timeout
  '25P03', // idle_in_transaction_session_timeout
]);

/** Whole SQLSTATE classes: 08 connection exception, 53 insufficient resources (too many connections, disk full). */
const SQLSTATE_CLASSES = new Set(['08', '53']);

/**
 * Errors node-postgres and pg-pool raise without a code: a dropped connection, a connect
 * or pool-checkout timeout, the client-side query_timeout.
 */
const DRIVER_MESSAGES =
  /^(Connection terminated|timeout exceeded when trying to connect|Query read timeout|timeout expired|Client has encountered a connection error)/;

/** Deep enough for pg-pool's wrapping (`cause`) and Node's AggregateError of dual-stack connects. */
const MAX_DEPTH = 4;

/**
 * Whether an error from node-postgres means "the database is unreachable or too slow"
 * (STORE_UNAVAILABLE, safe to retry) rather than a bug (anything else, rethrown as is).
 */
export function isUnavailable(error: unknown, depth = 0): boolean {
  if (typeof error !== 'object' || error === null || depth > MAX_DEPTH) return false;
  const { code, message, cause, errors } = error as {
    code?: unknown;
    message?: unknown;
    cause?: unknown;
    errors?: unknown;
  };
  if (typeof code === 'string') {
    if (NETWORK_CODES.has(code) || SQLSTATES.has(code)) return true;
    if (/^[0-9A-Z]{5}$/.test(code) && SQLSTATE_CLASSES.has(code.slice(0, 2))) return true;
  }
  if (typeof message === 'string' && DRIVER_MESSAGES.test(message)) return true;
  if (isUnavailable(cause, depth + 1)) return true;
  return Array.isArray(errors) && errors.some((inner) => isUnavailable(inner, depth + 1));
}
