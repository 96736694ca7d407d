// The soak's REST client: keep-alive node:http, one agent per replica, every request bounded
// by a timer, and every answer (or failure) returned with the instants that the safety
// checks reason with: `sentAt` is read just before the request is handed to node:http (so
// the request reaches the server no earlier), `doneAt` when the whole response has arrived.
import http from 'node:http';
import { performance } from 'node:perf_hooks';

export const API = '/api/v1alpha1';

export type Answer =
  | {
      readonly kind: 'reply';
      readonly status: number;
      /** The JSON body's `code` for an error status, else null. */
      readonly code: string | null;
      readonly json: unknown;
      readonly sentAt: number;
      readonly doneAt: number;
    }
  | {
      readonly kind: 'failed';
      /** `timeout` (our timer), or `connection <CODE>` (refused, reset, hang-up). */
      readonly error: string;
      readonly sentAt: number;
      readonly doneAt: number;
    };

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

export class Rest {
  readonly #agent: http.Agent;
  readonly #hostname: string;
  readonly #port: number;
  readonly baseUrl: string;

  constructor(baseUrl: string, maxSockets: number) {
    const url = new URL(baseUrl);
    this.baseUrl = baseUrl;
    this.#hostname = url.hostname;
    this.#port = Number(url.port || 80);
    this.#agent = new http.Agent({ keepAlive: true, maxSockets });
  }

  /** Never rejects: a failure is an Answer of kind 'failed'. */
  request(method: string, path: string, body: unknown, timeoutMs: number): Promise<Answer> {
    const text = body === undefined ? undefined : JSON.stringify(body);
    const headers: http.OutgoingHttpHeaders = {};
    if (text !== undefined) {
      headers['content-type'] = 'application/json';
      headers['content-length'] = Buffer.byteLength(text);
    } else if (method === 'POST') {
      // A POST without a body says it is no HTML form, or the server refuses it as cross-site.
      headers['x-tracker'] = '1';
    }
    return new Promise<Answer>((resolve) => {
      let settled = false;
      let timedOut = false;
      const sentAt = performance.now();
      const finish = (answer: DistributiveOmit<Answer, 'sentAt' | 'doneAt'>) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        resolve({ ...answer, sentAt, doneAt: performance.now() } as Answer);
      };
      const req = http.request(
        { agent: this.#agent, hostname: this.#hostname, port: this.#port, method, path, headers },
        (res) => {
          let received = '';
          res.setEncoding('utf8');
          res.on('data', (chunk: string) => {
            received += chunk;
          });
          res.on('end', () => {
            const status = res.statusCode ?? 0;
            let json: unknown = null;
            try {
              json = received === '' ? null : JSON.parse(received);
            } catch {
              json = null;
            }
            const code =
              status >= 300 && typeof json === 'object' && json !== null && 'code' in json
                ? String((json as { code: unknown }).code)
                : null;
            finish({ kind: 'reply', status, code, json });
          });
          res.on('error', (error) => finish({ kind: 'failed', error: describeFailure(error, timedOut) }));
        },
      );
      const timer = setTimeout(() => {
        timedOut = true;
        req.destroy(new Error('timeout'));
      }, timeoutMs);
      req.on('error', (error) => finish({ kind: 'failed', error: describeFailure(error, timedOut) }));
      req.end(text);
    });
  }

  close(): void {
    this.#agent.destroy();
  }
}

function describeFailure(error: unknown, timedOut: boolean): string {
  if (timedOut) return 'timeout';
  const code = (error as { code?: unknown }).code;
  if (typeof code === 'string' && code !== '') return `connection ${code}`;
  return `connection ${(error as Error).message ?? String(error)}`;
}
