/**
 * One training run, from a resolved config to a run folder: validate everything that can be wrong with the input
 * before the folder exists, then train with periodic validation and checkpoints, and leave a summary whatever
 * happens (completed, diverged, interrupted).
 */
import * as fs from 'fs';
import * as path from 'path';
import { initBackend, maxBindingBytes } from '../backend';
import { configToYaml, effectiveVocab } from '../config/load';
import { checkMemory } from '../engine/tfjs/memory';
import type { Config } from '../config/types';
import { validationWindows } from '../data/batches';
import { openTrainingData, type TrainingData } from '../data/dataset';
import { UserError } from '../errors';
import { countParams } from '../model/params';
import { modelSpec, type ModelSpec } from '../model/spec';
import { restoreTrainingCheckpoint, saveTrainingCheckpoint } from '../engine/tfjs/checkpoint';
import { latestCheckpoint, type TrainState } from '../runfolder/training-checkpoint';
import { MetricsWriter } from '../runfolder/metrics';
import { silentProgress, type ProgressSink } from './progress';
import { readJson, writeJson } from '../runfolder/atomic';
import { claimRunFolder, gitState, machineInfo, mlactlVersion } from '../runfolder/folder';
import type { RunManifest, RunSummary } from '../runfolder/types';
import { planSteps, Trainer } from '../engine/tfjs/trainer';
import { createHash } from 'crypto';

export interface TrainOptions {
  config: Config;
  runDir: string;
  resume?: boolean;
  force?: boolean;
  arm?: string;
  experiment?: string | null;
  progress?: ProgressSink;
  /** Stop (as `interrupted`, with a checkpoint) after this many optimizer steps in total. */
  stopAfterSteps?: number;
}

export interface TrainResult {
  runDir: string;
  summary: RunSummary;
  /** 0 completed (or stopped by stopAfterSteps), 3 diverged, 130 / 143 stopped by SIGINT / SIGTERM. */
  exitCode: number;
}

/** The shell's convention, 128 + signal number, so scripts and schedulers see how the run ended. */
export const SIGNAL_EXIT_CODES: Record<string, number> = { SIGINT: 130, SIGTERM: 143 };

/**
 * A run whose summary says it completed is left as it is by `--resume` (the normal step after one arm of an
 * experiment died is to resume them all): its files are not touched, its summary is returned.
 */
function completedSummary(dir: string): RunSummary | null {
  const file = path.join(dir, 'summary.json');
  if (!fs.existsSync(file)) return null;
  const summary = readJson<RunSummary>(file);
  return summary.status === 'completed' && summary.total_steps !== null && summary.step >= summary.total_steps ? summary : null;
}

/** Lets pending signal handlers run: the training loop is otherwise synchronous enough to starve them. */
const yieldToEvents = () => new Promise<void>((resolve) => setImmediate(resolve));

/** Everything derived from the config that can fail on bad input, computed before any file is written. */
export interface PreparedRun {
  cfg: Config;
  data: TrainingData;
  spec: ModelSpec;
  valStarts: number[];
}

export function prepareRun(cfg: Config): PreparedRun {
  const data = openTrainingData(cfg.data);
  const vocab = effectiveVocab(cfg.model, data.tokenizer.vocabSize);
  const spec = modelSpec(cfg.model, vocab);
  const plan = planSteps(cfg);
  if (plan.totalSteps < 1) {
    throw new UserError(
      `train.tokens: budget ${cfg.train.tokens} is smaller than one step (batch_size*grad_accum*seq_len = ${plan.tokensPerStep} tokens)`,
    );
  }
  if (data.train.length < cfg.data.seq_len + 1) {
    throw new UserError(`data.source: the training split of ${cfg.data.source} has ${data.train.length} tokens, fewer than data.seq_len + 1 = ${cfg.data.seq_len + 1}`);
  }
  const valStarts = validationWindows(data.val.length, cfg.data.seq_len, cfg.train.eval_tokens);
  return { cfg, data, spec, valStarts };
}

function valHash(data: TrainingData, starts: number[], seqLen: number): string {
  const h = createHash('sha256');
  for (const s of starts) h.update(Buffer.from(data.val.read(s, seqLen + 1).buffer));
  return h.digest('hex').slice(0, 16);
}

/**
 * The biggest activation of a training step, per sequence of the micro-batch: the attention scores [H, T, T] or
 * the MLP's hidden [T, d_ff]. (The logits [T, V] are not: the head loss builds them in chunks under the limit,
 * src/train/head-loss.ts.) A tensor over the backend's binding limit is refused before any work.
 */
export function checkTensorSizes(cfg: Config, spec: ModelSpec, backendName: string, limit = maxBindingBytes()): void {
  if (!limit) return;
  const T = cfg.data.seq_len;
  const perSequence = Math.max(spec.H * T * T, T * cfg.model.d_ff) * 4;
  const bytes = cfg.train.batch_size * perSequence;
  if (bytes <= limit) return;
  const fits = Math.max(1, Math.floor(limit / perSequence));
  throw new UserError(
    `train.batch_size: ${cfg.train.batch_size} sequences of ${T} tokens make a ${(bytes / 2 ** 30).toFixed(2)} GiB activation (attention scores or MLP hidden), over ${backendName}'s ${(limit / 2 ** 30).toFixed(2)} GiB binding limit; use train.batch_size <= ${fits} and raise train.grad_accum to keep the tokens per step`,
  );
}

export async function trainRun(opts: TrainOptions): Promise<TrainResult> {
  const cfg = opts.config;
  const progress = opts.progress ?? silentProgress;
  const backend = await initBackend(cfg.backend);
  const prepared = prepareRun(cfg);
  const { data, spec, valStarts } = prepared;
  try {
    checkTensorSizes(cfg, spec, backend.name);
    // Before the run folder is claimed and before anything is allocated: a refused run leaves nothing behind.
    checkMemory(cfg, spec.vocab, backend.name);
  } catch (e) {
    data.close();
    throw e;
  }
  if (opts.resume) {
    const done = completedSummary(opts.runDir);
    if (done) {
      progress.note(`${opts.arm ?? path.basename(opts.runDir)}: already completed (step ${done.step}/${done.total_steps}); left as it is`);
      data.close();
      return { runDir: opts.runDir, summary: done, exitCode: 0 };
    }
  }
  const claim = claimRunFolder(opts.runDir, { resume: !!opts.resume, force: !!opts.force });
  const dir = opts.runDir;
  let trainer: Trainer | undefined;
  const stopSignal = { requested: '' };
  const onSignal = (sig: string) => () => {
    // A second signal means "now": the last complete checkpoint is still there to resume from.
    if (stopSignal.requested) process.exit(SIGNAL_EXIT_CODES[sig]);
    stopSignal.requested = sig;
    progress.note(`${sig}: stopping after this step and writing a checkpoint (send it again to stop at once)`);
  };
  const sigint = onSignal('SIGINT');
  const sigterm = onSignal('SIGTERM');
  process.on('SIGINT', sigint);
  process.on('SIGTERM', sigterm);
  try {
    const now = new Date().toISOString();
    const manifestFile = path.join(dir, 'manifest.json');
    let manifest: RunManifest;
    if (opts.resume && fs.existsSync(manifestFile)) {
      manifest = readJson<RunManifest>(manifestFile);
      manifest.resumed_at = [...(manifest.resumed_at ?? []), now];
      manifest.ended_at = null;
    } else {
      const git = gitState();
      manifest = {
        mlactl_version: mlactlVersion(),
        git_commit: git.commit,
        git_dirty: git.dirty,
        backend: backend.name,
        backend_reason: backend.reason,
        device: backend.device,
        node_version: process.version,
        machine: machineInfo(),
        data_source: cfg.data.source,
        data_hash: data.sourceHash,
        data_origin: data.origin,
        tokenizer: data.tokenizer.name,
        tokenizer_hash: data.tokenizer.hash,
        val_hash: valHash(data, valStarts, cfg.data.seq_len),
        split: { train: data.split.train.length, val: data.split.val.length, test: data.split.test.length, test_ids: data.split.test },
        parameters: countParams(spec),
        started_at: now,
        ended_at: null,
        resumed_at: [],
      };
    }
    fs.writeFileSync(path.join(dir, 'config.resolved.yaml'), configToYaml(cfg));
    writeJson(manifestFile, manifest);

    trainer = new Trainer(cfg, spec, data.train);
    const metrics = new MetricsWriter(dir, spec.L);
    const tokInfo = { name: data.tokenizer.name, hash: data.tokenizer.hash, eos: data.tokenizer.eos };
    let state: TrainState = {
      step: 0,
      tokens: 0,
      data_cursor: { seed: cfg.data.seed, step: 0 },
      schedule: { step: 0, total_steps: trainer.plan.totalSteps, warmup_steps: trainer.plan.warmupSteps },
      elapsed_s: 0,
      best_val_loss: null,
      last_val_loss: null,
      heads_clipped_total: 0,
      max_logit_peak: null,
    };
    const ckpt = opts.resume ? latestCheckpoint(dir) : null;
    if (ckpt) {
      state = restoreTrainingCheckpoint(ckpt.dir, trainer);
      progress.note(`resuming ${dir} from ${path.relative(dir, ckpt.dir)} (step ${state.step})`);
    }
    const torn = metrics.truncateAfter(state.step);
    for (const file of torn) progress.note(`${file}: dropped a torn last line (left by an interrupted write)`);
    // The untrained model is checkpointed too: evaluations compare against it, and it costs one model's bytes.
    if (!ckpt) await saveTrainingCheckpoint(dir, trainer, state, tokInfo);

    const { totalSteps, tokensPerStep } = trainer.plan;
    const lastStep = Math.min(totalSteps, opts.stopAfterSteps ?? totalSteps);
    // An interval of 0 tokens means "only at the end of the run".
    const every = (tokens: number) => (tokens > 0 ? Math.max(1, Math.round(tokens / tokensPerStep)) : Infinity);
    const evalEvery = every(cfg.train.eval_every_tokens);
    const ckptEvery = every(cfg.train.ckpt_every_tokens);
    const label = opts.arm ?? path.basename(dir);
    const summaryOf = (status: RunSummary['status'], lastLoss: number | null, tps: number | null, divergedAt: number | null): RunSummary => ({
      status,
      arm: label,
      experiment: opts.experiment ?? null,
      variant: cfg.model.variant,
      seed: cfg.seed,
      lr: cfg.train.lr,
      step: state.step,
      total_steps: totalSteps,
      tokens: state.tokens,
      final_train_loss: lastLoss,
      final_val_loss: state.last_val_loss,
      best_val_loss: state.best_val_loss,
      diverged_at_step: divergedAt,
      max_logit_peak: state.max_logit_peak,
      heads_clipped_total: state.heads_clipped_total,
      tokens_per_s: tps,
      elapsed_s: state.elapsed_s,
    });

    progress.start(totalSteps * tokensPerStep, state.tokens, label);
    const t0 = Date.now() - state.elapsed_s * 1000;
    let windowStart = Date.now();
    let windowTokens = 0;
    let lastLoss: number | null = null;
    let tps: number | null = null;
    let status: RunSummary['status'] = 'completed';
    let divergedAt: number | null = null;

    while (state.step < lastStep) {
      await yieldToEvents();
      const m = await trainer.runStep();
      const finite = Number.isFinite(m.train_loss) && Number.isFinite(m.grad_norm);
      windowTokens += tokensPerStep;
      const elapsedWindow = (Date.now() - windowStart) / 1000;
      tps = windowTokens / Math.max(elapsedWindow, 1e-9);
      if (elapsedWindow > 5) {
        windowStart = Date.now();
        windowTokens = 0;
      }
      const perLayer = m.max_logit_heads.map((row) => Math.max(...row));
      const peak = Math.max(...perLayer);
      state = {
        ...state,
        step: m.step,
        tokens: m.tokens,
        data_cursor: { seed: cfg.data.seed, step: m.step },
        schedule: { ...state.schedule, step: m.step },
        elapsed_s: (Date.now() - t0) / 1000,
        heads_clipped_total: state.heads_clipped_total + m.heads_clipped,
        max_logit_peak: state.max_logit_peak === null ? peak : Math.max(state.max_logit_peak, peak),
      };
      let val: number | null = null;
      if (finite && (m.step % evalEvery === 0 || m.step === totalSteps) && valStarts.length) {
        val = await trainer.evaluate(data.val, valStarts);
        state.last_val_loss = val;
        state.best_val_loss = state.best_val_loss === null ? val : Math.min(state.best_val_loss, val);
      }
      metrics.append({
        step: m.step,
        tokens: m.tokens,
        lr: m.lr,
        train_loss: m.train_loss,
        val_loss: val,
        grad_norm: m.grad_norm,
        max_logit: perLayer,
        heads_clipped: m.heads_clipped,
        tokens_per_s: tps,
        elapsed_s: state.elapsed_s,
        batch_hash: m.batch_hash,
      });
      if (m.step % cfg.train.maxlogit_every_steps === 0 || m.step === 1 || m.step === totalSteps) metrics.appendHeads(m.step, m.tokens, m.max_logit_heads);
      progress.update(m.tokens, { loss: m.train_loss, tokensPerS: tps, step: m.step, valLoss: val });
      if (!finite) {
        // The weights were left untouched by the bad step; no checkpoint is written from here.
        status = 'diverged';
        divergedAt = m.step;
        progress.note(`${label}: non-finite ${Number.isFinite(m.train_loss) ? 'gradient norm' : 'loss'} at step ${m.step}; stopping (diverged)`);
        break;
      }
      lastLoss = m.train_loss;
      const interrupted = m.step < totalSteps && (stopSignal.requested !== '' || m.step === lastStep);
      if (m.step % ckptEvery === 0 || m.step === totalSteps || interrupted) {
        await saveTrainingCheckpoint(dir, trainer, state, tokInfo);
        writeJson(path.join(dir, 'summary.json'), summaryOf(interrupted ? 'interrupted' : 'running', lastLoss, tps, null));
      }
      if (interrupted) {
        status = 'interrupted';
        break;
      }
    }
    progress.stop();
    const summary = summaryOf(status, lastLoss, tps, divergedAt);
    writeJson(path.join(dir, 'summary.json'), summary);
    manifest.ended_at = new Date().toISOString();
    writeJson(manifestFile, manifest);
    const exitCode = status === 'diverged' ? 3 : status === 'interrupted' && stopSignal.requested ? SIGNAL_EXIT_CODES[stopSignal.requested] : 0;
    return { runDir: dir, summary, exitCode };
  } catch (e) {
    // A run that never reached its first step leaves nothing behind.
    if (claim.created && !latestCheckpoint(dir) && !fs.existsSync(path.join(dir, 'metrics.jsonl'))) fs.rmSync(dir, { recursive: true, force: true });
    throw e;
  } finally {
    process.off('SIGINT', sigint);
    process.off('SIGTERM', sigterm);
    trainer?.dispose();
    data.close();
    claim.release();
  }
}
