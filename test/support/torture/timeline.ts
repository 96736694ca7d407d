import { writeFileSync } from 'node:fs';
import { UNKNOWN } from '../linearizability/checker.js';
import { describeOperation, type LockOperation } from '../linearizability/lock-model.js';

/**
 * A page a person can open: the operations of an excerpt as bars from call to return, one
 * lane per client, with the faults as shaded bands behind them. Hovering a bar shows the
 * operation in full. Self-contained (inline styles, no script).
 */
export function writeTimeline(
  path: string,
  operations: readonly LockOperation[],
  faults: ReadonlyArray<{ kind: string; target: string; from: number; to: number }>,
  title: string,
): void {
  const lanes = [...new Set(operations.map((op) => op.client))].sort();
  const finite = operations.flatMap((op) => [op.call, Number.isFinite(op.return) ? op.return : op.call]);
  const start = Math.min(...finite);
  const end = Math.max(...finite, start + 1);
  const width = 1400;
  const lane = 34;
  const left = 80;
  const x = (t: number) => left + ((Math.min(t, end) - start) / (end - start)) * (width - left - 20);
  const html = (text: string) => text.replace(/[&<>"']/g, (char) => `&#${char.charCodeAt(0)};`);
  const bands = faults
    .filter((fault) => fault.to >= start && fault.from <= end)
    .map(
      (fault) =>
        `<rect x="${x(Math.max(fault.from, start))}" y="20" width="${Math.max(2, x(fault.to) - x(Math.max(fault.from, start)))}" height="${lanes.length * lane}" fill="#fde8e8"><title>${html(`${fault.kind} on ${fault.target}`)}</title></rect>`,
    )
    .join('');
  const bars = operations
    .map((op) => {
      const y = 24 + lanes.indexOf(op.client) * lane;
      const output = op.output;
      const x1 = x(op.call);
      const x2 = output === UNKNOWN ? x(end) : x(op.return);
      const color = output === UNKNOWN ? '#b0b0b0' : output.ok ? '#2b7bb9' : '#d08a1c';
      const label = describeOperation(op);
      return `<g><rect x="${x1}" y="${y}" width="${Math.max(3, x2 - x1)}" height="${lane - 10}" rx="3" fill="${color}"><title>${html(label)}</title></rect><text x="${x1 + 3}" y="${y + 16}" font-size="11" fill="#fff">${html(label.split(':').slice(1).join(':').slice(0, 60))}</text></g>`;
    })
    .join('');
  const names = lanes
    .map((client, i) => `<text x="4" y="${24 + i * lane + 16}" font-size="12">${html(client)}</text>`)
    .join('');
  const list = operations.map((op) => `<li><code>${html(describeOperation(op))}</code></li>`).join('');
  writeFileSync(
    path,
    `<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>${html(title)}</title></head>
<body style="font-family: sans-serif">
<h1 style="font-size: 18px">${html(title)}</h1>
<p>One lane per client; a bar runs from an operation's call to its answer (blue: ok, orange: refused, grey: no answer).
Shaded bands are faults. Times in ms since ${new Date(start).toISOString()}.</p>
<svg width="${width}" height="${lanes.length * lane + 40}" xmlns="http://www.w3.org/2000/svg">${bands}${names}${bars}</svg>
<ol>${list}</ol>
</body></html>
`,
  );
}
