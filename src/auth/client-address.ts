import { BlockList, isIP } from 'node:net';

/**
 * Which proxies in front of Tracker are trusted to say who the client is (`--trust-proxy`):
 * - `{ hops: n }`: the n nearest hops are proxies (the socket's peer, then X-Forwarded-For
 *   entries from the right);
 * - `{ addresses }`: hops whose address is one of these (IP addresses, CIDR ranges, or
 *   `loopback`) are proxies, wherever they are in the chain.
 */
export type TrustProxy = { readonly hops: number } | { readonly addresses: readonly string[] };

/** Whether the hop at `hop` (0: the socket's peer) with this address is a trusted proxy. */
export type ProxyTrust = (address: string, hop: number) => boolean;

/** `::ffff:127.0.0.1` → `127.0.0.1`; other addresses unchanged (a zone id dropped). */
function unmapped(address: string): string {
  const bare = address.replace(/%.*$/, '');
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(bare);
  return mapped?.[1] ?? bare;
}

/** The trust test of a --trust-proxy setting, in the shape Fastify's `trustProxy` takes. */
export function proxyTrust(trust: TrustProxy): ProxyTrust {
  if ('hops' in trust) {
    const { hops } = trust;
    return (_address, hop) => hop < hops;
  }
  const list = new BlockList();
  for (const entry of trust.addresses) {
    if (entry === 'loopback') {
      list.addSubnet('127.0.0.0', 8, 'ipv4');
      list.addAddress('::1', 'ipv6');
      continue;
    }
    const [address = '', prefix] = entry.split('/');
    const type = isIP(address) === 4 ? 'ipv4' : 'ipv6';
    if (prefix === undefined) list.addAddress(address, type);
    else list.addSubnet(address, Number(prefix), type);
  }
  return (address) => {
    const bare = unmapped(address);
    const version = isIP(bare);
    return version !== 0 && list.check(bare, version === 4 ? 'ipv4' : 'ipv6');
  };
}

/** Why a --trust-proxy entry is not an address or range; null when it is one. */
export function trustEntryProblem(entry: string): string | null {
  if (entry === 'loopback') return null;
  const [address = '', prefix, extra] = entry.split('/');
  const version = isIP(address);
  if (version === 0 || extra !== undefined) return `"${entry}" is not an IP address or CIDR range`;
  if (prefix === undefined) return null;
  const bits = /^\d{1,3}$/.test(prefix) ? Number(prefix) : Number.NaN;
  return bits >= 0 && bits <= (version === 4 ? 32 : 128) ? null : `"${entry}" has a bad prefix length`;
}

/**
 * The client's address: the socket's peer, or, behind trusted proxies, the rightmost address
 * in X-Forwarded-For that is not a trusted proxy. The chain is walked from the peer leftwards
 * (peer, then X-Forwarded-For from its last entry to its first); the first hop that is not
 * trusted is the client; when every hop is trusted, the leftmost is. The same rule as
 * Fastify's `trustProxy` (proxy-addr), which REST uses with the same trust test.
 */
export function clientAddress(
  peer: string,
  forwardedFor: string | undefined,
  trusts: ProxyTrust | undefined,
): string {
  if (!trusts || !forwardedFor) return peer;
  const chain = [
    peer,
    ...forwardedFor
      .split(',')
      .map((hop) => hop.trim())
      .filter((hop) => hop !== '')
      .reverse(),
  ];
  for (let hop = 0; hop < chain.length - 1; hop++) {
    if (!trusts(chain[hop] ?? '', hop)) return chain[hop] ?? peer;
  }
  return chain.at(-1) ?? peer;
}

/**
 * The key authentication failures are counted under: the address, or for IPv6 its /64
 * network (one host usually holds a whole /64 and could otherwise change address at will).
 */
export function failureKey(address: string): string {
  const bare = unmapped(address);
  if (isIP(bare) !== 6) return bare;
  const [head = '', tail] = bare.toLowerCase().split('::');
  const groups = (part: string | undefined) =>
    part ? part.split(':').flatMap((group) => (group.includes('.') ? ['0', '0'] : [group])) : [];
  const left = groups(head);
  const right = tail === undefined ? [] : groups(tail);
  const full =
    tail === undefined
      ? left
      : [...left, ...Array<string>(8 - left.length - right.length).fill('0'), ...right];
  return `${full
    .slice(0, 4)
    .map((group) => group.replace(/^0+(?=.)/, ''))
    .join(':')}::/64`;
}
