// Generates the TypeScript types of the gRPC messages and services from the .proto files
// (@grpc/proto-loader's proto-loader-gen-types) into src/grpc/generated/. They are not
// committed: every build makes them again, so they can never drift from the .proto. The
// options are those the server loads the .proto with (src/grpc/server.ts): longs and enums
// as strings, defaults filled in.
import { execFileSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const out = join(root, 'src/grpc/generated');

rmSync(out, { recursive: true, force: true });
execFileSync(
  join(root, 'node_modules/.bin/proto-loader-gen-types'),
  [
    '--longs=String',
    '--enums=String',
    '--defaults',
    '--includeComments',
    '--grpcLib=@grpc/grpc-js',
    '--importFileExtension=.js',
    `--outDir=${out}`,
    'proto/tracker/lock/v1alpha1/lock.proto',
    'proto/grpc/health/v1/health.proto',
  ],
  { cwd: root, stdio: ['ignore', 'ignore', 'inherit'] },
);
