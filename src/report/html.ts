// report.html: one self-contained page (inline CSS and SVG, no scripts, no external resources), readable offline
// and attachable to an issue or a CI artifact as a single file.
import type { GateResult } from './expect';
import { prefixSvgIds } from './render';
import type { Table } from './tables';
import type { LoadedRun } from './types';

export interface HtmlPlot {
  name: string;
  title: string;
  caption: string;
  svg: string | null;
  note?: string;
}

export interface HtmlReportInput {
  title: string;
  generatedAt: string;
  inputs: string[];
  summary: string[];
  warnings: string[];
  gates: GateResult[];
  tables: { title: string; table: Table; note?: string }[];
  plots: HtmlPlot[];
  configDiff: Table;
  manifestDiff: Table;
  runs: LoadedRun[];
}

export function escapeHtml(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&#39;');
}

const STYLE = `
body { font-family: "DejaVu Sans", "Liberation Sans", Arial, Helvetica, sans-serif; margin: 24px auto; max-width: 1200px; padding: 0 16px; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.25em; border-bottom: 1px solid #ddd; padding-bottom: 4px; margin-top: 1.8em; }
.meta { color: #666; font-size: 0.9em; }
.table-wrap { overflow-x: auto; margin: 0.6em 0 1em; }
table { border-collapse: collapse; font-size: 0.88em; }
th, td { border: 1px solid #ddd; padding: 4px 8px; text-align: left; white-space: nowrap; vertical-align: top; }
th { background: #f4f4f4; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr:nth-child(even) td { background: #fafafa; }
figure { margin: 1em 0 2em; }
figure svg { max-width: 100%; height: auto; display: block; }
figcaption { color: #555; font-size: 0.88em; max-width: 900px; margin-top: 0.4em; }
.note { color: #7a5b00; background: #fff8e1; border-left: 3px solid #e0b000; padding: 6px 10px; }
.warning { color: #8a1c1c; background: #fdecea; border-left: 3px solid #c0392b; padding: 6px 10px; }
.pass { color: #1e7b34; font-weight: bold; }
.fail { color: #b00020; font-weight: bold; }
details { margin: 0.4em 0; }
summary { cursor: pointer; }
pre { background: #f6f8fa; padding: 8px; overflow-x: auto; font-size: 0.82em; }
`;

function htmlTable(table: Table, className = ''): string {
  const head = `<tr>${table.headers.map((h) => `<th>${escapeHtml(h)}</th>`).join('')}</tr>`;
  const body = table.rows.map((row) => `<tr>${row.map((cell, i) => `<td${table.numeric?.[i] ? ' class="num"' : ''}>${escapeHtml(cell)}</td>`).join('')}</tr>`).join('\n');
  return `<div class="table-wrap"><table${className ? ` class="${className}"` : ''}>\n<thead>${head}</thead>\n<tbody>\n${body}\n</tbody></table></div>`;
}

function gateSection(gates: GateResult[]): string {
  if (gates.length === 0) return '';
  const rows = gates.map((g) => `<tr><td><code>${escapeHtml(g.expression)}</code></td><td class="${g.passed ? 'pass' : 'fail'}">${g.passed ? 'pass' : 'FAIL'}</td><td>${escapeHtml(g.message.slice(g.expression.length + 2))}</td></tr>`).join('\n');
  return `<h2>Expectations</h2>\n<div class="table-wrap"><table><thead><tr><th>gate</th><th>result</th><th>values</th></tr></thead>\n<tbody>\n${rows}\n</tbody></table></div>`;
}

function plotSection(plots: HtmlPlot[]): string {
  return plots.map((plot, index) => {
    if (plot.svg === null) return `<h3>${escapeHtml(plot.title)}</h3>\n<p class="note">Skipped: ${escapeHtml(plot.note ?? 'no data')}.</p>`;
    return `<figure id="plot-${escapeHtml(plot.name)}">\n${prefixSvgIds(plot.svg, `p${index}-`)}\n<figcaption>${escapeHtml(plot.caption)}</figcaption>\n</figure>`;
  }).join('\n');
}

function manifestSection(runs: LoadedRun[]): string {
  return runs.map((run) => `<details><summary>${escapeHtml(run.id)} <span class="meta">${escapeHtml(run.dir)}</span></summary>\n`
    + `<pre>${escapeHtml(JSON.stringify(run.manifest, null, 2))}</pre></details>`).join('\n');
}

export function renderHtmlReport(input: HtmlReportInput): string {
  const warnings = input.warnings.map((w) => `<p class="warning">${escapeHtml(w)}</p>`).join('\n');
  const tables = input.tables.map((t) => `<h2>${escapeHtml(t.title)}</h2>\n${t.note ? `<p class="meta">${escapeHtml(t.note)}</p>\n` : ''}${htmlTable(t.table)}`).join('\n');
  const configDiff = input.configDiff.rows.length > 0
    ? htmlTable(input.configDiff)
    : '<p class="meta">The resolved configs are identical.</p>';
  const manifestDiff = input.manifestDiff.rows.length > 0
    ? htmlTable(input.manifestDiff)
    : '<p class="meta">The manifests agree on every field but the timestamps.</p>';
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(input.title)}</title>
<style>${STYLE}</style>
</head>
<body>
<h1>${escapeHtml(input.title)}</h1>
<p class="meta">Generated ${escapeHtml(input.generatedAt)} by mlactl compare from ${input.inputs.map((i) => `<code>${escapeHtml(i)}</code>`).join(', ')}</p>
${warnings}
<h2>Summary</h2>
<ul>
${input.summary.map((line) => `<li>${escapeHtml(line)}</li>`).join('\n')}
</ul>
${gateSection(input.gates)}
${tables}
<h2>Plots</h2>
${plotSection(input.plots)}
<h2>Config differences</h2>
<p class="meta">Only keys whose resolved values differ between runs.</p>
${configDiff}
<h2>Manifest differences</h2>
${manifestDiff}
<h2>Manifests</h2>
${manifestSection(input.runs)}
</body>
</html>
`;
}
