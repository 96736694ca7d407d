import http from 'node:http';

/**
 * The fenced register: what a lock protects, standing in for a database a CI job migrates.
 * Every access carries the holder's fencing token; a token lower than the highest the
 * service's register has seen is refused (reads too, so that a holder paused past its lease
 * cannot read, stall, and overwrite a newer holder's work). Each holder reads the value and
 * writes it plus one: every acknowledged write must survive, so at the end the value equals
 * the writes acknowledged. `fenced: false` is the broken variant that checks no token.
 */
export class FencedRegister {
  readonly #server = http.createServer((request, response) => this.#handle(request, response));
  readonly #services = new Map<string, { value: number; highest: number; acknowledged: number }>();
  readonly #fenced: boolean;
  /** Accesses refused because their token was older than the newest seen. */
  refused = 0;
  #port = 0;

  constructor(options: { fenced: boolean }) {
    this.#fenced = options.fenced;
  }

  async listen(): Promise<void> {
    await new Promise<void>((resolve) => this.#server.listen(0, '127.0.0.1', resolve));
    this.#port = (this.#server.address() as { port: number }).port;
  }

  get url(): string {
    return `http://127.0.0.1:${this.#port}`;
  }

  /** Acknowledged writes missing from the final values: lost updates. */
  get lost(): number {
    let lost = 0;
    for (const service of this.#services.values()) lost += service.acknowledged - service.value;
    return lost;
  }

  get acknowledged(): number {
    let total = 0;
    for (const service of this.#services.values()) total += service.acknowledged;
    return total;
  }

  async close(): Promise<void> {
    this.#server.closeAllConnections();
    await new Promise((resolve) => this.#server.close(resolve));
  }

  #handle(request: http.IncomingMessage, response: http.ServerResponse): void {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      const body = JSON.parse(Buffer.concat(chunks).toString() || '{}') as {
        service: string;
        token: number;
        value?: number;
      };
      const state = this.#services.get(body.service) ?? { value: 0, highest: 0, acknowledged: 0 };
      this.#services.set(body.service, state);
      if (this.#fenced && body.token < state.highest) {
        this.refused++;
        response.writeHead(409).end('{"error":"fenced"}');
        return;
      }
      state.highest = Math.max(state.highest, body.token);
      if (request.url === '/write' && typeof body.value === 'number') {
        state.value = body.value;
        state.acknowledged++;
      }
      response
        .writeHead(200, { 'content-type': 'application/json' })
        .end(JSON.stringify({ value: state.value }));
    });
  }
}
