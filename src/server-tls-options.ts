import type { SecureContextOptions } from 'node:tls';

/**
 * The TLS 1.2 cipher suites both ports offer: forward secrecy (ECDHE) with an AEAD cipher
 * (AES-GCM, ChaCha20-Poly1305), for ECDSA and RSA certificates alike. Node's default list
 * ends in OpenSSL's `HIGH`, which still offers static-RSA key exchange (`AES128-SHA`, no
 * forward secrecy) and CBC suites; none of them is here. TLS 1.3's suites (all forward-secret
 * AEADs) are named too: a list without any would turn TLS 1.3 off.
 */
const CIPHERS = [
  'TLS_AES_128_GCM_SHA256',
  'TLS_AES_256_GCM_SHA384',
  'TLS_CHACHA20_POLY1305_SHA256',
  'ECDHE-ECDSA-AES128-GCM-SHA256',
  'ECDHE-RSA-AES128-GCM-SHA256',
  'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-CHACHA20-POLY1305',
  'ECDHE-RSA-CHACHA20-POLY1305',
].join(':');

/**
 * What REST's HTTPS server and the gRPC server over TLS are built with: TLS 1.2 at least, the
 * suites above only, chosen in the server's order of preference.
 */
export const serverTlsOptions = {
  minVersion: 'TLSv1.2',
  ciphers: CIPHERS,
  honorCipherOrder: true,
} as const satisfies SecureContextOptions;
