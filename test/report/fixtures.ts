// Synthetic run and experiment folders in the format the training code writes, with metrics chosen by each test.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { stringify as toYaml } from 'yaml';
import type { Config, Variant } from '../../src/config/types';
import type { RunStatus } from '../../src/report/types';

export function tmpDir(prefix = 'mlactl-compare-'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

export function makeConfig(variant: Variant, lr: number, seed: number, batchSize = 4): Config {
  return {
    name: `${variant}-lr${lr}-s${seed}`,
    backend: 'cpu',
    seed,
    model: {
      vocab_size: 0, d_model: 64, n_layers: 2, n_heads: 4, q_lora_rank: 0, kv_lora_rank: 32,
      qk_nope_head_dim: 16, qk_rope_head_dim: 8, v_head_dim: 16, d_ff: 128, rope_theta: 10000, norm_eps: 1e-6,
      max_seq_len: 64, tie_embeddings: true, init_std: 0.02, variant,
      qk_norm: { scope: 'full', key_groups: 0, eps: 1e-6 },
    },
    data: { source: 'brown', tokenizer: 'byte', seq_len: 64, seed, val_fraction: 0.05, test_fraction: 0.05 },
    train: {
      tokens: 10000, batch_size: batchSize, grad_accum: 1, optimizer: 'adamw', lr, min_lr_ratio: 0.1, warmup_tokens: 1000,
      schedule: 'cosine', decay_fraction: 0.2, weight_decay: 0.1, beta1: 0.9, beta2: 0.95, adam_eps: 1e-8,
      muon_momentum: 0.95, grad_clip: 1, z_loss: 0, eval_every_tokens: 2000, eval_tokens: 4096, ckpt_every_tokens: 0,
      log_every_steps: 1, maxlogit_every_steps: 1, qk_clip: { tau: 100, alpha: 0.5 },
    },
    eval: { tasks: ['brown-cloze'], batch_size: 8, limit: 0 },
    experiment: { variants: [], seeds: [], lrs: [] },
  };
}

export interface MetricPoint {
  tokens: number;
  train: number | null;
  val?: number | null;
  maxLogit?: number[];
  headsClipped?: number;
}

export interface RunSpec {
  variant: Variant;
  lr: number;
  seed: number;
  status?: RunStatus;
  batchSize?: number;
  /** Tokens per optimizer step: step = tokens / tokensPerStep. */
  tokensPerStep?: number;
  points: MetricPoint[];
  finalTrain?: number | null;
  finalVal?: number | null;
  bestVal?: number | null;
  divergedAtStep?: number | null;
  /** Written to summary.json as heads_clipped_total when given (the trainer's count over every step). */
  headsClippedTotal?: number;
  tokenizerHash?: string;
  valHash?: string;
  evalTasks?: Record<string, { chance: number; metrics: Record<string, { value: number | null; stderr: number | null }> }>;
  evalByStep?: { tokens: number; task: string; metric: string; value: number | null; stderr: number | null }[];
  headRows?: { tokens: number; layer: number; head: number; max_logit: number }[];
  configEdit?: (config: Config) => void;
}

function lastNonNull(values: (number | null | undefined)[]): number | null {
  for (let i = values.length - 1; i >= 0; i--) if (values[i] !== null && values[i] !== undefined) return values[i] as number;
  return null;
}

export function writeRun(dir: string, spec: RunSpec): string {
  fs.mkdirSync(dir, { recursive: true });
  const tokensPerStep = spec.tokensPerStep ?? 1000;
  const config = makeConfig(spec.variant, spec.lr, spec.seed, spec.batchSize);
  spec.configEdit?.(config);
  fs.writeFileSync(path.join(dir, 'config.resolved.yaml'), toYaml(config));
  fs.writeFileSync(path.join(dir, 'manifest.json'), JSON.stringify({
    mlactl_version: '0.1.0', git_commit: 'abc123', git_dirty: false, backend: 'cpu', node_version: 'v20', machine: 'test',
    data_hash: 'd1', tokenizer: 'byte', tokenizer_hash: spec.tokenizerHash ?? 'tok-aaaa', val_hash: spec.valHash ?? 'val-bbbb',
    started_at: '2025-01-01T00:00:00Z', ended_at: '2025-01-01T01:00:00Z',
  }, null, 2));
  const rows = spec.points.map((p) => ({
    step: Math.round(p.tokens / tokensPerStep), tokens: p.tokens, lr: spec.lr, train_loss: p.train, val_loss: p.val ?? null,
    grad_norm: 1, max_logit: p.maxLogit ?? [10, 20], heads_clipped: p.headsClipped ?? 0, tokens_per_s: 100, elapsed_s: p.tokens / 100,
    batch_hash: 'h',
  }));
  fs.writeFileSync(path.join(dir, 'metrics.jsonl'), rows.map((r) => JSON.stringify(r)).join('\n') + '\n');
  const last = spec.points[spec.points.length - 1];
  const vals = spec.points.map((p) => p.val).filter((v): v is number => typeof v === 'number');
  fs.writeFileSync(path.join(dir, 'summary.json'), JSON.stringify({
    status: spec.status ?? 'completed', arm: path.basename(dir), experiment: null, variant: spec.variant, seed: spec.seed, lr: spec.lr,
    step: Math.round(last.tokens / tokensPerStep), tokens: last.tokens,
    final_train_loss: spec.finalTrain !== undefined ? spec.finalTrain : lastNonNull(spec.points.map((p) => p.train)),
    final_val_loss: spec.finalVal !== undefined ? spec.finalVal : lastNonNull(spec.points.map((p) => p.val)),
    best_val_loss: spec.bestVal !== undefined ? spec.bestVal : (vals.length ? Math.min(...vals) : null),
    diverged_at_step: spec.divergedAtStep ?? null,
    ...(spec.headsClippedTotal !== undefined ? { heads_clipped_total: spec.headsClippedTotal } : {}),
  }, null, 2));
  if (spec.headRows) {
    const lines = ['step,tokens,layer,head,max_logit', ...spec.headRows.map((r) => `${Math.round(r.tokens / tokensPerStep)},${r.tokens},${r.layer},${r.head},${r.max_logit}`)];
    fs.writeFileSync(path.join(dir, 'maxlogits.csv'), lines.join('\n') + '\n');
  }
  if (spec.evalTasks) {
    fs.mkdirSync(path.join(dir, 'eval'), { recursive: true });
    const tasks = Object.fromEntries(Object.entries(spec.evalTasks).map(([name, t]) => [name, { version: 1, n: 500, chance: t.chance, metrics: t.metrics }]));
    fs.writeFileSync(path.join(dir, 'eval', 'results.json'), JSON.stringify({ checkpoint_step: rows[rows.length - 1].step, tokens: last.tokens, tasks }, null, 2));
  }
  if (spec.evalByStep) {
    fs.mkdirSync(path.join(dir, 'eval'), { recursive: true });
    const lines = ['step,tokens,task,metric,value,stderr', ...spec.evalByStep.map((r) => `${Math.round(r.tokens / tokensPerStep)},${r.tokens},${r.task},${r.metric},${r.value ?? ''},${r.stderr ?? ''}`)];
    fs.writeFileSync(path.join(dir, 'eval', 'by-step.csv'), lines.join('\n') + '\n');
  }
  return dir;
}

/** An experiment folder whose arms live in sub-folders named after them. */
export function writeExperiment(dir: string, name: string, arms: (RunSpec & { name: string })[]): string {
  fs.mkdirSync(dir, { recursive: true });
  for (const arm of arms) writeRun(path.join(dir, arm.name), arm);
  fs.writeFileSync(path.join(dir, 'experiment.json'), JSON.stringify({
    name,
    arms: arms.map((a) => ({ name: a.name, dir: a.name, variant: a.variant, seed: a.seed, lr: a.lr })),
  }, null, 2));
  return dir;
}

/**
 * A sweep folder as `mlactl sweep` lays it out: sweep.json beside runs/<id>/. compare reads only the run folders,
 * so sweep.json holds just enough to be recognised.
 */
export function writeSweep(dir: string, runs: (RunSpec & { id: string })[]): string {
  fs.mkdirSync(path.join(dir, 'runs'), { recursive: true });
  for (const run of runs) writeRun(path.join(dir, 'runs', run.id), run);
  fs.writeFileSync(path.join(dir, 'sweep.json'), JSON.stringify({ name: path.basename(dir), runs: runs.map((r) => ({ id: r.id, dir: `runs/${r.id}` })) }, null, 2));
  return dir;
}

/** A falling loss curve ending at `final`, logged every `every` tokens up to `total`, validation every `valEvery`. */
export function curve(total: number, every: number, final: number, valEvery = 2000, valFinal = final + 0.1): MetricPoint[] {
  const points: MetricPoint[] = [];
  for (let tokens = every; tokens <= total; tokens += every) {
    const progress = tokens / total;
    const isVal = tokens % valEvery === 0;
    points.push({
      tokens,
      train: final + 2 * (1 - progress),
      val: isVal ? valFinal + 2 * (1 - progress) : null,
      maxLogit: [5 + 10 * progress, 8 + 20 * progress],
    });
  }
  return points;
}

/**
 * An experiment with everything the plots draw: three variants at two learning rates, two seeds for the
 * baseline, a diverged high-lr baseline, QK-clip clipping heads, evaluation curves and per-head max logits.
 */
export function writeRichExperiment(dir: string): string {
  const evalCurve = (final: number) => [2000, 6000, 10000].flatMap((tokens, i) => [
    { tokens, task: 'brown-cloze', metric: 'acc', value: final - 0.04 * (2 - i), stderr: 0.015 },
    { tokens, task: 'brown-cloze', metric: 'acc_norm', value: final - 0.03 * (2 - i) + 0.01, stderr: 0.015 },
  ]);
  const evalFinal = (acc: number) => ({ 'brown-cloze': { chance: 0.25, metrics: { acc: { value: acc, stderr: 0.015 }, acc_norm: { value: acc + 0.01, stderr: 0.015 } } } });
  const growing = (points: MetricPoint[], scale: number) => points.map((p, i) => ({ ...p, maxLogit: [4 + scale * i, 6 + 1.5 * scale * i] }));
  const wobble = (points: MetricPoint[], amount: number) => points.map((p, i) => ({ ...p, train: p.train === null ? null : p.train + amount * Math.sin(i * 1.7) }));
  return writeExperiment(dir, 'rich', [
    { name: 'baseline-lr1e-3-s0', variant: 'baseline', lr: 1e-3, seed: 0, points: growing(wobble(curve(10000, 250, 3.4), 0.06), 2), evalTasks: evalFinal(0.33), evalByStep: evalCurve(0.33) },
    { name: 'baseline-lr1e-3-s1', variant: 'baseline', lr: 1e-3, seed: 1, points: growing(wobble(curve(10000, 250, 3.45), 0.05), 2.2), evalTasks: evalFinal(0.32), evalByStep: evalCurve(0.32) },
    { name: 'baseline-lr3e-3-s0', variant: 'baseline', lr: 3e-3, seed: 0, status: 'diverged', divergedAtStep: 24, points: growing(curve(6000, 250, 3.6), 12), finalVal: null },
    { name: 'qk-clip-lr1e-3-s0', variant: 'qk-clip', lr: 1e-3, seed: 0, points: growing(wobble(curve(10000, 250, 3.3), 0.05), 3).map((p, i) => ({ ...p, headsClipped: i > 20 ? (i % 4) : 0 })), evalTasks: evalFinal(0.34), evalByStep: evalCurve(0.34) },
    { name: 'qk-clip-lr3e-3-s0', variant: 'qk-clip', lr: 3e-3, seed: 0, points: growing(wobble(curve(10000, 250, 3.35), 0.05), 3).map((p, i) => ({ ...p, headsClipped: i > 10 ? 1 + (i % 3) : 0 })), evalTasks: evalFinal(0.33) },
    { name: 'qk-norm-lr1e-3-s0', variant: 'qk-norm', lr: 1e-3, seed: 0, points: growing(wobble(curve(10000, 250, 3.2), 0.05), 0.3), evalTasks: evalFinal(0.36), evalByStep: evalCurve(0.36),
      headRows: [{ tokens: 10000, layer: 1, head: 2, max_logit: 18.5 }] },
    { name: 'qk-norm-lr3e-3-s0', variant: 'qk-norm', lr: 3e-3, seed: 0, status: 'running', points: growing(wobble(curve(7000, 250, 3.25), 0.05), 0.3) },
  ]);
}
