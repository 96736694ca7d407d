import { X509Certificate } from 'node:crypto';
import type { Socket } from 'node:net';
import { TLSSocket } from 'node:tls';

/**
 * Client certificates as identities (mutual TLS): a tokens-file entry may name the subject of
 * a client certificate, `certificateSubject: "CN=ci-runner,O=Example"`. A request that carries
 * no Authorization header but a client certificate the TLS layer verified (signed by
 * --tls-ca) acts as the entry whose subject equals the certificate's.
 *
 * Subjects are compared as sets of attributes: the same attribute names (case-insensitive)
 * with exactly the same values, in any order, none missing and none extra (a certificate
 * `CN=ci-runner,O=Evil` is not `CN=ci-runner`). In the file, attributes are separated by
 * commas; a comma, plus sign, backslash or equals sign inside a value is written with a
 * backslash before it. Values with other special characters (which Node shows quoted) do not
 * match anything.
 */

/** The canonical form of a subject: its `NAME=value` attributes, sorted, one per line. */
function canonical(attributes: readonly (readonly [string, string])[]): string | null {
  if (attributes.length === 0) return null;
  const lines = attributes.map(([name, value]) => `${name.toUpperCase()}=${value}`);
  return lines.sort().join('\n');
}

/**
 * A subject as written in the tokens file (`CN=ci-runner,O=Example`), canonical; null when it
 * is not one (no attribute, an attribute without a name or a value).
 */
export function parseSubject(text: string): string | null {
  const attributes: [string, string][] = [];
  let current = '';
  const parts: string[] = [];
  for (let i = 0; i < text.length; i++) {
    const char = text[i];
    if (char === '\\' && i + 1 < text.length) {
      // Kept escaped until split, so that an escaped comma or equals sign stays in its value.
      current += `\\${text[++i]}`;
    } else if (char === ',') {
      parts.push(current);
      current = '';
    } else current += char;
  }
  parts.push(current);
  for (const part of parts) {
    const equals = part.search(/(?<!\\)=/);
    if (equals <= 0) return null;
    const name = part.slice(0, equals).trim();
    const value = part
      .slice(equals + 1)
      .trim()
      .replace(/\\(.)/g, '$1');
    if (!/^[A-Za-z][A-Za-z0-9.-]*$/.test(name) || value === '') return null;
    attributes.push([name, value]);
  }
  return canonical(attributes);
}

/** Node's form of a certificate's subject (X509Certificate.subject: `NAME=value` lines), canonical. */
export function canonicalPeerSubject(subject: string): string | null {
  const attributes: [string, string][] = [];
  for (const line of subject.split('\n')) {
    if (line === '') continue;
    const equals = line.indexOf('=');
    if (equals <= 0) return null;
    attributes.push([line.slice(0, equals), line.slice(equals + 1)]);
  }
  return canonical(attributes);
}

/** The subject of a DER certificate, as Node shows it; undefined when there is none. */
export function subjectOfCertificate(raw: Buffer | undefined): string | undefined {
  if (!raw || raw.length === 0) return undefined;
  try {
    return new X509Certificate(raw).subject;
  } catch {
    return undefined;
  }
}

/**
 * The subject of the client certificate a TLS socket verified (mutual TLS); undefined over
 * plaintext, without a client certificate, or when it was not verified.
 */
export function verifiedPeerSubject(socket: Socket | undefined): string | undefined {
  if (!(socket instanceof TLSSocket) || !socket.authorized) return undefined;
  return socket.getPeerX509Certificate()?.subject;
}
