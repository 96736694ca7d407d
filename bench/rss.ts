// `npm run bench -- --only rss [--rss-minutes 10]`: whether Tracker's memory stays flat under
// steady load (issue 17, point 7). One server on a fresh SQLite file takes the peers' REST
// workload (wrk -t1 -c<connections>, or the Node generator when wrk is missing) for the
// whole run, in slices of SLICE_SECONDS; after each slice the server's RSS is read from
// /proc, and its V8 heap from its /metrics (RSS minus the heap is what SQLite, the code and
// the buffers hold). The first minute is the warm-up (JIT, caches, the WAL reaching its size); the
// figure is the growth from the end of that minute to the end of the run, which a leak of
// even 100 bytes per request (about 6 MB a minute at these rates) would show.
import { performance } from 'node:perf_hooks';
import { rssMb } from './big.js';
import { available, measureRest, restGenerator } from './peers.js';
import { startTracker } from './targets.js';
import { ratioLine, type TargetRatio } from './versus.js';

/** Seconds of load between two RSS readings. */
const SLICE_SECONDS = 30;
/** RSS growth allowed over the run after its first minute, as a fraction. */
const FLAT = 0.1;

export interface RssOptions {
  minutes: number;
  connections: number;
  runTag: string;
  log: (line: string) => void;
  interrupted: () => boolean;
}

export interface RssSample {
  /** Seconds since the load started. */
  at: number;
  rssMb: number;
  /** V8's heap (total, as allocated) and external memory, from the server's /metrics. */
  heapMb: number;
  externalMb: number;
  requestsPerSec: number;
  errors: number;
}

export interface RssReport {
  minutes: number;
  generator: string;
  samples: RssSample[];
  ratios: TargetRatio[];
}

export async function runRss(options: RssOptions): Promise<RssReport> {
  const server = await startTracker({ name: 'rss' });
  const hasWrk = await available('wrk');
  const generator = `${restGenerator(hasWrk, options.connections)}, ${SLICE_SECONDS} s slices`;
  const url = server.http;
  const samples: RssSample[] = [];
  try {
    if (url === undefined) throw new Error('no REST endpoint');
    samples.push({ at: 0, rssMb: rssMb(server.pid), ...(await heapOf(url)), requestsPerSec: 0, errors: 0 });
    const slices = Math.max(2, Math.round((options.minutes * 60) / SLICE_SECONDS));
    const started = performance.now();
    for (let slice = 0; slice < slices && !options.interrupted(); slice++) {
      const tag = `${options.runTag}-rss-${slice}`;
      const run = await measureRest([url], hasWrk, {
        connections: options.connections,
        seconds: SLICE_SECONDS,
        warmupSeconds: 0,
        tag,
      });
      const sample = {
        at: Math.round((performance.now() - started) / 1000),
        rssMb: rssMb(server.pid),
        ...(await heapOf(url)),
        requestsPerSec: run.requestsPerSec,
        errors: run.errors,
      };
      samples.push(sample);
      options.log(
        `bench: rss: ${sample.at} s, ${sample.rssMb.toFixed(1)} MB (heap ${sample.heapMb.toFixed(1)} MB), ` +
          `${Math.round(sample.requestsPerSec)} req/s`,
      );
    }
  } finally {
    await server.stop();
  }
  return { minutes: options.minutes, generator, samples, ratios: rssRatios(samples) };
}

/** The server's V8 heap and external memory in MB, from the gauges of its /metrics. */
async function heapOf(url: string): Promise<{ heapMb: number; externalMb: number }> {
  const text = await fetch(`${url}/metrics`)
    .then((response) => response.text())
    .catch(() => '');
  const gauge = (name: string) => {
    const value = new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1];
    return value === undefined ? Number.NaN : Number(value) / 1048576;
  };
  return { heapMb: gauge('nodejs_heap_size_total_bytes'), externalMb: gauge('nodejs_external_memory_bytes') };
}

function rssRatios(samples: RssSample[]): TargetRatio[] {
  const afterMinute = samples.find((sample) => sample.at >= 60);
  const last = samples.at(-1);
  if (afterMinute === undefined || last === undefined || last === afterMinute) return [];
  const growth = last.rssMb / afterMinute.rssMb - 1;
  return [
    ratioLine(
      `RSS growth from minute 1 to minute ${Math.round(last.at / 60)}, SQLite REST under load`,
      growth * 100,
      `<= ${FLAT * 100} %`,
      (value) => value <= FLAT * 100,
      `${afterMinute.rssMb.toFixed(1)} MB at ${afterMinute.at} s, ${last.rssMb.toFixed(1)} MB at ${last.at} s, ` +
        `max ${Math.max(...samples.map((sample) => sample.rssMb)).toFixed(1)} MB`,
    ),
  ];
}

export function rssText(report: RssReport): string {
  const rows = report.samples.map(
    (sample) =>
      `${String(sample.at).padStart(6)}  ${sample.rssMb.toFixed(1).padStart(8)}  ${sample.heapMb.toFixed(1).padStart(8)}  ` +
      `${sample.externalMb.toFixed(1).padStart(7)}  ${String(Math.round(sample.requestsPerSec)).padStart(7)}  ${sample.errors}`,
  );
  return [
    `Memory under load for ${report.minutes} min (${report.generator})`,
    '     s    RSS MB   heap MB  ext MB    req/s  errors',
    ...rows,
  ].join('\n');
}
