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
