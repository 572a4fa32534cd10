/**
 * One training step and one validation pass, with no I/O: the run orchestrator (run.ts) decides what to log,
 * checkpoint and print. Everything here is deterministic given the parameters, optimizer state and step number.
 */
import * as tf from '@tensorflow/tfjs';
import type { Config } from '../../config/types';
import { batchHash, batchStarts, makeBatch, type TokenStore } from '../../data/batches';
import { RopeTables } from '../../model/layers';
import { headWeight, initParams } from '../../model/params';
import { type ModelSpec } from '../../model/spec';
import { planSteps, type StepPlan } from '../types';
import { unreachable, variantOf } from '../../model/variants';
import { forwardHidden } from '../../model/transformer';
import { accumulate } from './accumulate';
import { headLoss } from './head-loss';
import { clipByGlobalNorm } from '../../optim/gradients';
import { Optimizer } from '../../optim/optimizer';
import { applyQkClip, planQkClip } from '../../optim/qkclip';
import { learningRate } from '../../optim/schedule';

export interface StepMetrics {
  step: number; // 1-based: the number of optimizer steps taken after this one
  tokens: number;
  lr: number;
  train_loss: number;
  grad_norm: number;
  /** Per layer, per head: the step's maximum attention logit (max over micro-batches), before any clip. */
  max_logit_heads: number[][];
  heads_clipped: number;
  batch_hash: string;
}

/**
 * MLACTL_PROFILE_STEP=N: for optimizer step N (1-based), list the kernels of its first micro-batch (forward and
 * backward) by total time and count, and time the micro-batches against the optimizer update, on stderr. For
 * finding where a backend spends a step; it adds read-backs, so that step itself runs slower.
 */
const PROFILE_STEP = Number(process.env.MLACTL_PROFILE_STEP ?? 0);

async function profileMicroBatch<T extends { value: tf.Scalar | tf.Tensor; grads: tf.Tensor[]; maxLogits: tf.Tensor2D }>(run: () => T): Promise<T> {
  let out: T | undefined;
  const t0 = performance.now();
  const info = await tf.profile(() => {
    out = run();
    return [];
  });
  await out!.value.data();
  const wall = performance.now() - t0;
  const byName = new Map<string, { count: number; ms: number }>();
  let timed = true;
  for (const k of info.kernels) {
    const e = byName.get(k.name) ?? { count: 0, ms: 0 };
    e.count++;
    const ms = await k.kernelTimeMs;
    if (typeof ms === 'number') e.ms += ms;
    else timed = false;
    byName.set(k.name, e);
  }
  const rows = [...byName].sort((a, b) => b[1].ms - a[1].ms || b[1].count - a[1].count).slice(0, 15);
  process.stderr.write(`profile: first micro-batch ${wall.toFixed(0)} ms wall, ${info.kernels.length} kernels${timed ? '' : ' (this backend reports no kernel times)'}\n`);
  for (const [name, e] of rows) process.stderr.write(`  ${name.padEnd(28)} x${String(e.count).padStart(5)}  ${e.ms.toFixed(1)} ms\n`);
  return out!;
}

export class Trainer {
  readonly params: Record<string, tf.Variable>;
  readonly optimizer: Optimizer;
  readonly rope: RopeTables;
  readonly plan: StepPlan;

  constructor(readonly cfg: Config, readonly spec: ModelSpec, readonly train: TokenStore) {
    this.params = initParams(spec, cfg.seed);
    this.optimizer = new Optimizer(new Map(Object.entries(this.params)), cfg.train);
    this.rope = new RopeTables(spec.dr, spec.maxSeqLen, spec.ropeTheta, [0, spec.dn]);
    this.plan = planSteps(cfg);
  }

  /** Optimizer steps completed so far (restored with the optimizer state on resume). */
  get step(): number {
    return this.optimizer.steps;
  }

  /**
   * One optimizer step over `grad_accum` micro-batches: mean gradient, global-norm clip, update, then QK-clip for
   * the qk-clip variant. Reads back a handful of scalars (loss, norm, per-head maxima), nothing per parameter, and
   * reads them asynchronously, once per step: webgpu in Node has no synchronous read-back at all.
   */
  async runStep(): Promise<StepMetrics> {
    const { cfg, spec } = this;
    const t = cfg.train;
    const T = cfg.data.seq_len;
    const step = this.step;
    const lr = learningRate(step, this.plan.totalSteps, this.plan.warmupSteps, t);
    const allStarts: number[] = [];
    const names = Object.keys(this.params);
    let gradSum: tf.Tensor[] | undefined;
    let lossSum: tf.Tensor | undefined;
    let maxHeads: tf.Tensor2D | undefined;
    const profiling = PROFILE_STEP === step + 1;
    const t0 = performance.now();

    for (let micro = 0; micro < t.grad_accum; micro++) {
      const starts = batchStarts(cfg.data.seed, step, micro, t.batch_size, T, this.train.length, t.grad_accum);
      allStarts.push(...starts);
      const batch = makeBatch(this.train, starts, T);
      const microBatch = () => tf.tidy(() => {
        const inputs = tf.tensor2d(batch.inputs, [t.batch_size, T], 'int32');
        const targets = tf.tensor2d(batch.targets, [t.batch_size, T], 'int32');
        let ml: tf.Tensor2D | undefined;
        const f = () => {
          const out = forwardHidden(this.params, spec, this.rope, inputs, true);
          ml = tf.keep(out.maxLogits!);
          return headLoss(out.hidden, headWeight(this.params), targets, t.z_loss).loss;
        };
        const r = tf.variableGrads(f, names.map((n) => this.params[n]));
        // variableGrads keys its result by the variables' own (unique, generated) names.
        return { value: r.value, grads: names.map((n) => r.grads[this.params[n].name]), maxLogits: ml! };
      });
      const { value, grads, maxLogits } = profiling && micro === 0 ? await profileMicroBatch(microBatch) : microBatch();
      lossSum = accumulate(lossSum, value, tf.add);
      if (!gradSum) gradSum = grads;
      else {
        const summed = gradSum.map((g, i) => tf.add(g, grads[i]));
        tf.dispose([...gradSum, ...grads]);
        gradSum = summed;
      }
      maxHeads = accumulate(maxHeads, maxLogits, tf.maximum);
    }

    const { norm, clipped } = tf.tidy(() => {
      const mean = gradSum!.map((g) => tf.div(g, t.grad_accum));
      const c = clipByGlobalNorm(mean, t.grad_clip);
      return { norm: c.norm, clipped: c.grads };
    });
    tf.dispose(gradSum!);
    const [lossData, normData, heads] = await Promise.all([lossSum!.data(), norm.data(), maxHeads!.array()]);
    tf.dispose([lossSum!, norm, maxHeads!]);
    const gradNorm = normData[0];
    const trainLoss = lossData[0] / t.grad_accum;

    const tGrads = performance.now();
    let headsClipped = 0;
    // A non-finite step must not touch the weights: the run stops on it and keeps the last good state.
    if (Number.isFinite(trainLoss) && Number.isFinite(gradNorm)) {
      this.optimizer.step(new Map(names.map((n, i) => [n, clipped[i]])), lr);
      headsClipped = this.afterStep(heads);
    }
    tf.dispose(clipped);
    if (profiling) {
      await Promise.all(names.map((n) => this.params[n].data())); // the update has run when the weights can be read
      const tEnd = performance.now();
      process.stderr.write(
        `profile step ${step + 1}: ${t.grad_accum} micro-batch(es) with gradients and clipping ${(tGrads - t0).toFixed(0)} ms, optimizer update ${(tEnd - tGrads).toFixed(0)} ms\n`,
      );
    }
    return {
      step: step + 1,
      tokens: (step + 1) * this.plan.tokensPerStep,
      lr,
      train_loss: trainLoss,
      grad_norm: gradNorm,
      max_logit_heads: heads,
      heads_clipped: headsClipped,
      batch_hash: batchHash(allStarts),
    };
  }

  /** Mean cross-entropy over fixed windows, in batches of `batch_size`. */
  /** The variant's hook after each optimizer step; returns how many heads it rescaled. */
  private afterStep(maxLogits: number[][]): number {
    const hook = variantOf(this.spec).afterStep;
    switch (hook) {
      case 'none':
        return 0;
      case 'qk-clip':
        return applyQkClip(this.params, this.spec, planQkClip(this.spec, maxLogits, this.cfg.train.qk_clip));
      default:
        return unreachable(hook);
    }
  }

  async evaluate(store: TokenStore, starts: number[]): Promise<number> {
    const T = this.cfg.data.seq_len;
    const B = this.cfg.train.batch_size;
    let total = 0;
    let count = 0;
    for (let i = 0; i < starts.length; i += B) {
      const chunk = starts.slice(i, i + B);
      const batch = makeBatch(store, chunk, T);
      const ce = tf.tidy(() => {
        const inputs = tf.tensor2d(batch.inputs, [chunk.length, T], 'int32');
        const targets = tf.tensor2d(batch.targets, [chunk.length, T], 'int32');
        return headLoss(forwardHidden(this.params, this.spec, this.rope, inputs).hidden, headWeight(this.params), targets, 0).ce;
      });
      total += (await ce.data())[0] * chunk.length;
      count += chunk.length;
      ce.dispose();
    }
    return count ? total / count : NaN;
  }

  dispose(): void {
    for (const v of Object.values(this.params)) v.dispose();
    this.optimizer.dispose();
    this.rope.dispose();
  }
}
