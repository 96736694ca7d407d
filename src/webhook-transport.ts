import { createHmac } from 'node:crypto';
import { lookup } from 'node:dns/promises';
import { BlockList, isIP } from 'node:net';
import { DELIVERY_TIMEOUT_MS, type Send, type Sign } from './core/webhooks.js';

/** `sha256=<hex>`: the HMAC-SHA256 of the raw body with the secret (GitHub's scheme). */
export const signWebhook: Sign = (secret, body) =>
  `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`;

/**
 * Addresses a webhook may not be delivered to unless --webhooks-allow-private: loopback,
 * link-local (which holds the clouds' metadata service, 169.254.169.254), the unspecified
 * address, multicast and broadcast, and the metadata addresses outside link-local (AWS's
 * IPv6 one, Alibaba's). Private networks (10/8, 172.16/12, 192.168/16, fc00::/7 but the
 * metadata address) stay allowed: receivers often live there.
 */
const REFUSED = new BlockList();
REFUSED.addSubnet('127.0.0.0', 8, 'ipv4');
REFUSED.addSubnet('169.254.0.0', 16, 'ipv4');
REFUSED.addSubnet('0.0.0.0', 8, 'ipv4');
REFUSED.addSubnet('224.0.0.0', 4, 'ipv4');
REFUSED.addAddress('255.255.255.255', 'ipv4');
REFUSED.addAddress('100.100.100.200', 'ipv4');
REFUSED.addAddress('::1', 'ipv6');
REFUSED.addAddress('::', 'ipv6');
REFUSED.addSubnet('fe80::', 10, 'ipv6');
REFUSED.addSubnet('ff00::', 8, 'ipv6');
REFUSED.addAddress('fd00:ec2::254', 'ipv6');

/** Whether delivering to this address is refused (an IPv4-mapped IPv6 address as its IPv4). */
export function refusedAddress(address: string): boolean {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address)?.[1];
  if (mapped) return REFUSED.check(mapped, 'ipv4');
  const family = isIP(address);
  if (family === 0) return true;
  return REFUSED.check(address, family === 4 ? 'ipv4' : 'ipv6');
}

/**
 * The URL check of webhooks: null when it may be delivered to, else why not. Every address
 * the host resolves to is checked (a name with one refused address is refused), at PUT and
 * again before each delivery, so a name that comes to resolve elsewhere is caught too.
 */
export function urlChecker(allowPrivate: boolean): (url: string) => Promise<string | null> {
  return async (url) => {
    if (allowPrivate) return null;
    const host = new URL(url).hostname.replace(/^\[(.*)\]$/, '$1');
    let addresses: string[];
    try {
      addresses = isIP(host)
        ? [host]
        : (await lookup(host, { all: true, verbatim: true })).map((entry) => entry.address);
    } catch (error) {
      return `${host} does not resolve (${(error as { code?: string }).code ?? 'DNS error'})`;
    }
    const refused = addresses.find(refusedAddress);
    return refused === undefined
      ? null
      : `${host} resolves to ${refused}, a loopback, link-local or metadata address (allowed only with --webhooks-allow-private)`;
  };
}

/**
 * One POST with fetch: no redirect is followed (a 3xx is an answer, and a failure: a redirect
 * could lead anywhere), at most DELIVERY_TIMEOUT_MS, the response body read and dropped.
 */
export const sendWebhook: Send = async (url, headers, body) => {
  try {
    const response = await fetch(url, {
      method: 'POST',
      headers,
      body,
      redirect: 'manual',
      signal: AbortSignal.timeout(DELIVERY_TIMEOUT_MS),
    });
    await response.arrayBuffer().catch(() => undefined);
    return { status: response.status };
  } catch (error) {
    const cause = (error as { cause?: { code?: string; message?: string } }).cause;
    const name = (error as Error).name;
    if (name === 'TimeoutError') return { error: `no answer within ${DELIVERY_TIMEOUT_MS / 1000} s` };
    return { error: cause?.code ?? cause?.message ?? (error as Error).message };
  }
};
