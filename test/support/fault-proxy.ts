// A TCP proxy in front of PostgreSQL (or anything), for faults a real server will not
// produce on cue; the tests and the soak (bench/soak.ts) share it, so it imports nothing of
// node:test. Modes: forward bytes; black-hole (connections stay open, no byte passes either
// way, new connections hang like a silent host); down (every connection dropped, new ones
// refused). A black hole drops what it swallows, so the PostgreSQL protocol on those
// connections is broken for good: restore() after blackhole() cuts them first, forward()
// leaves that to the client.
import net from 'node:net';

type Mode = 'forward' | 'blackhole' | 'down' | 'delay';

export class FaultProxy {
  readonly #server = net.createServer((socket) => this.#accept(socket));
  readonly #sockets = new Set<net.Socket>();
  readonly #target: { host: string; port: number };
  #mode: Mode = 'forward';
  #port = 0;
  /** In `delay` mode: how long every chunk is held, each way, in ms. */
  #delayMs = 0;
  /** Answers still to swallow (cutAnswers): the connection is cut as the answer arrives. */
  #cutAnswers = 0;

  private constructor(target: { host: string; port: number }) {
    this.#target = target;
  }

  /** Listens on 127.0.0.1, on a free port, in front of the host and port of `target` (a URL). */
  static async start(target: string): Promise<FaultProxy> {
    const url = new URL(target);
    const proxy = new FaultProxy({ host: url.hostname || '127.0.0.1', port: Number(url.port || 5432) });
    await proxy.#listen(0);
    return proxy;
  }

  get port(): number {
    return this.#port;
  }

  get mode(): Mode {
    return this.#mode;
  }

  /** Connections (both sides counted) open right now. */
  get sockets(): number {
    return this.#sockets.size;
  }

  /** `url` with the proxy as its host and port. */
  url(url: string): string {
    const changed = new URL(url);
    changed.hostname = '127.0.0.1';
    changed.port = String(this.#port);
    return changed.toString();
  }

  /** Nothing passes; open connections hang, new ones hang too. */
  blackhole(): void {
    this.#mode = 'blackhole';
  }

  /** A slow network: every chunk, each way, arrives `ms` later (in order). */
  delay(ms: number): void {
    this.#delayMs = ms;
    this.#mode = 'delay';
  }

  /**
   * The next `count` answers never arrive: a connection whose request went through is cut as
   * its answer comes back (the server did the work; the client learns nothing).
   */
  cutAnswers(count: number): void {
    this.#cutAnswers = count;
  }

  /** Drops every connection and refuses new ones until restore(). */
  async down(): Promise<void> {
    if (this.#mode === 'down') return;
    this.#mode = 'down';
    const closed = new Promise((resolve) => this.#server.close(resolve));
    this.#destroyAll();
    await closed;
  }

  /** Forwards again, keeping the connections that lived through a black hole. */
  async forward(): Promise<void> {
    if (this.#mode === 'down') await this.#listen(this.#port);
    this.#mode = 'forward';
  }

  /** Forwards again; connections that lived through a black hole are cut first (their streams lost bytes). */
  async restore(): Promise<void> {
    this.#cutAnswers = 0;
    if (this.#mode === 'blackhole') this.#destroyAll();
    if (this.#mode === 'down') await this.#listen(this.#port);
    this.#mode = 'forward';
  }

  async close(): Promise<void> {
    await this.down();
  }

  async #listen(port: number): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      this.#server.once('error', reject);
      this.#server.listen(port, '127.0.0.1', () => {
        this.#server.off('error', reject);
        resolve();
      });
    });
    this.#port = (this.#server.address() as net.AddressInfo).port;
  }

  #destroyAll(): void {
    for (const socket of this.#sockets) socket.destroy();
    this.#sockets.clear();
  }

  #track(socket: net.Socket): void {
    this.#sockets.add(socket);
    socket.on('error', () => {});
    socket.on('close', () => this.#sockets.delete(socket));
  }

  #accept(client: net.Socket): void {
    this.#track(client);
    // A connection that arrives during a black hole just hangs, like a silent host.
    if (this.#mode === 'blackhole' || this.#mode === 'down') return;
    const upstream = net.connect(this.#target.port, this.#target.host);
    this.#track(upstream);
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    const pass = (to: net.Socket, chunk: Buffer) => {
      if (this.#mode === 'forward') to.write(chunk);
      else if (this.#mode === 'delay') setTimeout(() => to.write(chunk), this.#delayMs).unref();
    };
    client.on('data', (chunk: Buffer) => pass(upstream, chunk));
    upstream.on('data', (chunk: Buffer) => {
      if (this.#cutAnswers > 0) {
        this.#cutAnswers--;
        client.destroy();
        upstream.destroy();
        return;
      }
      pass(client, chunk);
    });
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
  }
}
