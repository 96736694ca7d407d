import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import https from 'node:https';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import tls from 'node:tls';
import { credentials, Metadata, makeClientConstructor, type ServiceError } from '@grpc/grpc-js';
import { loadSync, type ServiceDefinition } from '@grpc/proto-loader';
import { addToken, revokeToken } from '../src/auth/token-file.js';
import { PROTO_FILE, SERVICE } from './support/grpc-client.js';
import {
  FREE_ARGS,
  ROOT,
  runServerToExit,
  runToExit,
  type ServerProcess,
  startServerProcess,
  tempDir,
} from './support/server-process.js';
import { issueClientCertificate, makeTlsFiles, type TlsFiles } from './support/tls.js';
import { waitFor } from './support/wait-for.js';

const LockService = makeClientConstructor(
  loadSync(PROTO_FILE, { keepCase: false, defaults: true, longs: String })[SERVICE] as ServiceDefinition,
  'LockService',
);

interface HttpsAnswer {
  status: number;
  json: Record<string, unknown>;
  /** The server certificate's subject alternative names, as the client saw them. */
  peer: string;
}

/** One HTTPS request trusting only `ca`; with `cert` and `key`, it presents that certificate. */
function httpsRequest(
  url: string,
  method: string,
  body: unknown,
  tls: { ca: Buffer; cert?: Buffer; key?: Buffer },
  headers: Record<string, string> = {},
): Promise<HttpsAnswer> {
  return new Promise((resolve, reject) => {
    const text = body === undefined ? undefined : JSON.stringify(body);
    const request = https.request(
      url,
      {
        method,
        ca: tls.ca,
        cert: tls.cert,
        key: tls.key,
        agent: false,
        timeout: 10_000,
        headers: { ...(text ? { 'content-type': 'application/json' } : {}), ...headers },
      },
      (response) => {
        let data = '';
        response.setEncoding('utf8');
        response.on('data', (chunk: string) => {
          data += chunk;
        });
        response.on('end', () => {
          const socket = response.socket as import('node:tls').TLSSocket;
          resolve({
            status: response.statusCode ?? 0,
            json: data === '' ? {} : JSON.parse(data),
            peer: String(socket.getPeerCertificate?.().subjectaltname ?? ''),
          });
        });
      },
    );
    request.on('timeout', () => request.destroy(new Error('timed out')));
    request.on('error', reject);
    request.end(text);
  });
}

function grpcCreate(
  address: string,
  creds: ReturnType<typeof credentials.createSsl>,
  service: string,
  metadata = new Metadata(),
): Promise<{ response?: Record<string, unknown>; error?: ServiceError }> {
  const client = new LockService(address, creds, { 'grpc.ssl_target_name_override': 'localhost' });
  const create = client.CreateLock as (
    request: object,
    metadata: Metadata,
    options: object,
    callback: (error: ServiceError | null, response?: Record<string, unknown>) => void,
  ) => void;
  return new Promise((resolve) => {
    create.call(
      client,
      { service, who: 'tls' },
      metadata,
      { deadline: Date.now() + 5000 },
      (error, response) => {
        client.close();
        resolve(error ? { error } : { response: response ?? {} });
      },
    );
  });
}

// One CA and its certificates for the whole file.
let files: TlsFiles;
before(() => {
  files = makeTlsFiles();
});
after(() => {
  files?.remove();
});

describe('TLS: HTTPS and gRPC over TLS with a generated CA', () => {
  let server: ServerProcess;
  let ca: Buffer;

  before(async () => {
    ca = readFileSync(files.ca);
    server = await startServerProcess({
      args: [...FREE_ARGS, ...['--tls-cert', files.serverCert, '--tls-key', files.serverKey]],
    });
  });
  after(async () => {
    await server?.stop();
  });

  test('REST round trip over HTTPS, trusting the CA; the plaintext port answers no HTTP', async () => {
    const base = `https://127.0.0.1:${server.httpPort}`;
    const created = await httpsRequest(
      `${base}/api/v1alpha1/lock`,
      'POST',
      { service: 'tls', who: 'me' },
      { ca },
    );
    assert.equal(created.status, 201);
    assert.match(created.peer, /IP Address:127\.0\.0\.1/);
    const released = await httpsRequest(`${base}/api/v1alpha1/lock/${created.json.id}`, 'DELETE', undefined, {
      ca,
    });
    assert.deepEqual(released.json, { success: true, message: 'Lock released successfully' });
    await assert.rejects(
      httpsRequest(`${base}/healthz`, 'GET', undefined, { ca: readFileSync(files.serverCert) }),
      /self[- ]signed|unable to verify|unable to get issuer/i,
      'a client that does not trust the CA refuses the server',
    );
    await assert.rejects(fetch(`http://127.0.0.1:${server.httpPort}/healthz`), 'no plaintext HTTP');
    assert.ok(
      server.lines.some((line) => line.includes('"tls":true')),
      'the start line says TLS is on',
    );
  });

  test('gRPC over TLS: a client trusting the CA is served; a plaintext one is not', async () => {
    const secure = await grpcCreate(server.grpcAddress, credentials.createSsl(ca), 'tls-grpc');
    assert.equal(secure.response?.service, 'tls-grpc');
    const plain = await grpcCreate(server.grpcAddress, credentials.createInsecure(), 'tls-plain');
    assert.equal(plain.error?.code, 14, 'UNAVAILABLE: no TLS, no call');
  });
});

describe('mutual TLS: --tls-ca requires a client certificate it signed', () => {
  let server: ServerProcess;

  before(async () => {
    server = await startServerProcess({
      args: [
        ...FREE_ARGS,
        ...['--tls-cert', files.serverCert, '--tls-key', files.serverKey, '--tls-ca', files.ca],
      ],
    });
  });
  after(async () => {
    await server?.stop();
  });

  test('REST and gRPC: with the client certificate served, without it refused', async () => {
    const ca = readFileSync(files.ca);
    const cert = readFileSync(files.clientCert);
    const key = readFileSync(files.clientKey);
    const url = `https://127.0.0.1:${server.httpPort}/api/v1alpha1/locks/list`;
    assert.equal((await httpsRequest(url, 'GET', undefined, { ca, cert, key })).status, 200);
    await assert.rejects(
      httpsRequest(url, 'GET', undefined, { ca }),
      'no client certificate: handshake refused',
    );

    const withCert = await grpcCreate(server.grpcAddress, credentials.createSsl(ca, key, cert), 'mtls');
    assert.equal(withCert.response?.service, 'mtls');
    const withoutCert = await grpcCreate(server.grpcAddress, credentials.createSsl(ca), 'mtls-none');
    assert.equal(withoutCert.error?.code, 14);
  });
});

describe('TLS suites: with TLS 1.2, only forward-secret AEAD ciphers (an RSA certificate)', () => {
  let rsa: TlsFiles;
  let server: ServerProcess;
  let ca: Buffer;

  before(async () => {
    rsa = makeTlsFiles(undefined, { serverKey: 'rsa' });
    ca = readFileSync(rsa.ca);
    server = await startServerProcess({
      args: [...FREE_ARGS, ...['--tls-cert', rsa.serverCert, '--tls-key', rsa.serverKey]],
    });
  });
  after(async () => {
    await server?.stop();
    rsa?.remove();
  });

  /** A bare TLS handshake with the given client settings: the suite and version agreed, or the error. */
  const handshake = (port: number, options: tls.ConnectionOptions) =>
    new Promise<{ cipher?: string; version?: string; error?: string }>((resolve) => {
      const socket = tls.connect({ host: '127.0.0.1', port, servername: 'localhost', ca, ...options });
      socket.setTimeout(10_000, () => socket.destroy(new Error('handshake timed out')));
      socket.once('secureConnect', () => {
        resolve({ cipher: socket.getCipher().name, version: socket.getProtocol() ?? '' });
        socket.destroy();
      });
      socket.once('error', (error: Error & { code?: string }) =>
        resolve({ error: error.code ?? error.message }),
      );
    });

  const ports = () =>
    [
      ['REST', server.httpPort, {}],
      ['gRPC', Number(server.grpcAddress.split(':').at(-1)), { ALPNProtocols: ['h2'] }],
    ] as const;

  test('a TLS 1.2 client offering only static-RSA or CBC suites (AES128-SHA...) is refused on both ports', async () => {
    for (const [name, port, alpn] of ports()) {
      for (const ciphers of [
        'AES128-SHA',
        'AES256-GCM-SHA384',
        'ECDHE-RSA-AES128-SHA',
        'ECDHE-RSA-AES256-SHA384',
      ]) {
        const result = await handshake(port, { ...alpn, ciphers, maxVersion: 'TLSv1.2' });
        assert.ok(result.error, `${name} with ${ciphers}: agreed on ${result.cipher}`);
      }
      const old = await handshake(port, {
        ...alpn,
        minVersion: 'TLSv1',
        maxVersion: 'TLSv1.1',
        ciphers: 'DEFAULT@SECLEVEL=0',
      });
      assert.ok(old.error, `${name}: TLS 1.1 agreed (${old.version})`);
    }
  });

  test('ECDHE with AES-GCM or ChaCha20-Poly1305 over TLS 1.2, and TLS 1.3, are served on both ports', async () => {
    for (const [name, port, alpn] of ports()) {
      for (const ciphers of [
        'ECDHE-RSA-AES128-GCM-SHA256',
        'ECDHE-RSA-AES256-GCM-SHA384',
        'ECDHE-RSA-CHACHA20-POLY1305',
      ]) {
        const result = await handshake(port, { ...alpn, ciphers, maxVersion: 'TLSv1.2' });
        assert.equal(result.error, undefined, `${name} with ${ciphers}`);
        assert.equal(result.version, 'TLSv1.2', name);
        assert.equal(result.cipher, ciphers, name);
      }
      const modern = await handshake(port, alpn);
      assert.equal(modern.version, 'TLSv1.3', `${name}: ${modern.error}`);
    }
    const secure = await grpcCreate(server.grpcAddress, credentials.createSsl(ca), 'tls-rsa');
    assert.equal(secure.response?.service, 'tls-rsa');
  });
});

describe("mutual TLS with a tokens file: a client certificate's subject acts as an entry", () => {
  const dir = tempDir();
  const file = join(dir.path, 'tokens.yaml');
  const CLI = join(ROOT, 'dist/src/cli/main.js');
  const admin = addToken(file, { name: 'admin', scopes: ['lock:admin'] });
  let server: ServerProcess;
  let ca: Buffer;
  let runner: { cert: Buffer; key: Buffer };
  let evil: { cert: Buffer; key: Buffer };
  let unknown: { cert: Buffer; key: Buffer };
  const read = (paths: { cert: string; key: string }) => ({
    cert: readFileSync(paths.cert),
    key: readFileSync(paths.key),
  });
  const rest = (
    method: string,
    path: string,
    client: { cert: Buffer; key: Buffer },
    body?: unknown,
    headers = {},
  ) =>
    httpsRequest(
      `https://127.0.0.1:${server.httpPort}/api/v1alpha1${path}`,
      method,
      body,
      { ca, ...client },
      headers,
    );

  before(async () => {
    ca = readFileSync(files.ca);
    runner = read(issueClientCertificate(files, 'runner', '/CN=ci-runner/O=Example'));
    evil = read(issueClientCertificate(files, 'evil', '/CN=ci-runner/O=Evil'));
    unknown = { cert: readFileSync(files.clientCert), key: readFileSync(files.clientKey) };
    // Made with the CLI: attributes in another order than the certificate's.
    const created = await runToExit(process.execPath, [
      CLI,
      ...['token', 'create', '--name', 'ci-runner', '--scopes', 'lock:write', '--services', 'deploy-*'],
      ...['--certificate-subject', 'O=Example, CN=ci-runner', '--file', file],
    ]);
    assert.equal(created.code, 0, created.stderr);
    assert.equal(created.stdout, '', 'no token is made');
    assert.match(created.stderr, /a client certificate with the subject O=Example, CN=ci-runner acts as it/);
    server = await startServerProcess({
      args: [
        ...FREE_ARGS,
        ...['--tls-cert', files.serverCert, '--tls-key', files.serverKey, '--tls-ca', files.ca],
        ...['--auth-tokens-file', file],
      ],
    });
  });
  after(async () => {
    await server?.stop();
    dir.remove();
  });

  test('tracker token list shows the certificate identity, never a hash', async () => {
    const listed = await runToExit(process.execPath, [CLI, 'token', 'list', '--file', file]);
    assert.equal(listed.code, 0, listed.stderr);
    const [header, ...rows] = listed.stdout.trimEnd().split('\n');
    assert.match(header ?? '', /^NAME +SCOPES +SERVICES +CREATED +CERTIFICATE$/);
    assert.match(rows[0] ?? '', /^admin +lock:admin +\(all\) +\S+ \S+ +-$/);
    assert.match(rows[1] ?? '', /^ci-runner +lock:write +deploy-\* +\S+ \S+ +O=Example, CN=ci-runner$/);
    const json = await runToExit(process.execPath, [CLI, 'token', 'list', '--file', file, '--json']);
    const entries = JSON.parse(json.stdout) as { name: string; certificateSubject: string | null }[];
    assert.deepEqual(
      entries.map((entry) => [entry.name, entry.certificateSubject]),
      [
        ['admin', null],
        ['ci-runner', 'O=Example, CN=ci-runner'],
      ],
    );
    assert.doesNotMatch(listed.stdout + json.stdout, /sha256|trk_/);
  });

  test('REST: without Authorization the certificate acts as its entry (its scopes, its services, its locks)', async () => {
    const taken = await rest('POST', '/lock', runner, { service: 'deploy-web', who: 'job' });
    assert.equal(taken.status, 201, JSON.stringify(taken.json));
    assert.equal(taken.json.owner, 'ci-runner');
    const outside = await rest('POST', '/lock', runner, { service: 'billing', who: 'job' });
    assert.deepEqual([outside.status, outside.json.code], [403, 'PERMISSION_DENIED'], 'its service patterns');
    const forced = await rest('POST', `/lock/${taken.json.id}/force-release`, runner);
    assert.equal(forced.status, 403, 'its scopes');
    assert.equal((await rest('DELETE', `/lock/${taken.json.id}`, runner)).status, 200, 'its own lock');
    for (const [client, what] of [
      [unknown, 'a certificate no entry names'],
      [evil, 'the same CN with another O'],
    ] as const) {
      const refused = await rest('GET', '/locks/list', client);
      assert.deepEqual([refused.status, refused.json.code], [401, 'UNAUTHENTICATED'], what);
    }
  });

  test('REST: an Authorization header wins over the certificate, even a wrong one', async () => {
    const asAdmin = await rest(
      'POST',
      '/lock',
      runner,
      { service: 'billing', who: 'job' },
      { authorization: `Bearer ${admin}` },
    );
    assert.equal(asAdmin.status, 201);
    assert.equal(asAdmin.json.owner, 'admin');
    const wrong = await rest('GET', '/locks/list', runner, undefined, { authorization: 'Bearer trk_wrong' });
    assert.equal(wrong.status, 401, 'no fallback to the certificate');
  });

  test("gRPC: the same, through the TLS connection's verified certificate", async () => {
    const withRunner = await grpcCreate(
      server.grpcAddress,
      credentials.createSsl(ca, runner.key, runner.cert),
      'deploy-grpc',
    );
    assert.equal(withRunner.response?.owner, 'ci-runner', withRunner.error?.details);
    const withUnknown = await grpcCreate(
      server.grpcAddress,
      credentials.createSsl(ca, unknown.key, unknown.cert),
      'deploy-x',
    );
    assert.equal(withUnknown.error?.code, 16, 'UNAUTHENTICATED');
    const metadata = new Metadata();
    metadata.set('authorization', `Bearer ${admin}`);
    const withToken = await grpcCreate(
      server.grpcAddress,
      credentials.createSsl(ca, runner.key, runner.cert),
      'billing-grpc',
      metadata,
    );
    assert.equal(withToken.response?.owner, 'admin');
  });

  test('revoked, the certificate acts as nothing', async () => {
    const reloads = () => server.lines.filter((line) => line.includes('"tokens reloaded"')).length;
    const seen = reloads();
    assert.equal(revokeToken(file, 'ci-runner'), true);
    server.child.kill('SIGHUP');
    await waitFor(() => reloads() > seen, { what: 'the reload' });
    assert.equal((await rest('GET', '/locks/list', runner)).status, 401);
  });
});

describe('TLS configuration errors', () => {
  test('an unreadable certificate stops the start with one line and exit 1', async () => {
    const run = await runServerToExit([
      ...FREE_ARGS,
      ...['--tls-cert', '/nonexistent/cert.pem', '--tls-key', '/nonexistent/key.pem'],
    ]);
    assert.equal(run.code, 1);
    assert.match(
      run.stderr,
      /^tracker: cannot read the TLS certificate \/nonexistent\/cert\.pem \(ENOENT\)\n$/,
    );
  });
});
