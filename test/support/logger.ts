import type { Logger } from '../../src/core/logger.js';

export interface LogEntry {
  readonly level: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace';
  readonly details: object;
  readonly message: string;
}

/** A logger that keeps what it was told, so tests can see what was reported. */
export function recordingLogger(): { entries: LogEntry[]; logger: Logger } {
  const entries: LogEntry[] = [];
  const at =
    (level: LogEntry['level']) =>
    (details: object | string, message?: string): void => {
      if (typeof details === 'string') entries.push({ level, details: {}, message: details });
      else entries.push({ level, details, message: message ?? '' });
    };
  const logger: Logger = {
    level: 'trace',
    fatal: at('fatal'),
    error: at('error'),
    warn: at('warn'),
    info: at('info'),
    debug: at('debug'),
    trace: at('trace'),
    silent: () => {},
    child: () => logger,
  };
  return { entries, logger };
}
