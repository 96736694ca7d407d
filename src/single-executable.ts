import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdtemp, open, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';

/**
 * A Node single-executable application (SEA) made from a node binary and a SEA blob, without
 * copying the binary: the executable is the binary's own bytes with three changes, described
 * here as pieces and streamed. That is how the server serves the client at
 * GET /cli/tracker-linux-x64 from the node it runs on (no 95 MB copy in the image or on disk),
 * and how `npm run build:cli` writes the same bytes to a file.
 *
 * What Node looks for (its postject-api.h; what postject does with LIEF, done here with no
 * rewriting): an ELF PT_NOTE segment, loaded in memory, holding a note named NODE_SEA_BLOB
 * whose description is the blob, and the sentinel fuse `NODE_SEA_FUSE_…:0` flipped to `:1`.
 * The changes:
 *  1. the ELF header points at a new program header table (e_phoff, e_phnum + 2);
 *  2. the fuse's last byte becomes '1';
 *  3. appended at the next page boundary: the new program header table (the old entries,
 *     PT_PHDR moved to it, a PT_LOAD mapping the appended page range read-only, and a
 *     PT_NOTE for the note), then the note.
 * The new PT_LOAD's address is the first PT_LOAD's base plus its file offset, so the kernel's
 * AT_PHDR is the table's address whichever way it computes it (e_phoff through the first
 * segment on older kernels, the segment holding e_phoff on newer ones), as glibc requires.
 * ELF64 little-endian (x86-64, aarch64) only: what Node's Linux builds are.
 */

/** Node's SEA sentinel fuse: `:0` in a plain node, `:1` in a single executable. */
export const SEA_FUSE = 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2';
/** The note's name: the resource Node's SEA start-up looks up. */
const RESOURCE = 'NODE_SEA_BLOB';

const PAGE = 4096;
const EHDR_SIZE = 64;
const PHDR_SIZE = 56;
const PT_LOAD = 1;
const PT_NOTE = 4;
const PT_PHDR = 6;
const PF_R = 4;

/** A part of the executable: bytes of its own, or a byte range [start, end) of the node binary. */
export type Piece = { bytes: Buffer } | { start: number; end: number };

export interface SingleExecutable {
  /** The node binary the file ranges are read from. */
  readonly node: string;
  readonly size: number;
  readonly pieces: readonly Piece[];
}

/** Why a node binary cannot be made into a single executable (not ELF64, no fuse, …). */
export class SingleExecutableError extends Error {
  override readonly name = 'SingleExecutableError';
}

interface ProgramHeader {
  type: number;
  flags: number;
  offset: bigint;
  vaddr: bigint;
  paddr: bigint;
  filesz: bigint;
  memsz: bigint;
  align: bigint;
}

function readHeader(table: Buffer, at: number): ProgramHeader {
  return {
    type: table.readUInt32LE(at),
    flags: table.readUInt32LE(at + 4),
    offset: table.readBigUInt64LE(at + 8),
    vaddr: table.readBigUInt64LE(at + 16),
    paddr: table.readBigUInt64LE(at + 24),
    filesz: table.readBigUInt64LE(at + 32),
    memsz: table.readBigUInt64LE(at + 40),
    align: table.readBigUInt64LE(at + 48),
  };
}

function writeHeader(header: ProgramHeader): Buffer {
  const out = Buffer.alloc(PHDR_SIZE);
  out.writeUInt32LE(header.type, 0);
  out.writeUInt32LE(header.flags, 4);
  out.writeBigUInt64LE(header.offset, 8);
  out.writeBigUInt64LE(header.vaddr, 16);
  out.writeBigUInt64LE(header.paddr, 24);
  out.writeBigUInt64LE(header.filesz, 32);
  out.writeBigUInt64LE(header.memsz, 40);
  out.writeBigUInt64LE(header.align, 48);
  return out;
}

const alignUp = (value: bigint, to: bigint): bigint => ((value + to - 1n) / to) * to;

/**
 * Where the fuse's state byte is (the `0` of `…:0`), found by reading the binary in chunks
 * (never all of it in memory). Exactly one unflipped fuse: a binary that is already a single
 * executable, or has no fuse (a node built without SEA support), is refused.
 */
async function findFuse(node: string): Promise<number> {
  const needle = Buffer.from(`${SEA_FUSE}:`);
  const found: Array<{ at: number; state: number }> = [];
  let carry = Buffer.alloc(0);
  let carryStart = 0;
  for await (const chunk of createReadStream(node, { highWaterMark: 1024 * 1024 })) {
    const window = Buffer.concat([carry, chunk as Buffer]);
    for (let at = window.indexOf(needle); at !== -1; at = window.indexOf(needle, at + 1)) {
      const state = window[at + needle.length];
      // A match whose state byte is in the next chunk is found again with it.
      if (state !== undefined) found.push({ at: carryStart + at + needle.length, state });
    }
    const keep = Math.min(window.length, needle.length);
    carryStart += window.length - keep;
    carry = window.subarray(window.length - keep);
  }
  // The chunks overlap by the needle's length only, so no match is found twice.
  const [fuse] = found;
  if (found.length !== 1 || fuse === undefined) {
    throw new SingleExecutableError(
      `${node} has ${found.length} SEA fuses (${SEA_FUSE}); a node with single-executable support has one`,
    );
  }
  if (fuse.state !== 0x30) {
    throw new SingleExecutableError(`${node} is already a single executable (its SEA fuse is set)`);
  }
  return fuse.at;
}

/**
 * The SEA blob of the CommonJS script `main`, made by `node --experimental-sea-config` (a blob
 * is for the node that made it, so the node the executable is made of makes it), in a
 * temporary folder removed after.
 */
export async function makeSeaBlob(node: string, main: string): Promise<Buffer> {
  const dir = await mkdtemp(join(tmpdir(), 'tracker-sea-'));
  try {
    const config = join(dir, 'sea-config.json');
    const output = join(dir, 'sea.blob');
    await writeFile(config, JSON.stringify({ main, output, disableExperimentalSEAWarning: true }));
    await new Promise<void>((resolve, reject) => {
      execFile(node, ['--experimental-sea-config', config], { timeout: 60_000 }, (error, _out, stderr) => {
        if (error)
          reject(
            new SingleExecutableError(`${node} made no SEA blob of ${main}: ${stderr || error.message}`),
          );
        else resolve();
      });
    });
    return await readFile(output);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** The note holding the blob: Elf64_Nhdr (namesz, descsz, type), the name, the blob, 4-aligned. */
function noteOf(blob: Buffer): Buffer {
  const name = Buffer.from(`${RESOURCE}\0`);
  const header = Buffer.alloc(12);
  header.writeUInt32LE(name.length, 0);
  header.writeUInt32LE(blob.length, 4);
  header.writeUInt32LE(0, 8);
  const pad = (length: number) => Buffer.alloc((4 - (length % 4)) % 4);
  return Buffer.concat([header, name, pad(name.length), blob, pad(blob.length)]);
}

/**
 * The single executable made of `node` and `blob` (what `node --experimental-sea-config`
 * wrote: it must be the same node's, as Node's documentation requires), as pieces.
 */
export async function planSingleExecutable(node: string, blob: Buffer): Promise<SingleExecutable> {
  const file = await open(node, 'r');
  let elf: Buffer;
  let table: Buffer;
  let size: number;
  try {
    size = (await file.stat()).size;
    elf = Buffer.alloc(EHDR_SIZE);
    await file.read(elf, 0, EHDR_SIZE, 0);
    if (
      elf.readUInt32BE(0) !== 0x7f454c46 ||
      elf[4] !== 2 ||
      elf[5] !== 1 ||
      elf.readUInt16LE(0x36) !== PHDR_SIZE
    ) {
      throw new SingleExecutableError(`${node} is not a little-endian 64-bit ELF executable`);
    }
    const count = elf.readUInt16LE(0x38);
    table = Buffer.alloc(count * PHDR_SIZE);
    await file.read(table, 0, table.length, Number(elf.readBigUInt64LE(0x20)));
  } finally {
    await file.close();
  }
  const fuse = await findFuse(node);
  const headers = Array.from({ length: table.length / PHDR_SIZE }, (_, index) =>
    readHeader(table, index * PHDR_SIZE),
  );
  const loads = headers.filter((header) => header.type === PT_LOAD);
  const [first] = loads;
  if (first === undefined) throw new SingleExecutableError(`${node} has no loadable segment`);
  const tableOffset = alignUp(BigInt(size), BigInt(PAGE));
  const tableSize = BigInt((headers.length + 2) * PHDR_SIZE);
  const note = noteOf(blob);
  const address = first.vaddr - first.offset + tableOffset;
  let end = 0n;
  for (const segment of loads) if (segment.vaddr + segment.memsz > end) end = segment.vaddr + segment.memsz;
  if (address < alignUp(end, BigInt(PAGE))) {
    throw new SingleExecutableError(`${node}'s segments leave no room after its end for the blob`);
  }
  const span = tableSize + BigInt(note.length);
  const load: ProgramHeader = {
    type: PT_LOAD,
    flags: PF_R,
    offset: tableOffset,
    vaddr: address,
    paddr: address,
    filesz: span,
    memsz: span,
    align: BigInt(PAGE),
  };
  const noteHeader: ProgramHeader = {
    type: PT_NOTE,
    flags: PF_R,
    offset: tableOffset + tableSize,
    vaddr: address + tableSize,
    paddr: address + tableSize,
    filesz: BigInt(note.length),
    memsz: BigInt(note.length),
    align: 4n,
  };
  const lastLoad = headers.findLastIndex((header) => header.type === PT_LOAD);
  const moved = headers.map((header) =>
    header.type === PT_PHDR
      ? {
          ...header,
          offset: tableOffset,
          vaddr: address,
          paddr: address,
          filesz: tableSize,
          memsz: tableSize,
        }
      : header,
  );
  // Loadable segments stay in ascending address order, as the ELF specification requires.
  const entries = [...moved.slice(0, lastLoad + 1), load, ...moved.slice(lastLoad + 1), noteHeader];
  const header = Buffer.from(elf);
  header.writeBigUInt64LE(tableOffset, 0x20);
  header.writeUInt16LE(entries.length, 0x38);
  const appended = Buffer.concat([
    Buffer.alloc(Number(tableOffset) - size),
    ...entries.map(writeHeader),
    note,
  ]);
  const pieces: Piece[] = [
    { bytes: header },
    { start: EHDR_SIZE, end: fuse },
    { bytes: Buffer.from('1') },
    { start: fuse + 1, end: size },
    { bytes: appended },
  ];
  return { node, size: size + appended.length, pieces };
}

/** The executable's bytes, streamed: the binary's ranges are read as they are sent. */
export function streamSingleExecutable(executable: SingleExecutable): Readable {
  async function* bytes() {
    for (const piece of executable.pieces) {
      if ('bytes' in piece) yield piece.bytes;
      else if (piece.end > piece.start) {
        yield* createReadStream(executable.node, { start: piece.start, end: piece.end - 1 });
      }
    }
  }
  return Readable.from(bytes(), { objectMode: false });
}

/** The executable's SHA-256, hex (one read of the binary). */
export async function digestSingleExecutable(executable: SingleExecutable): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of streamSingleExecutable(executable)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** Writes the executable to `path` (mode 0755). */
export async function writeSingleExecutable(executable: SingleExecutable, path: string): Promise<void> {
  await pipeline(streamSingleExecutable(executable), createWriteStream(path, { mode: 0o755 }));
}
