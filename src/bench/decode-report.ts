// What `bench decode` writes and prints: decode.csv, decode.json, memory.json, the latency plot, and the tables.
import * as fs from 'fs';
import * as path from 'path';
import { stringify } from 'csv-stringify/sync';
import { loadConfig } from '../config/load';
import { writeFileAtomic } from '../runfolder/atomic';
import { CONFIGS_DIR } from '../paths';
import { CACHE_KINDS, cacheNumbersPerToken, configSpec, type CacheKind, type ModelSpec } from '../model/spec';
import { PLOT_FONT, renderSvgs, svgToPng } from '../report/render';
import { BYTES_PER_NUMBER, formatBytes, formatContext, rowLabel, type DecodeBenchResult } from './decode';

/** The preset whose whole-model cache sizes every benchmark reports, and the contexts it reports them at. */
export const MEMORY_PRESET = path.join(CONFIGS_DIR, 'models', 'paper-400m.yaml');
export const MEMORY_CONTEXTS = [4096, 32768, 262144];

export interface MemoryAccount {
  model: string;
  layers: number;
  heads: number;
  kv_lora_rank: number;
  qk_rope_head_dim: number;
  qk_nope_head_dim: number;
  key_groups: number;
  bytes_per_number: number;
  bytes_per_token_per_layer: Record<CacheKind, number>;
  /** All layers, one sequence. */
  totals: { context: number; bytes: Record<CacheKind, number> }[];
}

export function memoryAccount(model: string, s: ModelSpec, contexts = MEMORY_CONTEXTS): MemoryAccount {
  const perToken = Object.fromEntries(CACHE_KINDS.map((k) => [k, cacheNumbersPerToken(s, k) * BYTES_PER_NUMBER])) as Record<CacheKind, number>;
  return {
    model,
    layers: s.L,
    heads: s.H,
    kv_lora_rank: s.dc,
    qk_rope_head_dim: s.dr,
    qk_nope_head_dim: s.dn,
    key_groups: s.G,
    bytes_per_number: BYTES_PER_NUMBER,
    bytes_per_token_per_layer: perToken,
    totals: contexts.map((context) => ({
      context,
      bytes: Object.fromEntries(CACHE_KINDS.map((k) => [k, perToken[k] * s.L * context])) as Record<CacheKind, number>,
    })),
  };
}

/** The paper-400m preset's account (its dims read through the config loader, so the preset stays the source). */
export function presetMemoryAccount(file = MEMORY_PRESET): MemoryAccount {
  const cfg = loadConfig(file);
  return memoryAccount(cfg.name, { ...configSpec(cfg), variant: 'qk-norm' });
}

export function formatMemoryAccount(m: MemoryAccount): string[] {
  const kinds = CACHE_KINDS;
  const lines = [
    `KV cache of ${m.model} (${m.layers} layers, ${m.heads} heads, dc ${m.kv_lora_rank}, dr ${m.qk_rope_head_dim}, dn ${m.qk_nope_head_dim}, G ${m.key_groups}; float32, one sequence):`,
    `| context | ${kinds.join(' | ')} |`,
    `| --- | ${kinds.map(() => '---').join(' | ')} |`,
    `| per token per layer | ${kinds.map((k) => `${m.bytes_per_token_per_layer[k]} B`).join(' | ')} |`,
    ...m.totals.map((t) => `| ${formatContext(t.context)} | ${kinds.map((k) => formatBytes(t.bytes[k])).join(' | ')} |`),
  ];
  const lat = m.bytes_per_token_per_layer.latent;
  const inv = m.bytes_per_token_per_layer['latent+invrms'];
  const full = m.bytes_per_token_per_layer['full-key'];
  lines.push(`latent+invrms holds ${(inv / lat).toFixed(3)}x the plain latent cache and ${(full / inv).toFixed(2)}x less than full-key.`);
  return lines;
}

// ---------------------------------------------------------------------------------------------------------------

const CSV_HEADER = [
  'backend', 'device', 'dims_source', 'd_model', 'n_heads', 'kv_lora_rank', 'qk_nope_head_dim', 'qk_rope_head_dim', 'v_head_dim',
  'q_lora_rank', 'key_groups', 'scope', 'batch', 'context', 'cache', 'bytes_per_token_per_layer', 'cache_total_bytes', 'prefill_ms',
  'median_ms', 'p10_ms', 'p90_ms', 'median_cpu_ms', 'repeats', 'check_rel_err', 'ratio_to_latent',
  'engine', 'dtype', 'impl', 'bytes_read', 'bound_ms', 'bandwidth_fraction',
] as const;

export const DECODE_CSV_COLUMNS: readonly string[] = CSV_HEADER;

const round = (x: number, digits = 4) => Number(x.toFixed(digits));
/** A number that may be missing (torch on CUDA has no CPU time per step): '' in CSV, '-' in tables. */
const maybe = (x: number | null | undefined, f: (v: number) => string | number, none: string) => (x === null || x === undefined || !Number.isFinite(x) ? none : f(x));

export function decodeCsv(r: DecodeBenchResult): string {
  const d = r.dims;
  const lines = r.rows.map((row) => [
    r.backend, r.device, d.source, d.d_model, d.n_heads, d.kv_lora_rank, d.qk_nope_head_dim, d.qk_rope_head_dim, d.v_head_dim,
    d.q_lora_rank, d.key_groups, d.scope, r.batch, row.context, row.cache, row.bytes_per_token_per_layer, row.cache_total_bytes,
    round(row.prefill_ms, 1), round(row.median_ms), round(row.p10_ms), round(row.p90_ms), maybe(row.median_cpu_ms, round, ''), r.repeats,
    row.check_rel_err.toExponential(3), row.ratio_to_latent === null ? '' : round(row.ratio_to_latent),
    r.engine ?? 'tfjs', r.dtype ?? 'fp32', row.impl ?? 'tfjs', row.bytes_read ?? '', maybe(row.bound_ms, (v) => round(v, 5), ''), maybe(row.bandwidth_fraction, round, ''),
  ]);
  return stringify([[...CSV_HEADER], ...lines]);
}

export function formatDecodeTable(r: DecodeBenchResult): string[] {
  // torch rows carry the memory-bandwidth bound of the step and the fraction of it reached.
  const bound = r.rows.some((row) => row.bound_ms !== undefined);
  const lines = [
    `| context | cache | bytes/token/layer | cache | prefill ms | median ms | p10 ms | p90 ms | cpu ms | rel. error | / latent (per round) |${bound ? ' bound ms | of bound |' : ''}`,
    `| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |${bound ? ' --- | --- |' : ''}`,
  ];
  for (const row of r.rows) {
    const extra = bound ? ` ${maybe(row.bound_ms, (v) => v.toFixed(3), '-')} | ${maybe(row.bandwidth_fraction, (v) => v.toFixed(2), '-')} |` : '';
    lines.push(
      `| ${formatContext(row.context)} | ${rowLabel(row)} | ${row.bytes_per_token_per_layer} | ${formatBytes(row.cache_total_bytes)} | ${row.prefill_ms.toFixed(0)} | ` +
        `${row.median_ms.toFixed(bound ? 4 : 2)} | ${row.p10_ms.toFixed(bound ? 4 : 2)} | ${row.p90_ms.toFixed(bound ? 4 : 2)} | ${maybe(row.median_cpu_ms, (v) => v.toFixed(2), '-')} | ${row.check_rel_err.toExponential(1)} | ` +
        `${row.ratio_to_latent === null ? '-' : row.ratio_to_latent.toFixed(3)} |${extra}`,
    );
  }
  for (const impl of [...new Set(r.ratios.map((q) => q.impl))]) {
    const ratios = r.ratios.filter((q) => q.impl === impl);
    const which = impl === 'fused' ? ' (fused kernel)' : impl === 'torch' ? ' (PyTorch path)' : '';
    lines.push('');
    const list = (f: (q: DecodeBenchResult['ratios'][number]) => number) => ratios.map((q) => `${formatContext(q.context)} ${maybe(f(q), (v) => v.toFixed(3), '-')}`).join(', ');
    const withInterval = ratios.map((q) => `${formatContext(q.context)} ${q.invrms_over_latent.toFixed(3)} [${q.invrms_over_latent_ci95.map((v) => v.toFixed(3)).join(', ')}]`);
    lines.push(`latent+invrms / latent${which}, median of per-round ratios [95% bootstrap interval]: ${withInterval.join(', ')}`);
    lines.push(`  (ratio of medians: ${list((q) => q.invrms_over_latent_of_medians)}${ratios.some((q) => Number.isFinite(q.invrms_over_latent_cpu)) ? `; CPU time: ${list((q) => q.invrms_over_latent_cpu)}` : ''})`);
  }
  if (r.engine === 'torch') {
    lines.push('');
    lines.push(`timing: ${r.timing}; ${r.compile}; copy bandwidth ${r.copy_bandwidth_gbs?.toFixed(1)} GB/s (read + write); ${r.dtype} cache and weights; fused kernel: ${r.fused?.note}`);
  }
  return lines;
}

export function describeRun(r: DecodeBenchResult): string {
  const d = r.dims;
  const engine = r.engine === 'torch' ? ` ${r.dtype}` : '';
  return `${r.backend}${engine} (${r.device}); d ${d.d_model}, H ${d.n_heads}, dc ${d.kv_lora_rank}, dn ${d.qk_nope_head_dim}, dr ${d.qk_rope_head_dim}, dv ${d.v_head_dim}, G ${d.key_groups}, scope ${d.scope}${d.q_lora_rank ? `, dq ${d.q_lora_rank}` : ''}; batch ${r.batch}`;
}

export function decodePlotSpec(r: DecodeBenchResult): object {
  const values = r.rows.map((row) => ({ context: row.context, cache: rowLabel(row), median: row.median_ms, p10: row.p10_ms, p90: row.p90_ms }));
  // One x scale for both panels: the measured contexts, log 2.
  const contexts = [...new Set(r.rows.map((row) => row.context))];
  // Ticks at the measured contexts, labelled as on the command line (64k, not 65.536k).
  const labelExpr = "datum.value % 1048576 == 0 ? datum.value / 1048576 + 'm' : datum.value % 1024 == 0 ? datum.value / 1024 + 'k' : datum.value";
  const x = { field: 'context', type: 'quantitative', title: 'context (cached tokens)', scale: { type: 'log', base: 2 }, axis: { values: contexts, labelExpr } };
  const labels = CACHE_KINDS.flatMap((k) => [k, `${k} (fused)`]).filter((k) => r.rows.some((row) => rowLabel(row) === k));
  const color = { field: 'cache', type: 'nominal', title: 'cache', scale: { domain: labels, scheme: 'tableau10' } };
  const latency = {
    width: 560,
    height: 300,
    data: { values },
    layer: [
      { mark: { type: 'rule', strokeWidth: 2 }, encoding: { x, y: { field: 'p10', type: 'quantitative' }, y2: { field: 'p90' }, color } },
      {
        mark: { type: 'line', point: true },
        encoding: { x, y: { field: 'median', type: 'quantitative', title: 'ms per decode step', scale: { type: 'log', nice: false, padding: 12 } }, color },
      },
    ],
  };
  const charts: object[] = [latency];
  if (r.ratios.length) {
    const ratioValues = r.ratios.map((q) => ({ context: q.context, impl: q.impl === 'fused' ? 'fused kernel' : q.impl === 'torch' ? 'PyTorch path' : 'as timed', ratio: q.invrms_over_latent, lo: q.invrms_over_latent_ci95[0], hi: q.invrms_over_latent_ci95[1] }));
    const limits = [{ y: 1, what: 'equal' }, { y: 1.02, what: '2% overhead' }];
    charts.push({
      width: 560,
      height: 140,
      title: { text: 'latent+invrms / latent (median per-round ratio, 95% interval)', fontSize: 12 },
      layer: [
        { data: { values: limits }, mark: { type: 'rule', strokeDash: [4, 3], color: '#999' }, encoding: { y: { field: 'y', type: 'quantitative' } } },
        {
          data: { values: ratioValues },
          mark: { type: 'rule', strokeWidth: 2, color: '#f58518' },
          encoding: { x, y: { field: 'lo', type: 'quantitative' }, y2: { field: 'hi' }, detail: { field: 'impl' } },
        },
        {
          data: { values: ratioValues },
          mark: { type: 'line', color: '#f58518', point: { color: '#f58518' } },
          encoding: {
            x,
            y: { field: 'ratio', type: 'quantitative', title: 'ratio', scale: { zero: false, padding: 12 } },
            // The torch engine's fused kernel has its own ratio: a second, dashed line.
            strokeDash: { field: 'impl', type: 'nominal', title: 'steps', legend: new Set(ratioValues.map((v) => v.impl)).size > 1 ? {} : null },
          },
        },
      ],
    });
  }
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: { text: 'Decode step of one attention layer', subtitle: [...describeRun(r).split('; '), `median of ${r.repeats} interleaved steps; bars span p10 to p90`] },
    config: {
      font: PLOT_FONT,
      background: 'white',
      axis: { labelFontSize: 11, titleFontSize: 12, grid: true, gridColor: '#eee' },
      legend: { labelFontSize: 11, titleFontSize: 12, labelLimit: 260 },
      title: { fontSize: 15, anchor: 'start', subtitleFontSize: 11, subtitleColor: '#555' },
    },
    vconcat: charts,
  };
}

export interface DecodeFiles {
  csv: string;
  json: string;
  memory: string;
  svg?: string;
  png?: string;
}

/** Write every output into `dir`; a plot that cannot be rendered is a warning, the numbers are still written. */
export async function writeDecodeOutputs(dir: string, r: DecodeBenchResult, memory: object): Promise<{ files: DecodeFiles; warnings: string[] }> {
  fs.mkdirSync(dir, { recursive: true });
  const files: DecodeFiles = { csv: path.join(dir, 'decode.csv'), json: path.join(dir, 'decode.json'), memory: path.join(dir, 'memory.json') };
  const warnings: string[] = [];
  writeFileAtomic(files.csv, decodeCsv(r));
  writeFileAtomic(files.json, JSON.stringify(r, null, 2) + '\n');
  writeFileAtomic(files.memory, JSON.stringify(memory, null, 2) + '\n');
  try {
    Object.assign(files, await writeDecodePlot(dir, r));
  } catch (err) {
    warnings.push(`plot not written: ${(err as Error).message.split('\n')[0]}`);
  }
  return { files, warnings };
}

/** decode.svg and decode.png in `dir`, from a result (fresh, or read back from decode.json by `bench plot`). */
export async function writeDecodePlot(dir: string, r: DecodeBenchResult): Promise<{ svg: string; png: string }> {
  const [rendered] = await renderSvgs([decodePlotSpec(r)]);
  if ('error' in rendered) throw new Error(rendered.error);
  const files = { svg: path.join(dir, 'decode.svg'), png: path.join(dir, 'decode.png') };
  writeFileAtomic(files.svg, rendered.svg);
  writeFileAtomic(files.png, svgToPng(rendered.svg));
  return files;
}
