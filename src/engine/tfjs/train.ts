/**
 * The TensorFlow.js engine's training loop: optimizer steps, validation and checkpoints at the job's intervals,
 * reported as events. Deterministic given the job: a resumed run repeats a straight one bit for bit.
 */
import { initBackend, maxBindingBytes } from '../../backend';
import type { Config } from '../../config/types';
import { UserError } from '../../errors';
import type { ModelSpec } from '../../model/spec';
import { freshTrainState, type TrainState } from '../../runfolder/training-checkpoint';
import type { EngineInfo } from '../../runfolder/types';
import type { StopRequest, TrainEvent, TrainingEngine, TrainJob, TrainOutcome } from '../types';
import { restoreTrainingCheckpoint, saveTrainingCheckpoint } from './checkpoint';
import { checkMemory } from './memory';
import { Trainer } from './trainer';

/**
 * The biggest activation of a training step, per sequence of the micro-batch: the attention scores [H, T, T] or
 * the MLP's hidden [T, d_ff]. (The logits [T, V] are not: the head loss builds them in chunks under the limit,
 * head-loss.ts.) A tensor over the backend's binding limit is refused before any work.
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

/** Lets pending signal handlers run: the training loop is otherwise synchronous enough to starve them. */
const yieldToEvents = () => new Promise<void>((resolve) => setImmediate(resolve));

export const tfjsEngine: TrainingEngine = {
  name: 'tfjs',

  async prepare(job: TrainJob): Promise<EngineInfo> {
    const backend = await initBackend(job.cfg.backend);
    checkTensorSizes(job.cfg, job.spec, backend.name);
    checkMemory(job.cfg, job.spec.vocab, backend.name);
    const tfjsVersion = (require('@tensorflow/tfjs/package.json') as { version: string }).version;
    return {
      engine: 'tfjs',
      backend: backend.name,
      reason: backend.reason,
      device: backend.device,
      versions: { tfjs: tfjsVersion, node: process.version },
      world_size: 1,
      precision: 'fp32',
    };
  },

  async train(job: TrainJob, onEvent: (e: TrainEvent) => void, stop: StopRequest): Promise<TrainOutcome> {
    const { cfg, spec, runDir, data, valStarts, plan, every } = job;
    const trainer = new Trainer(cfg, spec, data.train);
    try {
      let state: TrainState = freshTrainState(cfg.data.seed, plan.totalSteps, plan.warmupSteps);
      if (job.resumeFrom) {
        state = restoreTrainingCheckpoint(job.resumeFrom, trainer);
      } else {
        // The untrained model is checkpointed too: evaluations compare against it, and it costs one model's bytes.
        const dir = await saveTrainingCheckpoint(runDir, trainer, state, job.tokenizer);
        onEvent({ event: 'checkpoint', step: 0, dir, initial: true });
      }
      const { totalSteps } = plan;
      const lastStep = Math.min(totalSteps, job.stopAfterSteps ?? totalSteps);
      const t0 = Date.now() - state.elapsed_s * 1000;
      while (state.step < lastStep) {
        await yieldToEvents();
        const m = await trainer.runStep();
        const finite = Number.isFinite(m.train_loss) && Number.isFinite(m.grad_norm);
        const peak = Math.max(...m.max_logit_heads.map((row) => Math.max(...row)));
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
        if (finite && (m.step % every.evalSteps === 0 || m.step === totalSteps) && valStarts.length) {
          val = await trainer.evaluate(data.val, valStarts);
          state.last_val_loss = val;
          state.best_val_loss = state.best_val_loss === null ? val : Math.min(state.best_val_loss, val);
        }
        onEvent({ event: 'step', ...m, val_loss: val, elapsed_s: state.elapsed_s });
        // The weights were left untouched by a non-finite step; no checkpoint is written from here.
        if (!finite) return { status: 'diverged', step: m.step };
        const interrupted = m.step < totalSteps && (stop.requested !== '' || m.step === lastStep);
        if (m.step % every.ckptSteps === 0 || m.step === totalSteps || interrupted) {
          const dir = await saveTrainingCheckpoint(runDir, trainer, state, job.tokenizer);
          onEvent({ event: 'checkpoint', step: m.step, dir, initial: false });
        }
        if (interrupted) return { status: 'interrupted', step: m.step };
      }
      // A stop at or below the start (0: initialise, write step 0 and stop) trains nothing.
      return { status: state.step >= totalSteps ? 'completed' : 'interrupted', step: state.step };
    } finally {
      trainer.dispose();
    }
  },
};
