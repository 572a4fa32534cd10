/**
 * `mlactl bench decode --engine torch`: the same benchmark on the torch engine (python -m mlactl_torch
 * bench-decode, python/mlactl_torch/bench_decode.py). Python builds the layer, history and caches, checks each
 * step against its float64 reference and times it (CUDA graphs and CUDA events on a GPU, wall clock on the CPU);
 * this side turns the samples into the rows, ratios and files of the tfjs benchmark, plus the memory-bandwidth
 * bound of each step and the fraction of it achieved. On CUDA the fused Triton kernel's steps come as extra rows
 * (impl `fused`), with their own latent+invrms / latent ratio.
 */
import type { EngineConfig } from '../config/types';
import { runTorchCommand } from '../engine/torch/decode';
import { UserError } from '../errors';
import { cacheNumbersPerToken, type CacheKind } from '../model/spec';
import { DecodeCheckError, summarise, type DecodeBenchResult, type DecodeBenchShape, type DecodeBenchRow, type DecodeImpl, type DecodeRatio, type Timings } from './decode';

export interface TorchDecodeBenchOptions extends DecodeBenchShape {
  dtype: 'fp32' | 'bf16';
  settings: EngineConfig;
  log?: (text: string) => void;
}

interface Entry {
  cache: CacheKind;
  impl: 'torch' | 'fused';
  prefill_ms: number;
  check_rel_err: number;
  bytes_read: number;
  bound_ms: number;
  samples_ms: number[];
  samples_cpu_ms: number[];
}

interface Measurements {
  device: string;
  dtype: 'fp32' | 'bf16';
  timing: string;
  compile: string;
  copy_bandwidth_gbs: number;
  fused: { available: boolean; note: string; config: Record<string, unknown> | null };
  tolerance: number;
  measurements: { context: number; entries: Entry[] }[];
  memory_estimates: { context: number; total: number }[];
}

export async function runTorchDecodeBench(opts: TorchDecodeBenchOptions): Promise<DecodeBenchResult> {
  const started = new Date();
  const d = opts.dims;
  if (d.H % d.G !== 0) throw new UserError(`key groups ${d.G} do not divide ${d.H} heads`);
  const args = [
    'bench-decode', '--dims', JSON.stringify(d), '--contexts', opts.contexts.join(','), '--batch', String(opts.batch), '--repeats', String(opts.repeats),
    '--warmup', String(opts.warmup), '--caches', opts.caches.join(','), '--seed', String(opts.seed), '--dtype', opts.dtype,
  ];
  let m: Measurements;
  try {
    m = await runTorchCommand<Measurements>(opts.settings, args, opts.log);
  } catch (err) {
    // A cache that fails its check against float64 exits 1 with the reason: the same loud failure as tfjs's.
    if (err instanceof UserError && err.exitCode === 1) throw new DecodeCheckError(err.message);
    throw err;
  }
  const bytesPerNumber = opts.dtype === 'bf16' ? 2 : 4;
  const rows: DecodeBenchRow[] = [];
  const ratios: DecodeRatio[] = [];
  for (const { context, entries } of m.measurements) {
    for (const impl of ['torch', 'fused'] as const) {
      const mine = entries.filter((e) => e.impl === impl);
      if (!mine.length) continue;
      const timings: Timings = new Map(mine.map((e) => [e.cache, { wall: e.samples_ms, cpu: e.samples_cpu_ms }]));
      const summary = summarise(context, opts.batch, d, timings, new Map(mine.map((e) => [e.cache, e.prefill_ms])), new Map(mine.map((e) => [e.cache, e.check_rel_err])));
      summary.rows.forEach((row) => {
        const e = mine.find((x) => x.cache === row.cache)!;
        const perToken = cacheNumbersPerToken(d, row.cache) * bytesPerNumber;
        Object.assign(row, {
          bytes_per_token_per_layer: perToken,
          cache_total_bytes: opts.batch * context * perToken,
          impl: impl as DecodeImpl,
          bytes_read: e.bytes_read,
          bound_ms: e.bound_ms,
          bandwidth_fraction: e.bound_ms / row.median_ms,
        });
        rows.push(row);
      });
      if (summary.ratio) ratios.push({ ...summary.ratio, impl });
    }
  }
  return {
    backend: 'torch',
    device: m.device,
    dims: {
      source: opts.dimsSource,
      d_model: d.d,
      n_heads: d.H,
      kv_lora_rank: d.dc,
      qk_nope_head_dim: d.dn,
      qk_rope_head_dim: d.dr,
      v_head_dim: d.dv,
      q_lora_rank: d.dq,
      key_groups: d.G,
      scope: d.scope,
    },
    batch: opts.batch,
    repeats: opts.repeats,
    warmup: opts.warmup,
    seed: opts.seed,
    tolerance: m.tolerance,
    rows,
    ratios,
    memory_estimates: m.memory_estimates.map((e) => ({ context: e.context, latent: 0, caches: {}, work: 0, host: 0, backend: e.total, total: e.total })),
    started_at: started.toISOString(),
    elapsed_s: (Date.now() - started.getTime()) / 1000,
    engine: 'torch',
    dtype: m.dtype,
    timing: m.timing,
    compile: m.compile,
    copy_bandwidth_gbs: m.copy_bandwidth_gbs,
    fused: m.fused,
  };
}
