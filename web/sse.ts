/**
 * Server-Sent Events over fetch(): EventSource cannot send an Authorization header, so the
 * stream is read from a ReadableStream and parsed here, as the HTML standard's
 * "event stream interpretation" says, and resumed with a Last-Event-ID header.
 */

export interface SseMessage {
  readonly event: string;
  readonly data: string;
  /** The last event ID after this message (the stream's, not only this message's). */
  readonly lastEventId: string;
}

/** Incremental parser: feed decoded text, get the complete messages. */
export class SseParser {
  private buffer = '';
  /** How much of `buffer` is known to hold no line end. */
  private scanned = 0;
  private data: string[] = [];
  private event = '';
  private sawData = false;
  lastEventId = '';
  /** The server's `retry:` advice, in ms. */
  retryMs: number | undefined;

  constructor(lastEventId = '') {
    this.lastEventId = lastEventId;
  }

  /** `final` at the end of the stream (an unfinished message is then dropped, as the standard says). */
  push(text: string, final = false): SseMessage[] {
    const buffer = this.buffer + text;
    const messages: SseMessage[] = [];
    let start = 0;
    // Where to look for line ends: the part scanned before held none (a 1 MB snapshot line
    // arrives in many chunks; each byte is looked at once).
    let from = this.scanned;
    // The next CR at or after `from`; -1 when there is none up to the end of the buffer.
    let cr = -2;
    for (;;) {
      const lf = buffer.indexOf('\n', from);
      if (cr !== -1 && cr < from) cr = buffer.indexOf('\r', from);
      const end = cr === -1 ? lf : lf === -1 ? cr : Math.min(cr, lf);
      if (end === -1) break;
      // A CR at the very end may be the first half of a CRLF: wait for the next chunk.
      if (end === cr && end === buffer.length - 1 && !final) break;
      const line = buffer.slice(start, end);
      start = end + (end === cr && buffer.charCodeAt(end + 1) === 10 ? 2 : 1);
      from = start;
      const message = this.line(line);
      if (message) messages.push(message);
    }
    this.buffer = final ? '' : buffer.slice(start);
    this.scanned = final ? 0 : Math.max(0, buffer.length - start - (buffer.endsWith('\r') ? 1 : 0));
    return messages;
  }

  private line(line: string): SseMessage | undefined {
    if (line === '') return this.dispatch();
    if (line.charCodeAt(0) === 58) return undefined; // ':' comment (keep-alive)
    const colon = line.indexOf(':');
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? '' : line.slice(colon + 1);
    if (value.charCodeAt(0) === 32) value = value.slice(1);
    switch (field) {
      case 'event':
        this.event = value;
        break;
      case 'data':
        this.data.push(value);
        this.sawData = true;
        break;
      case 'id':
        if (!value.includes('\u0000')) this.lastEventId = value;
        break;
      case 'retry':
        if (/^\d+$/.test(value)) this.retryMs = Number(value);
        break;
    }
    return undefined;
  }

  private dispatch(): SseMessage | undefined {
    const message = this.sawData
      ? { event: this.event || 'message', data: this.data.join('\n'), lastEventId: this.lastEventId }
      : undefined;
    this.data = [];
    this.event = '';
    this.sawData = false;
    return message;
  }
}

export type StreamStatus =
  | { readonly state: 'connecting'; readonly attempt: number }
  | { readonly state: 'live' }
  | { readonly state: 'retrying'; readonly inMs: number; readonly reason: string; readonly status?: number }
  /** 401 or 403: waiting for another token (onUnauthorized). */
  | { readonly state: 'unauthorized'; readonly status: number };

interface Ended {
  readonly reason: string;
  readonly status?: number;
  /** The answer's Retry-After, in ms. */
  readonly retryAfterMs?: number;
}

export interface WatchOptions {
  readonly url: () => string;
  /** Called before every (re)connection: the token may have changed. */
  readonly headers: () => Record<string, string>;
  readonly onMessage: (message: SseMessage) => void;
  readonly onStatus: (status: StreamStatus) => void;
  /** Reconnect when nothing (not even a keep-alive) arrived for this long. */
  readonly idleTimeoutMs?: number;
  readonly onResponse?: (response: Response) => void;
  /**
   * On a 401 or 403 answer: resolves when it is worth connecting again (another token).
   * Without it, such answers are retried with backoff like any other failure.
   */
  readonly onUnauthorized?: (status: number) => Promise<unknown>;
  /** Reads Retry-After of a refused connection (429, 503), in ms. */
  readonly retryAfterMs?: (response: Response) => number | undefined;
}

export interface Watch {
  /** Drops the connection and opens a new one at once (e.g. after a token change). */
  restart(): void;
  close(): void;
}

const MIN_BACKOFF_MS = 500;
const MAX_BACKOFF_MS = 15_000;
/** The longest wait a Retry-After header can impose before the next attempt. */
const MAX_RETRY_AFTER_MS = 300_000;

/** Keeps one stream open, reconnecting with backoff and Last-Event-ID, until closed. */
export function watchStream(options: WatchOptions): Watch {
  const idleTimeoutMs = options.idleTimeoutMs ?? 45_000;
  let lastEventId = '';
  let closed = false;
  let attempt = 0;
  let backoffMs = MIN_BACKOFF_MS;
  let serverRetryMs: number | undefined;
  let controller: AbortController | undefined;
  let wake: (() => void) | undefined;
  /** Set by restart(): reconnect without backoff. */
  let restartNow = false;

  /** Resolves after `ms`, or when `until` resolves, or at once on restart() or close(). */
  const sleep = (ms: number, until?: Promise<unknown>) =>
    new Promise<void>((resolve) => {
      const timer = Number.isFinite(ms) ? setTimeout(done, ms) : undefined;
      function done() {
        clearTimeout(timer);
        if (wake === done) wake = undefined;
        resolve();
      }
      wake = done;
      until?.then(done, done);
    });

  async function connectOnce(): Promise<Ended> {
    controller = new AbortController();
    const { signal } = controller;
    let idleTimer: ReturnType<typeof setTimeout> | undefined;
    const armIdle = () => {
      clearTimeout(idleTimer);
      idleTimer = setTimeout(() => controller?.abort(new Error('stream idle')), idleTimeoutMs);
    };
    const headers: Record<string, string> = { accept: 'text/event-stream', ...options.headers() };
    if (lastEventId !== '') headers['last-event-id'] = lastEventId;
    try {
      armIdle();
      const response = await fetch(options.url(), { headers, signal, cache: 'no-store' });
      options.onResponse?.(response);
      if (!response.ok || !response.body) {
        const retryAfterMs = response.ok ? undefined : options.retryAfterMs?.(response);
        // Nobody reads the refusal's body: let the connection go.
        void response.body?.cancel().catch(() => {});
        return {
          reason: response.status === 429 ? 'rate limited' : `HTTP ${response.status}`,
          status: response.status,
          ...(retryAfterMs === undefined ? {} : { retryAfterMs }),
        };
      }
      options.onStatus({ state: 'live' });
      const parser = new SseParser(lastEventId);
      const decoder = new TextDecoder();
      const reader = response.body.getReader();
      let received = false;
      for (;;) {
        const { done, value } = await reader.read();
        armIdle();
        if (!received && !done) {
          // The server talks (a message or a keep-alive): the next drop retries quickly again.
          received = true;
          attempt = 0;
          backoffMs = MIN_BACKOFF_MS;
        }
        const messages = done
          ? parser.push(decoder.decode(), true)
          : parser.push(decoder.decode(value, { stream: true }));
        if (parser.retryMs !== undefined) serverRetryMs = parser.retryMs;
        for (const message of messages) {
          lastEventId = message.lastEventId;
          options.onMessage(message);
        }
        // Messages without data still move the last event id.
        lastEventId = parser.lastEventId;
        if (done) return { reason: 'stream ended' };
      }
    } catch (error) {
      return { reason: signal.aborted ? String(signal.reason ?? 'aborted') : String(error) };
    } finally {
      clearTimeout(idleTimer);
      controller = undefined;
    }
  }

  void (async () => {
    while (!closed) {
      attempt += 1;
      options.onStatus({ state: 'connecting', attempt });
      const ended = await connectOnce();
      if (closed) break;
      if (restartNow) {
        restartNow = false;
        continue;
      }
      const { onUnauthorized } = options;
      if (onUnauthorized && (ended.status === 401 || ended.status === 403)) {
        // Another try with the same token gets the same answer: wait for a new one.
        options.onStatus({ state: 'unauthorized', status: ended.status });
        await sleep(Number.POSITIVE_INFINITY, onUnauthorized(ended.status));
        restartNow = false;
        attempt = 0;
        backoffMs = MIN_BACKOFF_MS;
        continue;
      }
      // The server's retry advice is the least wait; repeated failures back off further. A
      // refusal's Retry-After (429) is waited out in full.
      const inMs =
        ended.retryAfterMs !== undefined
          ? Math.min(Math.max(ended.retryAfterMs, backoffMs), MAX_RETRY_AFTER_MS)
          : Math.min(Math.max(serverRetryMs ?? 0, backoffMs), MAX_BACKOFF_MS);
      backoffMs = Math.min(backoffMs * 2, MAX_BACKOFF_MS);
      options.onStatus({
        state: 'retrying',
        inMs,
        reason: ended.reason,
        ...(ended.status ? { status: ended.status } : {}),
      });
      await sleep(inMs);
    }
  })();

  return {
    restart() {
      restartNow = true;
      attempt = 0;
      backoffMs = MIN_BACKOFF_MS;
      if (controller) controller.abort(new Error('restart'));
      else {
        restartNow = false;
        wake?.();
      }
    },
    close() {
      closed = true;
      controller?.abort(new Error('closed'));
      wake?.();
    },
  };
}
