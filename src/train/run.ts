/**
 * One training run, from a resolved config to a run folder, whichever engine trains it: validate everything that
 * can be wrong with the input before the folder exists, hand the engine a job, turn its events into the run
 * folder's metrics, summary and progress, and leave a summary whatever happens (completed, diverged, interrupted).
 */
import * as fs from 'fs';
import * as path from 'path';
import { createHash } from 'crypto';
import { configToYaml } from '../config/load';
import type { Config } from '../config/types';
import { validationWindows } from '../data/batches';
import { openTrainingData, type TrainingData } from '../data/dataset';
import { chooseEngine } from '../engine';
import { intervalsOf, planSteps, StopRequest, type StepPlan, type TrainEvent, type TrainJob } from '../engine/types';
import { UserError } from '../errors';
import { EXIT_DIVERGED, SIGNAL_EXIT_CODES } from '../exit-codes';
import { countParams } from '../model/params';
import { configSpec, type ModelSpec } from '../model/spec';
import { readJson, writeJson } from '../runfolder/atomic';
import { claimRunFolder, gitState, machineInfo, mlactlVersion } from '../runfolder/folder';
import { MetricsWriter } from '../runfolder/metrics';
import { freshTrainState, latestCheckpoint, readTrainState } from '../runfolder/training-checkpoint';
import type { EngineInfo, RunManifest, RunSummary } from '../runfolder/types';
import { silentProgress, type ProgressSink } from './progress';

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

/** Everything derived from the config that can fail on bad input, computed before any file is written. */
export interface PreparedRun {
  cfg: Config;
  data: TrainingData;
  spec: ModelSpec;
  plan: StepPlan;
  valStarts: number[];
}

export function prepareRun(cfg: Config): PreparedRun {
  const data = openTrainingData(cfg.data);
  const spec = configSpec(cfg);
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
  return { cfg, data, spec, plan, valStarts };
}

function valHash(data: TrainingData, starts: number[], seqLen: number): string {
  const h = createHash('sha256');
  for (const s of starts) h.update(Buffer.from(data.val.read(s, seqLen + 1).buffer));
  return h.digest('hex').slice(0, 16);
}

export async function trainRun(opts: TrainOptions): Promise<TrainResult> {
  const cfg = opts.config;
  const progress = opts.progress ?? silentProgress;
  const { engine, reason } = chooseEngine(cfg);
  // auto decides here; say what it found (the manifest records the engine it picked).
  if (cfg.engine.name === 'auto') progress.note(reason);
  const prepared = prepareRun(cfg);
  const { data, spec, plan, valStarts } = prepared;
  const dir = opts.runDir;
  const tokenizer = { name: data.tokenizer.name, hash: data.tokenizer.hash, eos: data.tokenizer.eos };
  const job: TrainJob = {
    cfg, spec, runDir: dir, data, valStarts, plan, every: intervalsOf(cfg, plan), resumeFrom: null, stopAfterSteps: opts.stopAfterSteps ?? null, tokenizer,
  };
  let engineInfo: EngineInfo;
  try {
    // Before the run folder is claimed and before anything is allocated: a refused run leaves nothing behind.
    engineInfo = await engine.prepare(job);
  } catch (e) {
    data.close();
    throw e;
  }
  if (opts.resume) {
    const done = completedSummary(dir);
    if (done) {
      progress.note(`${opts.arm ?? path.basename(dir)}: already completed (step ${done.step}/${done.total_steps}); left as it is`);
      data.close();
      return { runDir: dir, summary: done, exitCode: 0 };
    }
  }
  const claim = claimRunFolder(dir, { resume: !!opts.resume, force: !!opts.force });
  const stop = new StopRequest();
  const onSignal = (sig: string) => () => {
    // A second signal means "now": the last complete checkpoint is still there to resume from.
    if (stop.requested) process.exit(SIGNAL_EXIT_CODES[sig]);
    progress.note(`${sig}: stopping after this step and writing a checkpoint (send it again to stop at once)`);
    stop.request(sig);
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
        backend: engineInfo.backend,
        backend_reason: engineInfo.reason,
        device: engineInfo.device,
        engine: engineInfo,
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

    const metrics = new MetricsWriter(dir, spec.L);
    const ckpt = opts.resume ? latestCheckpoint(dir) : null;
    // The summary's running totals start where the checkpoint's state.json left them.
    const totals = ckpt ? readTrainState(ckpt.dir) : freshTrainState(cfg.data.seed, plan.totalSteps, plan.warmupSteps);
    if (ckpt) {
      job.resumeFrom = ckpt.dir;
      progress.note(`resuming ${dir} from ${path.relative(dir, ckpt.dir)} (step ${totals.step})`);
    }
    const torn = metrics.truncateAfter(totals.step);
    for (const file of torn) progress.note(`${file}: dropped a torn last line (left by an interrupted write)`);

    const { totalSteps, tokensPerStep } = plan;
    const lastStep = Math.min(totalSteps, opts.stopAfterSteps ?? totalSteps);
    const label = opts.arm ?? path.basename(dir);
    let lastLoss: number | null = null;
    let tps: number | null = null;
    let divergedAt: number | null = null;
    const summaryOf = (status: RunSummary['status']): RunSummary => ({
      status,
      arm: label,
      experiment: opts.experiment ?? null,
      variant: cfg.model.variant,
      seed: cfg.seed,
      lr: cfg.train.lr,
      step: totals.step,
      total_steps: totalSteps,
      tokens: totals.tokens,
      final_train_loss: lastLoss,
      final_val_loss: totals.last_val_loss,
      best_val_loss: totals.best_val_loss,
      diverged_at_step: divergedAt,
      max_logit_peak: totals.max_logit_peak,
      heads_clipped_total: totals.heads_clipped_total,
      tokens_per_s: tps,
      elapsed_s: totals.elapsed_s,
    });

    progress.start(totalSteps * tokensPerStep, totals.tokens, label);
    let windowStart = Date.now();
    let windowTokens = 0;
    const onEvent = (e: TrainEvent): void => {
      if (e.event === 'checkpoint') {
        if (e.initial) return;
        const interrupting = e.step < totalSteps && (stop.requested !== '' || e.step === lastStep);
        writeJson(path.join(dir, 'summary.json'), summaryOf(interrupting ? 'interrupted' : 'running'));
        return;
      }
      windowTokens += tokensPerStep;
      const elapsedWindow = (Date.now() - windowStart) / 1000;
      tps = windowTokens / Math.max(elapsedWindow, 1e-9);
      if (elapsedWindow > 5) {
        windowStart = Date.now();
        windowTokens = 0;
      }
      const perLayer = e.max_logit_heads ? e.max_logit_heads.map((row) => Math.max(...row)) : [];
      totals.step = e.step;
      totals.tokens = e.tokens;
      totals.elapsed_s = e.elapsed_s;
      totals.heads_clipped_total += e.heads_clipped;
      if (perLayer.length) {
        const peak = Math.max(...perLayer);
        totals.max_logit_peak = totals.max_logit_peak === null ? peak : Math.max(totals.max_logit_peak, peak);
      }
      if (e.val_loss !== null) {
        totals.last_val_loss = e.val_loss;
        totals.best_val_loss = totals.best_val_loss === null ? e.val_loss : Math.min(totals.best_val_loss, e.val_loss);
      }
      metrics.append({
        step: e.step,
        tokens: e.tokens,
        lr: e.lr,
        train_loss: e.train_loss,
        val_loss: e.val_loss,
        grad_norm: e.grad_norm,
        max_logit: perLayer,
        heads_clipped: e.heads_clipped,
        tokens_per_s: tps,
        elapsed_s: e.elapsed_s,
        batch_hash: e.batch_hash,
      });
      if (e.max_logit_heads && (e.step % cfg.train.maxlogit_every_steps === 0 || e.step === 1 || e.step === totalSteps)) {
        metrics.appendHeads(e.step, e.tokens, e.max_logit_heads);
      }
      progress.update(e.tokens, { loss: e.train_loss, tokensPerS: tps, step: e.step, valLoss: e.val_loss });
      if (Number.isFinite(e.train_loss) && Number.isFinite(e.grad_norm)) {
        lastLoss = e.train_loss;
      } else {
        divergedAt = e.step;
        progress.note(`${label}: non-finite ${Number.isFinite(e.train_loss) ? 'gradient norm' : 'loss'} at step ${e.step}; stopping (diverged)`);
      }
    };
    const outcome = await engine.train(job, onEvent, stop);
    progress.stop();
    const summary = summaryOf(outcome.status);
    writeJson(path.join(dir, 'summary.json'), summary);
    manifest.ended_at = new Date().toISOString();
    writeJson(manifestFile, manifest);
    const exitCode = outcome.status === 'diverged' ? EXIT_DIVERGED : outcome.status === 'interrupted' && stop.requested ? SIGNAL_EXIT_CODES[stop.requested] : 0;
    return { runDir: dir, summary, exitCode };
  } catch (e) {
    // A run that never reached its first step leaves nothing behind.
    if (claim.created && !latestCheckpoint(dir) && !fs.existsSync(path.join(dir, 'metrics.jsonl'))) fs.rmSync(dir, { recursive: true, force: true });
    throw e;
  } finally {
    process.off('SIGINT', sigint);
    process.off('SIGTERM', sigterm);
    data.close();
    claim.release();
  }
}
