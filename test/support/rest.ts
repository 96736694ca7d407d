import http from 'node:http';

/** The REST API's path prefix. */
export const API = '/api/v1alpha1';

export interface Reply {
  readonly status: number;
  /** The parsed body; {} when it was empty. */
  readonly json: Record<string, unknown>;
  readonly headers: Headers;
  /** performance.now() when the answer was complete. */
  readonly at: number;
  /** How long the call took, in ms. */
  readonly ms: number;
}

/**
 * One REST call over a real socket. A string body is sent as is (for malformed JSON and
 * other content types); anything else as JSON. Bounded by 20 s unless a signal is given.
 */
export async function call(
  base: string,
  method: string,
  path: string,
  body?: unknown,
  options: { headers?: Record<string, string>; signal?: AbortSignal } = {},
): Promise<Reply> {
  const headers: Record<string, string> = { ...options.headers };
  const init: RequestInit = { method, headers, signal: options.signal ?? AbortSignal.timeout(20_000) };
  if (body !== undefined) {
    init.body = typeof body === 'string' ? body : JSON.stringify(body);
    headers['content-type'] ??= 'application/json';
  }
  const started = performance.now();
  const response = await fetch(`${base}${path}`, init);
  const text = await response.text();
  const at = performance.now();
  return {
    status: response.status,
    json: text === '' ? {} : JSON.parse(text),
    headers: response.headers,
    at,
    ms: at - started,
  };
}

/**
 * One request over one of `agent`'s keep-alive connections (`body`, if any, as JSON); the
 * status and the body as text. For loads: fetch costs the test process about five times the
 * CPU per request. Bounded by `timeoutMs` of silence (a socket timeout costs less than a
 * timer each).
 */
export function quickRequest(
  agent: http.Agent,
  method: string,
  url: string,
  body?: unknown,
  timeoutMs = 20_000,
): Promise<{ status: number; text: string }> {
  const data = body === undefined ? undefined : JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const request = http.request(
      url,
      {
        method,
        agent,
        headers:
          data === undefined
            ? {}
            : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) },
      },
      (response) => {
        let text = '';
        response.setEncoding('utf8');
        response.on('data', (chunk: string) => {
          text += chunk;
        });
        response.on('end', () => resolve({ status: response.statusCode ?? 0, text }));
        response.on('error', reject);
      },
    );
    request.on('error', reject);
    request.setTimeout(timeoutMs, () =>
      request.destroy(new Error(`${method} ${url}: no answer within ${timeoutMs} ms`)),
    );
    request.end(data);
  });
}
