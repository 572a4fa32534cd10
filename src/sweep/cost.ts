/**
 * What a sweep costs before it runs: FLOPs from the model's shapes (src/inference/info.ts: training = 3 x forward
 * per token, validation forward only), and hours only where bench/NOTES.md has a measured throughput for the
 * engine and device the runs will use. A measurement on another preset is carried over as FLOP/s (tokens/s x the
 * measured preset's FLOPs per token), which the estimate says; with no measurement the estimate says there is none.
 */
import * as path from 'path';
import { loadConfig } from '../config/load';
import type { Config } from '../config/types';
import { intervalsOf, planSteps } from '../engine/types';
import { flopsPerToken } from '../inference/info';
import { configSpec } from '../model/spec';
import { CONFIGS_DIR } from '../paths';
import type { SweepPlan } from './plan';

export interface RunCost {
  steps: number;
  /** Training tokens: whole steps of the budget. */
  tokens: number;
  train_flops: number;
  /** Forward passes over train.eval_tokens at each evaluation (every eval_every_tokens and at the end). */
  eval_flops: number;
  flops: number;
}

/** A throughput measured with mlactl and written down in bench/NOTES.md. */
export interface Measurement {
  engine: 'tfjs' | 'torch';
  /** tfjs: the backend; torch: the device kind. */
  device: string;
  /** The preset it was measured on (configs/models/<preset>.yaml), for its FLOPs per token. */
  preset: string;
  tokens_per_s: number;
  /** The machine and settings. */
  machine: string;
  /** The section of bench/NOTES.md that holds it. */
  source: string;
}

export const MEASURED_THROUGHPUT: readonly Measurement[] = [
  { engine: 'tfjs', device: 'wasm', preset: 'tiny', tokens_per_s: 3000, machine: '2-core AMD EPYC, 4 x 32 tokens per step', source: 'bench/NOTES.md "Sweeps", 2026-12-01' },
  { engine: 'tfjs', device: 'wasm', preset: 'demo', tokens_per_s: 590, machine: '2-core AMD EPYC, 16 x 128 tokens per step', source: 'bench/NOTES.md "The torch engine", 2026-12-01' },
  { engine: 'tfjs', device: 'cpu', preset: 'demo', tokens_per_s: 25.3, machine: '2-core Intel Xeon, 16 x 128 tokens per step', source: 'bench/NOTES.md "Training throughput", 2026-11-27' },
  { engine: 'tfjs', device: 'webgpu', preset: 'gpu-small', tokens_per_s: 860, machine: 'NVIDIA H100 through Dawn, 8 x 4 x 512 tokens per step', source: 'bench/NOTES.md "Training throughput on the GPU"' },
  { engine: 'torch', device: 'cpu', preset: 'demo', tokens_per_s: 7153, machine: '2-core AMD EPYC, fp32, 16 x 128 tokens per step', source: 'bench/NOTES.md "The torch engine", 2026-12-01' },
  {
    engine: 'torch', device: 'cuda', preset: 'paper-400m', tokens_per_s: 148313,
    machine: 'one NVIDIA H200, bf16 + torch.compile, Muon, 16 x 2048 tokens per step, mlactl train',
    source: 'bench/NOTES.md "GPU: mlactl train --engine torch beside a plain PyTorch script", 2026-12-01',
  },
  {
    engine: 'torch', device: 'cuda', preset: 'gpu-small', tokens_per_s: 634851,
    machine: 'one NVIDIA H200, bf16 + torch.compile, AdamW, 32 x 512 tokens per step in one micro-batch, mlactl train',
    source: 'bench/NOTES.md "GPU: mlactl train --engine torch beside a plain PyTorch script", 2026-12-01',
  },
];

export function runCost(cfg: Config): RunCost {
  const plan = planSteps(cfg);
  const every = intervalsOf(cfg, plan);
  const flops = flopsPerToken(configSpec(cfg), cfg.data.seq_len);
  const tokens = plan.totalSteps * plan.tokensPerStep;
  const evaluations = (Number.isFinite(every.evalSteps) ? Math.floor(plan.totalSteps / every.evalSteps) : 0) + (plan.totalSteps % every.evalSteps === 0 ? 0 : 1);
  const train = tokens * flops.training;
  const evalFlops = evaluations * cfg.train.eval_tokens * flops.forward;
  return { steps: plan.totalSteps, tokens, train_flops: train, eval_flops: evalFlops, flops: train + evalFlops };
}

/** The engine and device a config will train on, or why that is not known before it runs. */
export function targetOf(cfg: Config, gpusRequested: boolean): { engine: 'tfjs' | 'torch'; device: string } | { unknown: string } {
  if (cfg.engine.name === 'auto') return { unknown: 'engine.name is auto (decided on the machine that trains); name tfjs or torch' };
  if (cfg.engine.name === 'tfjs') {
    if (cfg.backend === 'auto') return { unknown: 'backend is auto (decided on the machine that trains); name one, e.g. backend: wasm' };
    return { engine: 'tfjs', device: cfg.backend };
  }
  if (cfg.engine.device !== 'auto') return { engine: 'torch', device: cfg.engine.device };
  if (gpusRequested) return { engine: 'torch', device: 'cuda' };
  return { unknown: 'engine.device is auto and no GPU is requested (slurm.gres); name cpu or cuda' };
}

export interface SweepCost {
  runs: number;
  tokens: number;
  flops: number;
  /** Hours for all runs one after another, when a throughput is known. */
  hours: number | null;
  /** Hours of wall time with `jobs` runs at a time. */
  wall_hours: number | null;
  jobs: number;
  /** Where the hours come from, or why there are none. */
  basis: string;
}

const measuredFlopsPerToken = new Map<string, number>();

function presetFlopsPerToken(preset: string): number {
  let f = measuredFlopsPerToken.get(preset);
  if (f === undefined) {
    const cfg = loadConfig(path.join(CONFIGS_DIR, 'models', `${preset}.yaml`));
    f = flopsPerToken(configSpec(cfg), cfg.data.seq_len).training;
    measuredFlopsPerToken.set(preset, f);
  }
  return f;
}

/**
 * The sweep's cost: FLOPs always; hours when every run trains on one engine and device with a measurement. Runs
 * are assumed to take equal time for the wall estimate (an lr axis does not change the work).
 */
export function sweepCost(configs: Config[], costs: RunCost[], opts: { jobs: number; gpusRequested: boolean }): SweepCost {
  const tokens = costs.reduce((a, c) => a + c.tokens, 0);
  const flops = costs.reduce((a, c) => a + c.flops, 0);
  const base = { runs: costs.length, tokens, flops, jobs: opts.jobs };
  const targets = configs.map((c) => targetOf(c, opts.gpusRequested));
  const first = targets[0];
  if (!first || 'unknown' in first) return { ...base, hours: null, wall_hours: null, basis: `no hours: ${first ? first.unknown : 'no runs'}` };
  const other = targets.find((t) => 'unknown' in t || t.engine !== first.engine || t.device !== first.device);
  if (other) return { ...base, hours: null, wall_hours: null, basis: 'no hours: the runs train on different engines or devices' };
  // Of the measurements for this engine and device, the one on the model nearest in FLOPs per token: small models
  // spend their time on per-kernel overhead rather than arithmetic, so a FLOP rate carries over only so far.
  const runFlops = flopsPerToken(configSpec(configs[0]), configs[0].data.seq_len).training;
  const candidates = MEASURED_THROUGHPUT.filter((x) => x.engine === first.engine && x.device === first.device);
  if (candidates.length === 0) return { ...base, hours: null, wall_hours: null, basis: `no hours: no measured throughput for ${first.engine} on ${first.device} in bench/NOTES.md` };
  const distance = (x: Measurement) => Math.abs(Math.log(presetFlopsPerToken(x.preset) / runFlops));
  const m = candidates.reduce((a, b) => (distance(b) < distance(a) ? b : a));
  const perProcess = m.tokens_per_s * presetFlopsPerToken(m.preset);
  // torch with engine.gpus > 1 trains one run on that many processes (DDP), assumed to scale linearly.
  const gpusOf = (c: Config) => (first.engine === 'torch' ? c.engine.gpus : 1);
  const hours = configs.reduce((a, c, i) => a + costs[i].flops / (perProcess * gpusOf(c)), 0) / 3600;
  const parallel = Math.max(1, Math.min(opts.jobs, costs.length));
  const samePreset = configs.every((c) => flopsPerToken(configSpec(c), c.data.seq_len).training === presetFlopsPerToken(m.preset));
  const basis =
    `${first.engine} ${first.device} at ${fmtTokens(m.tokens_per_s)} tokens/s on the ${m.preset} preset (${m.machine}; ${m.source})` +
    (samePreset ? '' : `, carried over to these runs as ${fmtFlops(perProcess)}/s`) +
    (configs.some((c) => gpusOf(c) > 1) ? '; engine.gpus > 1 assumed to scale linearly' : '') +
    '; process start-up and checkpoints not counted';
  return { ...base, hours, wall_hours: hours / parallel, basis };
}

export function fmtTokens(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)}G`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)}M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)}k`;
  return `${Math.round(n * 10) / 10}`;
}

export function fmtFlops(n: number): string {
  const units: [number, string][] = [[1e18, 'EFLOP'], [1e15, 'PFLOP'], [1e12, 'TFLOP'], [1e9, 'GFLOP'], [1e6, 'MFLOP']];
  for (const [v, u] of units) if (n >= v) return `${(n / v).toFixed(2)} ${u}`;
  return `${Math.round(n)} FLOP`;
}

export function fmtHours(h: number): string {
  if (h < 1 / 60) return `${Math.max(1, Math.round(h * 3600))} s`;
  if (h < 1) return `${Math.round(h * 60)} min`;
  return `${h.toFixed(1)} h`;
}

export interface PlanEstimate {
  name: string;
  source: string;
  base: string;
  count: number;
  axes: { key: string; values: (string | number | boolean)[] }[];
  runs: { id: string; overrides: Record<string, string | number | boolean>; steps: number; tokens: number; flops: number }[];
  cost: SweepCost;
}

/** The expanded runs with their budgets and FLOPs, and the sweep's cost at `jobs` runs at a time. */
export function estimatePlan(plan: SweepPlan, jobs: number): PlanEstimate {
  const costs = plan.runs.map((r) => runCost(r.config));
  const gpusRequested = /(^|,)gpu/.test(plan.spec.slurm.gres ?? '');
  return {
    name: plan.spec.name,
    source: plan.spec.source,
    base: plan.spec.base,
    count: plan.runs.length,
    axes: plan.spec.axes.map((a) => ({ key: a.key, values: a.values })),
    runs: plan.runs.map((r, i) => ({ id: r.id, overrides: r.overrides, steps: costs[i].steps, tokens: costs[i].tokens, flops: costs[i].flops })),
    cost: sweepCost(plan.runs.map((r) => r.config), costs, { jobs, gpusRequested }),
  };
}
