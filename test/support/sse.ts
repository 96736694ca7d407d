import { within } from './wait-for.js';

/** One Server-Sent Events message. */
export interface SseMessage {
  readonly id: string | undefined;
  readonly event: string;
  readonly data: string;
  /** `data` parsed as JSON. */
  readonly json: Record<string, unknown>;
}

export interface SseStream {
  readonly status: number;
  readonly headers: Headers;
  /** The next message (comments and `retry:` lines are skipped); rejects after `timeoutMs`. */
  next(timeoutMs?: number): Promise<SseMessage>;
  /** Messages until one satisfies `done` (inclusive), each within `timeoutMs`; at most `max`. */
  until(done: (message: SseMessage) => boolean, timeoutMs?: number, max?: number): Promise<SseMessage[]>;
  close(): void;
}

/**
 * Opens an SSE stream over a real socket with fetch, as a browser's EventSource would (but
 * with headers, e.g. Last-Event-ID), and parses messages as they arrive.
 */
export async function openSse(url: string, headers: Record<string, string> = {}): Promise<SseStream> {
  const abort = new AbortController();
  const response = await fetch(url, {
    headers: { accept: 'text/event-stream', ...headers },
    signal: AbortSignal.any([abort.signal, AbortSignal.timeout(120_000)]),
  });
  const queue: SseMessage[] = [];
  const waiting: (() => void)[] = [];
  let ended: Error | null = null;
  const wake = () => {
    for (const resolve of waiting.splice(0)) resolve();
  };

  if (response.body) {
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    void (async () => {
      let text = '';
      try {
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          text += value;
          for (let end = text.indexOf('\n\n'); end >= 0; end = text.indexOf('\n\n')) {
            const block = text.slice(0, end);
            text = text.slice(end + 2);
            const message = parseBlock(block);
            if (message) queue.push(message);
          }
          if (queue.length > 0) wake();
        }
        ended = new Error('the stream ended');
      } catch (error) {
        ended = error instanceof Error ? error : new Error(String(error));
      }
      wake();
    })();
  }

  /** Resolves once a message is queued or the stream has ended. */
  const arrival = () =>
    new Promise<void>((resolve) => {
      if (queue.length > 0 || ended) resolve();
      else waiting.push(resolve);
    });

  const next = async (timeoutMs = 5000): Promise<SseMessage> => {
    await within(arrival(), { what: 'an SSE message', timeoutMs });
    const message = queue.shift();
    if (message) return message;
    throw ended ?? new Error('the stream ended');
  };

  return {
    status: response.status,
    headers: response.headers,
    next,
    async until(done, timeoutMs = 5000, max = 1000) {
      const seen: SseMessage[] = [];
      for (let i = 0; i < max; i++) {
        const message = await next(timeoutMs);
        seen.push(message);
        if (done(message)) return seen;
      }
      throw new Error(`no matching SSE message among ${max}`);
    },
    close() {
      abort.abort();
    },
  };
}

function parseBlock(block: string): SseMessage | null {
  let id: string | undefined;
  let event = 'message';
  const data: string[] = [];
  for (const line of block.split('\n')) {
    if (line === '' || line.startsWith(':')) continue;
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
    if (field === 'id') id = value;
    else if (field === 'event') event = value;
    else if (field === 'data') data.push(value);
  }
  if (data.length === 0) return null;
  const text = data.join('\n');
  return { id, event, data: text, json: JSON.parse(text) as Record<string, unknown> };
}
