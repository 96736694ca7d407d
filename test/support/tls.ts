/**
 * Throwaway TLS material for tests, made with the `openssl` command-line tool (Debian and
 * Ubuntu: `apt-get install openssl`): a CA, a server certificate it signed for `localhost`,
 * `127.0.0.1` and `::1`, and a client certificate it signed (for mutual TLS). Keys are
 * ECDSA P-256 (fast to make), unencrypted, unless the server's is asked to be RSA (2048 bits:
 * the `ECDHE-RSA-…` and static-RSA suites need one); certificates are valid for two days.
 *
 * Standalone (Node's standard library and openssl only), for any test that needs TLS:
 *
 * ```ts
 * const tls = makeTlsFiles();
 * try {
 *   // server: --tls-cert tls.serverCert --tls-key tls.serverKey [--tls-ca tls.ca]
 *   // client: trust tls.ca; present tls.clientCert + tls.clientKey for mutual TLS
 * } finally {
 *   tls.remove();
 * }
 * ```
 */
import { execFileSync } from 'node:child_process';
import { randomInt } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface TlsFiles {
  /** The folder holding every file below. */
  readonly dir: string;
  /** `ca.pem`: the CA certificate; trust it on the client (and pass it as `--tls-ca` for mutual TLS). */
  readonly ca: string;
  /** `ca-key.pem`: the CA's private key, to sign more certificates with `openssl x509 -req`. */
  readonly caKey: string;
  /** `server.pem`: for `localhost`, `127.0.0.1` and `::1`; serverAuth. */
  readonly serverCert: string;
  /** `server-key.pem`: the server certificate's key. */
  readonly serverKey: string;
  /** `client.pem`: CN `tracker-test-client`; clientAuth. */
  readonly clientCert: string;
  /** `client-key.pem`: the client certificate's key. */
  readonly clientKey: string;
  /** Deletes the folder (when `makeTlsFiles` made it). */
  remove(): void;
}

/** openssl's version line, or null when the command is not installed. */
export function opensslVersion(): string | null {
  try {
    return execFileSync('openssl', ['version'], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    }).trim();
  } catch {
    return null;
  }
}

/**
 * Writes ca.pem, ca-key.pem, server.pem, server-key.pem, client.pem and client-key.pem into
 * `dir` (default: a new temporary folder) and returns their paths. Synchronous; takes a
 * fraction of a second. Throws, saying what to install, when `openssl` is missing.
 */
export function makeTlsFiles(dir?: string, options: { serverKey?: 'ec' | 'rsa' } = {}): TlsFiles {
  if (opensslVersion() === null) {
    throw new Error(
      'the openssl command is needed to make test certificates (Debian: apt-get install openssl)',
    );
  }
  const folder = dir ?? mkdtempSync(join(tmpdir(), 'tracker-tls-'));
  const path = (name: string) => join(folder, name);
  const openssl = (...args: string[]) =>
    execFileSync('openssl', args, { cwd: folder, stdio: ['ignore', 'pipe', 'pipe'] });
  const newKey = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

  // The CA: self-signed, allowed to sign certificates.
  writeFileSync(
    path('ca.ext'),
    [
      'basicConstraints = critical, CA:TRUE',
      'keyUsage = critical, keyCertSign, cRLSign',
      'subjectKeyIdentifier = hash',
      '',
    ].join('\n'),
  );
  openssl(
    'req',
    '-new',
    ...newKey,
    '-subj',
    '/CN=Tracker test CA',
    '-keyout',
    path('ca-key.pem'),
    '-out',
    path('ca.csr'),
  );
  // (a request first, then signed by its own key: `req -x509 -addext` needs OpenSSL 1.1.1+,
  // `x509 -req -extfile` works everywhere.)
  openssl(
    'x509',
    '-req',
    '-in',
    path('ca.csr'),
    '-signkey',
    path('ca-key.pem'),
    '-days',
    '2',
    '-extfile',
    path('ca.ext'),
    '-out',
    path('ca.pem'),
  );

  const issue = (name: string, subject: string, extensions: string[], serial: string, key = newKey) => {
    writeFileSync(path(`${name}.ext`), `${extensions.join('\n')}\n`);
    openssl(
      'req',
      '-new',
      ...key,
      '-subj',
      subject,
      '-keyout',
      path(`${name}-key.pem`),
      '-out',
      path(`${name}.csr`),
    );
    openssl(
      'x509',
      '-req',
      '-in',
      path(`${name}.csr`),
      '-CA',
      path('ca.pem'),
      '-CAkey',
      path('ca-key.pem'),
      '-set_serial',
      serial,
      '-days',
      '2',
      '-extfile',
      path(`${name}.ext`),
      '-out',
      path(`${name}.pem`),
    );
  };
  const leaf = ['basicConstraints = critical, CA:FALSE', 'keyUsage = critical, digitalSignature'];
  // An RSA certificate may also be used for RSA key exchange, as such certificates usually are.
  const serverUsage =
    options.serverKey === 'rsa'
      ? ['basicConstraints = critical, CA:FALSE', 'keyUsage = critical, digitalSignature, keyEncipherment']
      : leaf;
  issue(
    'server',
    '/CN=localhost',
    [...serverUsage, 'extendedKeyUsage = serverAuth', 'subjectAltName = DNS:localhost, IP:127.0.0.1, IP:::1'],
    '2',
    options.serverKey === 'rsa' ? ['-newkey', 'rsa:2048', '-nodes'] : newKey,
  );
  issue('client', '/CN=tracker-test-client', [...leaf, 'extendedKeyUsage = clientAuth'], '3');

  return {
    dir: folder,
    ca: path('ca.pem'),
    caKey: path('ca-key.pem'),
    serverCert: path('server.pem'),
    serverKey: path('server-key.pem'),
    clientCert: path('client.pem'),
    clientKey: path('client-key.pem'),
    remove: () => {
      if (dir === undefined) rmSync(folder, { recursive: true, force: true });
    },
  };
}

/**
 * Another client certificate signed by the CA of `files`, with this subject (openssl's
 * `/CN=…/O=…` form), written as `name.pem` and `name-key.pem` in its folder.
 */
export function issueClientCertificate(
  files: TlsFiles,
  name: string,
  subject: string,
): { readonly cert: string; readonly key: string } {
  const path = (file: string) => join(files.dir, file);
  const openssl = (...args: string[]) =>
    execFileSync('openssl', args, { cwd: files.dir, stdio: ['ignore', 'pipe', 'pipe'] });
  writeFileSync(
    path(`${name}.ext`),
    'basicConstraints = critical, CA:FALSE\nkeyUsage = critical, digitalSignature\nextendedKeyUsage = clientAuth\n',
  );
  openssl(
    'req',
    '-new',
    ...['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'],
    ...['-subj', subject, '-keyout', path(`${name}-key.pem`), '-out', path(`${name}.csr`)],
  );
  openssl(
    'x509',
    '-req',
    ...['-in', path(`${name}.csr`), '-CA', files.ca, '-CAkey', files.caKey],
    ...['-set_serial', String(randomInt(10, 1_000_000_000))],
    ...['-days', '2', '-extfile', path(`${name}.ext`), '-out', path(`${name}.pem`)],
  );
  return { cert: path(`${name}.pem`), key: path(`${name}-key.pem`) };
}
