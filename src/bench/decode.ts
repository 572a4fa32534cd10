/**
 * `mlactl bench decode`: the per-token latency of one attention layer's decode step for the three caches
 * (latent, latent+invrms, full-key) at several context lengths, with memory accounting.
 *
 * Per context: draw one token history, build every cache from it (timed separately as prefill), check that each
 * cache's step gives the float64 reference output of its variant, then time single-token steps against the
 * fixed-size caches, cache kinds interleaved so machine drift hits all of them alike.
 */
import * as os from 'os';
import { performance } from 'perf_hooks';
import * as tf from '@tensorflow/tfjs';
import { UserError } from '../errors';
import { absorbedDecodeStep, fixedCacheTensors, type FixedCache } from '../model/decode';
import { RopeTables } from '../model/layers';
import { maxRelativeError } from '../model/reference';
import { CACHE_KINDS, cacheNumbersPerToken, type CacheKind, type ModelSpec } from '../model/spec';
import { paramInfos } from '../model/params';
import {
  ATTENTION_PREFIX,
  buildFixedCache,
  drawContent,
  FILL_BLOCK,
  latentTensors,
  layerFor,
  makeBenchLayer,
  referenceOutputs,
  referenceVariantOf,
  type BenchLayer,
  type LatentContent,
  type ReferenceVariant,
} from './decode-context';
import { bootstrapMedianInterval, quantile } from './stats';

/** DeepSeek-V2/V3's attention shape: latent 512, shared RoPE key 64, 16 heads of 128 (a 2048-wide model). */
export const DEEPSEEK_LIKE_DIMS: ModelSpec = {
  variant: 'qk-norm',
  vocab: 1,
  d: 2048,
  L: 1,
  H: 16,
  dq: 0,
  dc: 512,
  dn: 128,
  dr: 64,
  dv: 128,
  dff: 1,
  G: 16,
  scope: 'full',
  qkEps: 1e-6,
  normEps: 1e-6,
  ropeTheta: 10000,
  maxSeqLen: 0,
  tied: true,
  initStd: 0.02,
};

export const DEFAULT_CONTEXTS = '1k,4k,16k';
/** The contract's tolerance (design note §4): max-abs error over max-abs of the reference. */
export const CHECK_TOLERANCE = 1e-5;
/** Bytes per cached number: the benchmark stores float32. */
export const BYTES_PER_NUMBER = 4;
/** The wasm backend's heap is a 32-bit address space: emscripten's getHeapMax() is 4 GiB minus one 64 KiB page. */
export const WASM_HEAP_LIMIT = 4 * 2 ** 30 - 2 ** 16;

// ---------------------------------------------------------------------------------------------------------------
// Parsing flags

const SUFFIX: Record<string, number> = { '': 1, k: 2 ** 10, m: 2 ** 20 };

/** "1k,4k,16k" -> [1024, 4096, 16384]; k and m are binary (1k = 1024 tokens). */
export function parseContexts(text: string): number[] {
  const items = text.split(',').map((t) => t.trim()).filter((t) => t !== '');
  if (items.length === 0) throw new UserError('--contexts: empty list (give lengths such as 1k,4k,16k)');
  return items.map((item) => {
    const m = /^(\d+(?:\.\d+)?)([km]?)$/i.exec(item);
    const value = m ? Number(m[1]) * SUFFIX[m[2].toLowerCase()] : NaN;
    if (!Number.isInteger(value) || value < 2) throw new UserError(`--contexts: "${item}" is not a context length of at least 2 tokens (use e.g. 4096, 4k or 1m)`);
    return value;
  });
}

export function parseCaches(text: string): CacheKind[] {
  const items = text.split(',').map((t) => t.trim()).filter((t) => t !== '');
  if (items.length === 0) throw new UserError(`--caches: empty list (choose from ${CACHE_KINDS.join(', ')})`);
  for (const item of items) {
    if (!(CACHE_KINDS as readonly string[]).includes(item)) throw new UserError(`--caches: unknown cache "${item}" (choose from ${CACHE_KINDS.join(', ')})`);
  }
  // Keep the canonical order, so tables and plots read the same whatever order was typed.
  return CACHE_KINDS.filter((k) => items.includes(k));
}

const BYTE_UNITS: Record<string, number> = {
  '': 1, b: 1, k: 1e3, kb: 1e3, kib: 2 ** 10, m: 1e6, mb: 1e6, mib: 2 ** 20, g: 1e9, gb: 1e9, gib: 2 ** 30, t: 1e12, tb: 1e12, tib: 2 ** 40,
};

/** "3.5GB", "512MiB", "2e9" -> bytes. */
export function parseBytes(text: string, flag = '--max-memory'): number {
  const m = /^\s*(\d+(?:\.\d+)?(?:e\d+)?)\s*([a-z]*)\s*$/i.exec(text);
  const unit = m ? BYTE_UNITS[m[2].toLowerCase()] : undefined;
  if (!m || unit === undefined || !(Number(m[1]) > 0)) throw new UserError(`${flag}: "${text}" is not a size (use e.g. 3GB, 512MiB or a number of bytes)`);
  return Math.floor(Number(m[1]) * unit);
}

export function formatContext(S: number): string {
  if (S % 2 ** 20 === 0) return `${S / 2 ** 20}m`;
  if (S % 2 ** 10 === 0) return `${S / 2 ** 10}k`;
  return String(S);
}

export function formatBytes(n: number): string {
  if (n >= 2 ** 30) return `${(n / 2 ** 30).toFixed(2)} GiB`;
  if (n >= 2 ** 20) return `${(n / 2 ** 20).toFixed(1)} MiB`;
  if (n >= 2 ** 10) return `${(n / 2 ** 10).toFixed(1)} KiB`;
  return `${n} B`;
}

// ---------------------------------------------------------------------------------------------------------------
// Memory

export function bytesPerTokenPerLayer(dims: ModelSpec, kind: CacheKind): number {
  return cacheNumbersPerToken(dims, kind) * BYTES_PER_NUMBER;
}

export interface MemoryEstimate {
  context: number;
  /** The latent c, one tensor shared by every cache (plus, on wasm, XNNPACK's packed copy for the values product). */
  latent: number;
  /** What each cache holds beyond the shared latent: kpr, rk, or the per-head keys. */
  caches: Partial<Record<CacheKind, number>>;
  /** Score tensors of a step, fill temporaries and weights, in the backend. */
  work: number;
  /** Host arrays: the token history, one cache's staging copy, the reference's scores, the RoPE tables. */
  host: number;
  /** What lives in the backend's memory (the wasm heap for wasm). */
  backend: number;
  total: number;
}

/**
 * Peak bytes of one context. XNNPACK (wasm) packs the right-hand matrix of a product into its own buffer and
 * keeps it with the operator, so the latent that the values product reads exists twice there.
 */
export function estimateMemory(dims: ModelSpec, S: number, B: number, caches: CacheKind[], backendName: string): MemoryEstimate {
  const packedCopies = backendName === 'wasm' ? 2 : 1;
  const dk = dims.dn + dims.dr;
  const beyondLatent: Record<CacheKind, number> = { latent: dims.dr, 'latent+invrms': dims.dr + dims.G, 'full-key': dims.H * dk };
  const est: MemoryEstimate = { context: S, latent: B * S * dims.dc * packedCopies * BYTES_PER_NUMBER, caches: {}, work: 0, host: 0, backend: 0, total: 0 };
  for (const k of caches) est.caches[k] = B * S * beyondLatent[k] * BYTES_PER_NUMBER;
  // The layer's parameters, plus the two rearranged copies (plain and qk-norm decode layers).
  const weights = 3 * paramInfos({ ...dims, L: 1 }).filter((p) => p.name.startsWith(ATTENTION_PREFIX)).reduce((n, p) => n + p.shape.reduce((a, b) => a * b, 1), 0);
  // A step keeps a handful of [H, S] score tensors alive at once (both terms, their sum, transposed, softmax).
  const scores = 6 * B * dims.H * S;
  const fill = 8 * FILL_BLOCK * dims.H * dk;
  est.work = (weights + scores + fill) * BYTES_PER_NUMBER;
  const staging = Math.max(0, ...caches.map((k) => beyondLatent[k])) * B * S;
  const rope = 2 * S * dims.dr; // cos and sin of every position (RopeTables keeps them on the host)
  est.host = (B * S * (dims.dc + dims.dr) + staging + rope) * BYTES_PER_NUMBER + 2 * dims.H * S * 8;
  est.backend = est.latent + Object.values(est.caches).reduce((a, b) => a + (b ?? 0), 0) + est.work;
  est.total = est.backend + est.host;
  return est;
}

function describeEstimate(e: MemoryEstimate): string {
  const caches = Object.entries(e.caches).map(([k, v]) => `${k} ${formatBytes(v!)}`).join(', ');
  return `${formatBytes(e.total)} = ${e.total} bytes (shared latent ${formatBytes(e.latent)}; beyond it ${caches}; scores, weights and fill work ${formatBytes(e.work)}; host arrays ${formatBytes(e.host)})`;
}

/**
 * Refuse, before any work, a context that cannot fit: the estimate against `maxMemory` (default: the free memory
 * the OS reports) and, for wasm, the backend part against the 4 GiB heap.
 */
export function checkMemory(dims: ModelSpec, contexts: number[], B: number, caches: CacheKind[], backendName: string, maxMemory?: number): MemoryEstimate[] {
  const budget = maxMemory ?? os.freemem();
  const budgetName = maxMemory !== undefined ? `--max-memory ${formatBytes(maxMemory)}` : `the ${formatBytes(budget)} of free memory`;
  return contexts.map((S) => {
    const e = estimateMemory(dims, S, B, caches, backendName);
    const where = `--contexts ${formatContext(S)}${B > 1 ? ` at --batch ${B}` : ''}`;
    if (backendName === 'wasm' && e.backend > WASM_HEAP_LIMIT) {
      throw new UserError(
        `${where}: needs an estimated ${describeEstimate(e)}, of which ${formatBytes(e.backend)} in the wasm heap, above its ${formatBytes(WASM_HEAP_LIMIT)} limit; ` +
          `drop a cache from --caches (full-key is the largest), lower the context or choose another --backend`,
      );
    }
    if (e.total > budget) {
      throw new UserError(`${where}: needs an estimated ${describeEstimate(e)}, more than ${budgetName}; lower the context, drop a cache from --caches or raise --max-memory`);
    }
    return e;
  });
}

// ---------------------------------------------------------------------------------------------------------------
// The run

/** What a decode benchmark measures, whichever engine runs it (the torch engine's options extend it). */
export interface DecodeBenchShape {
  dims: ModelSpec;
  /** Where the dimensions came from (shown in tables and the JSON). */
  dimsSource: string;
  contexts: number[];
  batch: number;
  repeats: number;
  warmup: number;
  caches: CacheKind[];
  seed: number;
}

export interface DecodeBenchOptions extends DecodeBenchShape {
  maxMemory?: number;
  backend: { name: string; device: string };
  tolerance?: number;
  log?: (line: string) => void;
  /** Test hook: alter a cache after it is built and before the check (the check must then fail). */
  tamper?: (kind: CacheKind, cache: FixedCache) => void;
}

export interface DecodeBenchRow {
  context: number;
  cache: CacheKind;
  bytes_per_token_per_layer: number;
  cache_total_bytes: number;
  prefill_ms: number;
  median_ms: number;
  p10_ms: number;
  p90_ms: number;
  /** Process CPU time per step: less sensitive than wall time to other processes on a shared machine. */
  median_cpu_ms: number;
  check_rel_err: number;
  /**
   * The median over rounds of this cache's step time divided by latent's in the same round (null without latent).
   * The two steps of a round run back to back, so a slow phase of the machine (another job, a frequency change)
   * scales both; on a shared machine this is steadier than a ratio of medians.
   */
  ratio_to_latent: number | null;
  samples_ms: number[];
  samples_cpu_ms: number[];
  /** Which step ran: tfjs, or the torch engine's PyTorch path (`torch`) or fused Triton kernel (`fused`). */
  impl?: DecodeImpl;
  /** torch engine: bytes the step must read (its cache rows once, and the layer weights it uses). */
  bytes_read?: number;
  /** torch engine: bytes_read over the copy bandwidth measured in the same run, ms. */
  bound_ms?: number;
  /** bound_ms / median_ms: the fraction of the memory roofline the step reaches. */
  bandwidth_fraction?: number;
}

export type DecodeImpl = 'tfjs' | 'torch' | 'fused';

/** A row's series name in tables and plots: the cache, and which implementation when it is the fused kernel. */
export function rowLabel(row: Pick<DecodeBenchRow, 'cache' | 'impl'>): string {
  return row.impl === 'fused' ? `${row.cache} (fused)` : row.cache;
}

export interface DecodeRatio {
  context: number;
  /** latent+invrms over latent: the median over rounds of the per-round ratio (as ratio_to_latent). */
  invrms_over_latent: number;
  /** 95% bootstrap interval of that median: how well this run resolves the ratio. */
  invrms_over_latent_ci95: [number, number];
  /** median(latent+invrms) / median(latent). */
  invrms_over_latent_of_medians: number;
  /** The median per-round ratio of process CPU times. */
  invrms_over_latent_cpu: number;
  /** Which implementation's latent+invrms and latent steps (torch engine: `torch` or `fused`). */
  impl?: DecodeImpl;
}

export interface DecodeBenchResult {
  backend: string;
  device: string;
  dims: { source: string; d_model: number; n_heads: number; kv_lora_rank: number; qk_nope_head_dim: number; qk_rope_head_dim: number; v_head_dim: number; q_lora_rank: number; key_groups: number; scope: string };
  batch: number;
  repeats: number;
  warmup: number;
  seed: number;
  tolerance: number;
  rows: DecodeBenchRow[];
  ratios: DecodeRatio[];
  memory_estimates: MemoryEstimate[];
  started_at: string;
  elapsed_s: number;
  /** torch engine only: what ran and how it was timed. */
  engine?: 'tfjs' | 'torch';
  dtype?: 'fp32' | 'bf16';
  timing?: string;
  compile?: string;
  copy_bandwidth_gbs?: number;
  fused?: { available: boolean; note: string; config: Record<string, unknown> | null };
}

export class DecodeCheckError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DecodeCheckError';
  }
}

function median(xs: number[]): number {
  return quantile(xs, 0.5);
}

/** One new token per sequence: the step `generate` runs, against the fixed-size cache. Returns [B, 1, d]. */
function step(l: BenchLayer, kind: CacheKind, cache: FixedCache, rope: RopeTables): tf.Tensor {
  return tf.tidy(() => absorbedDecodeStep(layerFor(l, kind), l.x.reshape([l.x.shape[0], 1, l.spec.d]) as tf.Tensor3D, cache, rope));
}

async function timeStep(l: BenchLayer, kind: CacheKind, cache: FixedCache, rope: RopeTables): Promise<{ wall: number; cpu: number }> {
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const out = step(l, kind, cache, rope);
  await out.data(); // the step is done when its output can be read (asynchronous backends queue work)
  const wall = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  out.dispose();
  return { wall, cpu: (cpu.user + cpu.system) / 1000 };
}

export type Timings = Map<CacheKind, { wall: number[]; cpu: number[] }>;

/** Fill every cache from the same history (sharing its latent tensors); returns them with their fill times. */
async function fillCaches(layer: BenchLayer, content: LatentContent, latent: tf.Tensor2D[], rope: RopeTables, opts: DecodeBenchOptions, log: (l: string) => void) {
  const caches = new Map<CacheKind, FixedCache>();
  const prefillMs = new Map<CacheKind, number>();
  for (const kind of opts.caches) {
    const t0 = performance.now();
    const cache = await buildFixedCache(kind, layer, content, latent, rope);
    prefillMs.set(kind, performance.now() - t0);
    caches.set(kind, cache);
    opts.tamper?.(kind, cache);
    log(`${kind} cache filled in ${(prefillMs.get(kind)! / 1000).toFixed(2)} s`);
  }
  return { caches, prefillMs };
}

/** Every cache's step must give its variant's reference output; returns each relative error. */
async function checkCaches(layer: BenchLayer, caches: Map<CacheKind, FixedCache>, rope: RopeTables, reference: Map<ReferenceVariant, Float64Array>, tolerance: number, label: string) {
  const errors = new Map<CacheKind, number>();
  for (const [kind, cache] of caches) {
    const got = step(layer, kind, cache, rope);
    const err = maxRelativeError(await got.data(), reference.get(referenceVariantOf(kind))!);
    got.dispose();
    errors.set(kind, err);
    if (!(err <= tolerance)) {
      throw new DecodeCheckError(
        `context ${label}: the ${kind} cache gives a different attention output (relative error ${err.toExponential(2)} > ${tolerance}); its contents or its decode step are wrong, so no timing was taken`,
      );
    }
  }
  return errors;
}

/** Warm-up, then `repeats` rounds of one step per cache, round-robin with a rotating start. */
async function timeInterleaved(layer: BenchLayer, caches: Map<CacheKind, FixedCache>, rope: RopeTables, repeats: number, warmup: number): Promise<Timings> {
  const kinds = [...caches.keys()];
  for (let w = 0; w < warmup; w++) for (const kind of kinds) await timeStep(layer, kind, caches.get(kind)!, rope);
  const timings: Timings = new Map(kinds.map((k) => [k, { wall: [], cpu: [] }]));
  for (let r = 0; r < repeats; r++) {
    // No kind always runs first, or always right after the slowest one.
    for (let i = 0; i < kinds.length; i++) {
      const kind = kinds[(i + r) % kinds.length];
      const t = await timeStep(layer, kind, caches.get(kind)!, rope);
      timings.get(kind)!.wall.push(t.wall);
      timings.get(kind)!.cpu.push(t.cpu);
    }
  }
  return timings;
}

/** The median over rounds of a[i] / b[i]. */
function pairedRatio(a: number[], b: number[]): number {
  return median(a.map((v, i) => v / b[i]));
}

export function summarise(S: number, B: number, dims: ModelSpec, timings: Timings, prefillMs: Map<CacheKind, number>, errors: Map<CacheKind, number>) {
  const latent = timings.get('latent');
  const invrms = timings.get('latent+invrms');
  const rows: DecodeBenchRow[] = [...timings].map(([kind, t]) => ({
    context: S,
    cache: kind,
    bytes_per_token_per_layer: bytesPerTokenPerLayer(dims, kind),
    cache_total_bytes: B * S * bytesPerTokenPerLayer(dims, kind),
    prefill_ms: prefillMs.get(kind)!,
    median_ms: median(t.wall),
    p10_ms: quantile(t.wall, 0.1),
    p90_ms: quantile(t.wall, 0.9),
    median_cpu_ms: median(t.cpu),
    check_rel_err: errors.get(kind)!,
    ratio_to_latent: latent ? pairedRatio(t.wall, latent.wall) : null,
    samples_ms: t.wall,
    samples_cpu_ms: t.cpu,
  }));
  const ratio: DecodeRatio | null =
    latent && invrms
      ? {
          context: S,
          invrms_over_latent: pairedRatio(invrms.wall, latent.wall),
          invrms_over_latent_ci95: bootstrapMedianInterval(invrms.wall.map((v, i) => v / latent.wall[i])),
          invrms_over_latent_of_medians: median(invrms.wall) / median(latent.wall),
          invrms_over_latent_cpu: pairedRatio(invrms.cpu, latent.cpu),
        }
      : null;
  return { rows, ratio };
}

export async function runDecodeBench(opts: DecodeBenchOptions): Promise<DecodeBenchResult> {
  const started = new Date();
  const tolerance = opts.tolerance ?? CHECK_TOLERANCE;
  if (opts.caches.length === 0) throw new UserError('--caches: empty list');
  if (!Number.isInteger(opts.batch) || opts.batch < 1) throw new UserError(`--batch: must be a positive integer, got ${opts.batch}`);
  if (!Number.isInteger(opts.repeats) || opts.repeats < 1) throw new UserError(`--repeats: must be a positive integer, got ${opts.repeats}`);
  const dims = opts.dims;
  if (dims.H % dims.G !== 0) throw new UserError(`key groups ${dims.G} do not divide ${dims.H} heads`);
  if (dims.dr % 2 !== 0) throw new UserError(`qk_rope_head_dim ${dims.dr} must be even (RoPE rotates pairs)`);
  const estimates = checkMemory(dims, opts.contexts, opts.batch, opts.caches, opts.backend.name, opts.maxMemory);

  const layer = makeBenchLayer(dims, opts.batch, opts.seed);
  const rows: DecodeBenchRow[] = [];
  const ratios: DecodeRatio[] = [];
  try {
    for (const S of opts.contexts) {
      const label = formatContext(S);
      const log = (line: string) => opts.log?.(`context ${label}: ${line}`);
      log(`drawing ${S} tokens x ${opts.batch} sequence(s)`);
      const content = await drawContent(layer, S, opts.seed);
      const latent = latentTensors(content, dims);
      const rope = new RopeTables(dims.dr, S, dims.ropeTheta);
      const { caches, prefillMs } = await fillCaches(layer, content, latent, rope, opts, log);
      try {
        const t0 = performance.now();
        const reference = await referenceOutputs(layer, content, [...new Set(opts.caches.map(referenceVariantOf))]);
        log(`float64 reference in ${((performance.now() - t0) / 1000).toFixed(2)} s`);
        const errors = await checkCaches(layer, caches, rope, reference, tolerance, label);
        log(`outputs agree (${[...errors].map(([k, e]) => `${k} ${e.toExponential(1)}`).join(', ')}); timing`);
        const timings = await timeInterleaved(layer, caches, rope, opts.repeats, opts.warmup);
        const summary = summarise(S, opts.batch, dims, timings, prefillMs, errors);
        rows.push(...summary.rows);
        if (summary.ratio) ratios.push(summary.ratio);
        log(summary.rows.map((row) => `${row.cache} ${row.median_ms.toFixed(2)} ms`).join(', '));
      } finally {
        // Shared latent tensors appear in several caches: dispose each tensor once.
        tf.dispose([...new Set([...latent, ...[...caches.values()].flatMap(fixedCacheTensors)])]);
        rope.dispose();
      }
    }
  } finally {
    layer.dispose();
  }

  return {
    backend: opts.backend.name,
    device: opts.backend.device,
    dims: {
      source: opts.dimsSource,
      d_model: dims.d,
      n_heads: dims.H,
      kv_lora_rank: dims.dc,
      qk_nope_head_dim: dims.dn,
      qk_rope_head_dim: dims.dr,
      v_head_dim: dims.dv,
      q_lora_rank: dims.dq,
      key_groups: dims.G,
      scope: dims.scope,
    },
    batch: opts.batch,
    repeats: opts.repeats,
    warmup: opts.warmup,
    seed: opts.seed,
    tolerance,
    rows,
    ratios,
    memory_estimates: estimates,
    started_at: started.toISOString(),
    elapsed_s: (Date.now() - started.getTime()) / 1000,
  };
}
