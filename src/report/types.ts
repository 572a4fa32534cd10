// The run-folder files that `mlactl compare` reads, as written by the training and evaluation code.
import type { Config } from '../config/types';

export type RunStatus = 'completed' | 'diverged' | 'interrupted' | 'running';
export const RUN_STATUSES: readonly RunStatus[] = ['completed', 'diverged', 'interrupted', 'running'];

/** manifest.json: where and with what the run was made; tokenizer_hash and val_hash decide comparability. */
export interface RunManifest {
  mlactl_version: string;
  git_commit: string | null;
  git_dirty: boolean | null;
  backend: string;
  node_version: string;
  machine: unknown;
  data_hash: string;
  tokenizer: string;
  tokenizer_hash: string;
  val_hash: string;
  started_at: string;
  ended_at: string | null;
  [key: string]: unknown;
}

/** One line of metrics.jsonl. Losses are null where they were not computed (or were NaN, which JSON cannot hold). */
export interface MetricRow {
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
}

/** summary.json. */
export interface RunSummary {
  status: RunStatus;
  arm: string | null;
  experiment: string | null;
  variant: string | null;
  seed: number | null;
  lr: number | null;
  step: number;
  tokens: number;
  final_train_loss: number | null;
  final_val_loss: number | null;
  best_val_loss: number | null;
  diverged_at_step: number | null;
  /** Total over every step, where the trainer records it (metrics.jsonl may log only some steps). */
  heads_clipped_total: number | null;
}

export interface EvalMetricValue {
  /** Null where the metric could not be computed (an empty task). */
  value: number | null;
  stderr: number | null;
}

export interface EvalTaskResult {
  version: string | number | null;
  n: number | null;
  chance: number | null;
  metrics: Record<string, EvalMetricValue>;
}

/** eval/results.json: downstream scores of one checkpoint. */
export interface EvalResults {
  checkpoint_step: number | null;
  tokens: number | null;
  tasks: Record<string, EvalTaskResult>;
}

/** One row of eval/by-step.csv. */
export interface EvalPoint {
  step: number;
  tokens: number;
  task: string;
  metric: string;
  value: number | null;
  stderr: number | null;
}

/** One row of maxlogits.csv: the per-head detail behind MetricRow.max_logit. */
export interface HeadMaxLogit {
  step: number;
  tokens: number;
  layer: number;
  head: number;
  max_logit: number;
}

/** Everything compare knows about one run folder. */
export interface LoadedRun {
  /** Absolute path of the run folder. */
  dir: string;
  /** Unique display name: the experiment's arm name, else the folder name (prefixed by its parent on a clash). */
  id: string;
  /** The experiment folder this run was reached through, if any. */
  experimentDir: string | null;
  config: Config;
  manifest: RunManifest;
  summary: RunSummary;
  /** True when summary.json was not written yet (the trainer writes it at the first checkpoint): the status is inferred. */
  summaryInferred: boolean;
  metrics: MetricRow[];
  evalResults: EvalResults | null;
  evalByStep: EvalPoint[];
  headMaxLogits: HeadMaxLogit[] | null;
}

/** experiment.json. */
export interface ExperimentFile {
  name: string;
  arms: { name: string; dir: string; variant: string; seed: number; lr: number }[];
}
