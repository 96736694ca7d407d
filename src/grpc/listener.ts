import net from 'node:net';
import tls from 'node:tls';
import { type Server, ServerCredentials } from '@grpc/grpc-js';
import type { Logger } from '../core/logger.js';
import { serverTlsOptions } from '../server-tls-options.js';

/** What a client must send first on an HTTP/2 connection (RFC 9113, section 3.4). */
const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');
/** Refusals of one kind are logged at most this often (with how many there were since). */
const LOG_EVERY_MS = 10_000;

export type ConnectionRefusal = 'total' | 'per-address' | 'handshake-timeout' | 'not-http2';

export interface GrpcListenerOptions {
  readonly host: string;
  readonly port: number;
  /** PEM key material; with `ca`, clients must present a certificate it signed. */
  readonly tls?:
    | { readonly cert: Buffer; readonly key: Buffer; readonly ca?: Buffer | undefined }
    | undefined;
  /** Longest a connection may take from accept to a complete TLS handshake and HTTP/2 preface. */
  readonly handshakeTimeoutMs: number;
  readonly maxConnections: number;
  readonly maxConnectionsPerAddress: number;
  readonly logger: Logger;
  /** Called for each connection refused or cut, with why. */
  readonly onRefused: (reason: ConnectionRefusal) => void;
}

export interface GrpcListener {
  readonly port: number;
  /** Connections open now (handshaking ones included). */
  readonly connections: number;
  /** Stops accepting and cuts connections still handshaking; grpc-js closes the others. */
  close(): Promise<void>;
}

/**
 * The gRPC port, in front of grpc-js: the process accepts each connection itself, refuses
 * it past the caps (in total, per client address), gives it `handshakeTimeoutMs` to finish
 * its TLS handshake and send the HTTP/2 preface, and only then hands it to grpc-js (whose
 * `grpc.max_connection_idle_ms` closes it once idle). grpc-js alone would keep a connection
 * that never speaks for ever. TLS is terminated here, so the timeout covers the handshake;
 * grpc-js still sees the TLS socket (client certificates, auth context) as it would its own.
 */
export async function listenGrpcGuarded(server: Server, options: GrpcListenerOptions): Promise<GrpcListener> {
  const { logger, onRefused } = options;
  const injector = server.createConnectionInjector(ServerCredentials.createInsecure());
  // TLS is a tls.Server that never listens: it is handed each accepted socket, and hands
  // back the TLS socket once its handshake is done.
  const mutual = options.tls?.ca !== undefined;
  const tlsServer = options.tls
    ? tls.createServer({
        cert: options.tls.cert,
        key: options.tls.key,
        ...(options.tls.ca ? { ca: options.tls.ca } : {}),
        // The same versions and suites as REST's HTTPS server.
        ...serverTlsOptions,
        ALPNProtocols: ['h2'],
        requestCert: mutual,
        rejectUnauthorized: mutual,
      })
    : null;
  /** Connections in their TLS handshake, by `address:port`: what to do once it is done. */
  const secured = new Map<string, (stream: tls.TLSSocket) => void>();
  tlsServer?.on('secureConnection', (stream: tls.TLSSocket) => {
    stream.on('error', () => {});
    secured.get(`${stream.remoteAddress}:${stream.remotePort}`)?.(stream);
  });
  tlsServer?.on('tlsClientError', (_error, stream: tls.TLSSocket) => stream.destroy());
  const perAddress = new Map<string, number>();
  const handshaking = new Set<net.Socket>();
  let open = 0;
  const logged = new Map<ConnectionRefusal, { at: number; count: number }>();

  const refuse = (socket: net.Socket, reason: ConnectionRefusal, address: string) => {
    onRefused(reason);
    socket.destroy();
    const entry = logged.get(reason) ?? { at: Number.NEGATIVE_INFINITY, count: 0 };
    entry.count++;
    const now = performance.now();
    if (now - entry.at >= LOG_EVERY_MS) {
      logger.warn(
        { reason, address, refused: entry.count, open },
        'gRPC connection refused (the count is since the last such line)',
      );
      entry.at = now;
      entry.count = 0;
    }
    logged.set(reason, entry);
  };

  const netServer = net.createServer((socket) => {
    const address = socket.remoteAddress ?? 'unknown';
    if (open >= options.maxConnections) return refuse(socket, 'total', address);
    const mine = perAddress.get(address) ?? 0;
    if (mine >= options.maxConnectionsPerAddress) return refuse(socket, 'per-address', address);
    open++;
    perAddress.set(address, mine + 1);
    socket.once('close', () => {
      open--;
      const left = (perAddress.get(address) ?? 1) - 1;
      if (left === 0) perAddress.delete(address);
      else perAddress.set(address, left);
      handshaking.delete(socket);
    });
    socket.on('error', () => {
      // A reset by the client: 'close' follows.
    });
    handshaking.add(socket);
    const timer = setTimeout(() => refuse(socket, 'handshake-timeout', address), options.handshakeTimeoutMs);
    timer.unref();
    const handOver = (stream: net.Socket) => {
      readPreface(stream).then(
        (spoke) => {
          clearTimeout(timer);
          handshaking.delete(socket);
          if (!spoke) return refuse(socket, 'not-http2', address);
          injector.injectConnection(stream);
        },
        () => {
          clearTimeout(timer);
          socket.destroy();
        },
      );
    };
    if (!tlsServer) return handOver(socket);
    const key = `${address}:${socket.remotePort}`;
    secured.set(key, handOver);
    socket.once('close', () => secured.delete(key));
    tlsServer.emit('connection', socket);
  });

  await new Promise<void>((resolve, reject) => {
    netServer.once('error', reject);
    netServer.listen({ host: options.host, port: options.port }, () => {
      netServer.off('error', reject);
      resolve();
    });
  });
  const bound = netServer.address();
  return {
    port: typeof bound === 'object' && bound !== null ? bound.port : options.port,
    get connections() {
      return open;
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of handshaking) socket.destroy();
        netServer.close(() => resolve());
      }),
  };
}

/**
 * Reads the connection's first bytes: true when they are the HTTP/2 preface. They are put
 * back for grpc-js (Node's HTTP/2 session takes what the socket has buffered first).
 * Rejects when the connection ends or fails first.
 */
function readPreface(stream: net.Socket): Promise<boolean> {
  return new Promise((resolve, reject) => {
    let received = Buffer.alloc(0);
    const cleanup = () => {
      stream.off('data', onData);
      stream.off('close', onClose);
      stream.off('end', onClose);
    };
    const onClose = () => {
      cleanup();
      reject(new Error('closed before the preface'));
    };
    const onData = (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]);
      const compared = Math.min(received.length, PREFACE.length);
      if (!received.subarray(0, compared).equals(PREFACE.subarray(0, compared))) {
        cleanup();
        stream.pause();
        resolve(false);
        return;
      }
      if (received.length < PREFACE.length) return;
      cleanup();
      stream.pause();
      stream.unshift(received);
      resolve(true);
    };
    stream.on('data', onData);
    stream.once('close', onClose);
    stream.once('end', onClose);
  });
}
