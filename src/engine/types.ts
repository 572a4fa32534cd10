/**
 * The seam between mlactl and the code that does the math. An engine trains one run (its loop and its checkpoints)
 * and reports what happens as events; everything around that (configs, data, the run folder's other files,
 * progress, signals, experiments) is the orchestrator's (src/train/run.ts), the same for every engine. Scoring
 * goes through eval's `OpenScorer` (src/eval/types.ts), which each engine implements too.
 */
import type { Config } from '../config/types';
import type { TrainingData } from '../data/dataset';
import type { ModelSpec } from '../model/spec';
import type { CheckpointConfigJson } from '../runfolder/checkpoint';
import type { EngineInfo } from '../runfolder/types';

export type EngineName = 'tfjs' | 'torch';

export interface StepPlan {
  totalSteps: number;
  warmupSteps: number;
  tokensPerStep: number;
}

/** Token budget -> steps; the same arithmetic for every engine. */
export function planSteps(cfg: Config): StepPlan {
  const tokensPerStep = cfg.train.batch_size * cfg.train.grad_accum * cfg.data.seq_len;
  const totalSteps = Math.floor(cfg.train.tokens / tokensPerStep);
  return { totalSteps, tokensPerStep, warmupSteps: Math.min(totalSteps, Math.round(cfg.train.warmup_tokens / tokensPerStep)) };
}

/** How often, in optimizer steps, something happens; Infinity: only at the end of the run. */
export interface Intervals {
  evalSteps: number;
  ckptSteps: number;
  maxlogitSteps: number;
}

export function intervalsOf(cfg: Config, plan: StepPlan): Intervals {
  // An interval of 0 tokens means "only at the end of the run".
  const every = (tokens: number) => (tokens > 0 ? Math.max(1, Math.round(tokens / plan.tokensPerStep)) : Infinity);
  return { evalSteps: every(cfg.train.eval_every_tokens), ckptSteps: every(cfg.train.ckpt_every_tokens), maxlogitSteps: cfg.train.maxlogit_every_steps };
}

/** Everything an engine needs to train one run, resolved and checked by the orchestrator. */
export interface TrainJob {
  cfg: Config;
  spec: ModelSpec;
  runDir: string;
  data: TrainingData;
  valStarts: number[];
  plan: StepPlan;
  every: Intervals;
  /** The checkpoint folder to continue from (resume), or null to start from the config's initialisation. */
  resumeFrom: string | null;
  /** Stop (interrupted, with a checkpoint) after this many optimizer steps in total. */
  stopAfterSteps: number | null;
  tokenizer: CheckpointConfigJson['tokenizer'];
}

/** A stop request (Ctrl-C, SIGTERM): engines finish the step in flight, checkpoint and end as interrupted. */
export class StopRequest {
  requested = '';
  private readonly listeners: ((signal: string) => void)[] = [];

  request(signal: string): void {
    this.requested = signal;
    for (const f of this.listeners) f(signal);
  }

  /** Called at once if a stop was already requested. */
  onRequest(f: (signal: string) => void): void {
    this.listeners.push(f);
    if (this.requested) f(this.requested);
  }
}

/** One optimizer step as an engine reports it. Non-finite numbers stay non-finite (the orchestrator writes null). */
export interface StepEvent {
  event: 'step';
  step: number;
  tokens: number;
  lr: number;
  train_loss: number;
  grad_norm: number;
  /** Per layer and head, the step's maximum attention logit before any clip; null on steps it was not measured. */
  max_logit_heads: number[][] | null;
  heads_clipped: number;
  batch_hash: string;
  /** Validation loss when this step was an evaluation step. */
  val_loss: number | null;
  /** Training wall time so far, resumed runs included. */
  elapsed_s: number;
}

export interface CheckpointEvent {
  event: 'checkpoint';
  step: number;
  dir: string;
  /** The untrained model's checkpoint, written before the first step of a fresh run. */
  initial: boolean;
}

export type TrainEvent = StepEvent | CheckpointEvent;

export interface TrainOutcome {
  status: 'completed' | 'interrupted' | 'diverged';
  /** Optimizer steps taken when the engine stopped. */
  step: number;
}

export interface TrainingEngine {
  readonly name: EngineName;
  /**
   * Everything that can be refused before the run folder is touched (memory, devices, interpreter); returns how
   * the engine will run, for the manifest.
   */
  prepare(job: TrainJob): Promise<EngineInfo>;
  train(job: TrainJob, onEvent: (e: TrainEvent) => void, stop: StopRequest): Promise<TrainOutcome>;
}
