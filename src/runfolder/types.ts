/**
 * The files of a run folder as types, shared by every writer (the training orchestrator, either engine,
 * evaluation) and every reader (compare, the demo, resume). docs/run-folder.md describes the same files for a
 * writer in another language. Fields a reader may find missing in a folder written by an older mlactl, or not yet
 * known while a run is starting, are nullable here; writers fill them.
 */

export type RunStatus = 'completed' | 'diverged' | 'interrupted' | 'running';
export const RUN_STATUSES: readonly RunStatus[] = ['completed', 'diverged', 'interrupted', 'running'];

/** summary.json: how the run ended (or stands), written at each checkpoint and at the end. */
export interface RunSummary {
  status: RunStatus;
  arm: string | null;
  experiment: string | null;
  variant: string | null;
  seed: number | null;
  lr: number | null;
  step: number;
  total_steps: number | null;
  tokens: number;
  final_train_loss: number | null;
  final_val_loss: number | null;
  best_val_loss: number | null;
  diverged_at_step: number | null;
  max_logit_peak: number | null;
  /** Total over every step (metrics.jsonl may log only some steps). */
  heads_clipped_total: number | null;
  tokens_per_s: number | null;
  elapsed_s: number | null;
}

/** The engine that trained a run, as it described itself when it started. */
export interface EngineInfo {
  engine: 'tfjs' | 'torch';
  /** tfjs: the TensorFlow.js backend; torch: cuda or cpu. */
  backend: string;
  /** Why this engine and backend were chosen (auto) or that they were asked for. */
  reason: string;
  device: string;
  /** Versions of what did the math: tfjs, or torch / CUDA / Python. */
  versions: Record<string, string>;
  world_size: number;
  precision: string;
}

/** manifest.json: where and with what the run was made; tokenizer_hash and val_hash decide comparability. */
export interface RunManifest {
  mlactl_version: string;
  git_commit: string | null;
  git_dirty: boolean | null;
  /** tfjs backend or torch device kind (kept for older readers; `engine` has the whole description). */
  backend: string;
  backend_reason?: string;
  device?: string;
  engine?: EngineInfo;
  node_version: string;
  machine: { platform: string; arch: string; cpus: number; cpu_model: string; total_mem_gib: number; hostname: string };
  data_source?: string;
  data_hash: string;
  data_origin?: string;
  tokenizer: string;
  tokenizer_hash: string;
  val_hash: string;
  split?: { train: number; val: number; test: number; test_ids: string[] };
  parameters?: number;
  started_at: string;
  ended_at: string | null;
  resumed_at?: string[];
}

/**
 * One line of metrics.jsonl (metrics.csv holds the same rows). Non-finite numbers are written as null (JSON has no
 * NaN), which is how a diverged step shows.
 */
export interface MetricsRow {
  step: number;
  tokens: number;
  lr: number | null;
  train_loss: number | null;
  val_loss: number | null;
  grad_norm: number | null;
  /** Per layer, the max over heads of the scaled pre-softmax logit; empty on steps where it was not measured. */
  max_logit: number[];
  heads_clipped: number;
  tokens_per_s: number | null;
  elapsed_s: number | null;
  batch_hash?: string;
}

/** One row of maxlogits.csv: the per-head detail behind MetricsRow.max_logit, at `train.maxlogit_every_steps`. */
export interface HeadMaxLogit {
  step: number;
  tokens: number;
  layer: number;
  head: number;
  max_logit: number;
}

/** experiment.json: the arms of an experiment folder, each a run folder `<dir>/<arm>/`. */
export interface ExperimentFile {
  name: string;
  arms: { name: string; dir: string; variant: string; seed: number; lr: number }[];
}

/** A metric of one task in eval/results.json. Null where it could not be computed (an empty task). */
export interface EvalMetricValue {
  value: number | null;
  stderr: number | null;
  higher_is_better?: boolean;
  aggregation?: string;
}

/** One task of eval/results.json. */
export interface EvalTaskEntry {
  name?: string;
  version: string | number | null;
  format?: string;
  source?: string;
  n: number | null;
  chance: number | null;
  checkpoint_step?: number | null;
  tokens?: number | null;
  metrics: Record<string, EvalMetricValue>;
}

/** eval/results.json: the newest evaluation of each task (each entry names its checkpoint step). */
export interface EvalResultsFile {
  checkpoint_step: number | null;
  tokens: number | null;
  tasks: Record<string, EvalTaskEntry>;
}

/** One row of eval/by-step.csv: every evaluated checkpoint, for accuracy-versus-tokens tables. */
export interface EvalPoint {
  step: number;
  tokens: number;
  task: string;
  metric: string;
  value: number | null;
  stderr: number | null;
}
