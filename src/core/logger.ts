/**
 * The one logger interface of the whole program: the stores, the core, both transports and
 * the process entry log through it. pino's logger fits it as is (and it fits Fastify's
 * `loggerInstance`), so the composition root creates one pino logger and hands it around;
 * tests pass a silent one.
 *
 * A line is structured: `logger.warn({ service, err }, 'what happened')`. The field names
 * `app`, `pid` and `hostname` are the process's own (see server.ts); `service` is always a
 * lock's service.
 */
export interface LogFn {
  (details: object, message?: string): void;
  (message: string): void;
}

export interface Logger {
  level: string;
  fatal: LogFn;
  error: LogFn;
  warn: LogFn;
  info: LogFn;
  debug: LogFn;
  trace: LogFn;
  silent: LogFn;
  child(bindings: Record<string, unknown>): Logger;
}
