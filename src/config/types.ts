// The resolved configuration of one run. `configs/base.yaml` documents every key with its reason;
// this file is the typed shape the rest of the code reads. Keys use snake_case as in the YAML.

export type Variant = 'baseline' | 'qk-clip' | 'qk-norm';
export const VARIANTS: readonly Variant[] = ['baseline', 'qk-clip', 'qk-norm'];

export type BackendName = 'auto' | 'tensorflow' | 'wasm' | 'cpu' | 'webgpu';
export const BACKENDS: readonly BackendName[] = ['auto', 'tensorflow', 'wasm', 'cpu', 'webgpu'];

export interface QkNormConfig {
  /** `full`: normalise content and positional slices (weights of size dn+dr); `nope`: content only. */
  scope: 'full' | 'nope';
  /** Key groups G (consecutive heads share one statistic); 0 means G = n_heads. */
  key_groups: number;
  eps: number;
}

export interface ModelConfig {
  /** 0: take the tokenizer's vocabulary size rounded up to a multiple of 64. */
  vocab_size: number;
  d_model: number;
  n_layers: number;
  n_heads: number;
  /** 0: queries come from one projection W_Q; > 0: W_UQ · RMSNorm(W_DQ x) with this rank. */
  q_lora_rank: number;
  kv_lora_rank: number;
  qk_nope_head_dim: number;
  qk_rope_head_dim: number;
  v_head_dim: number;
  d_ff: number;
  rope_theta: number;
  norm_eps: number;
  max_seq_len: number;
  tie_embeddings: boolean;
  init_std: number;
  variant: Variant;
  qk_norm: QkNormConfig;
}

export type TokenizerName = 'byte' | 'gpt2';

export interface DataConfig {
  /** `brown` (embedded corpus), or a path: text file/folder, .jsonl with a `text` field, or a shard manifest. */
  source: string;
  tokenizer: TokenizerName;
  seq_len: number;
  /** Seeds the document split and the batch order; the same seed gives every arm the same windows. */
  seed: number;
  val_fraction: number;
  test_fraction: number;
}

export interface QkClipConfig {
  tau: number;
  alpha: number;
}

export interface TrainConfig {
  tokens: number;
  batch_size: number;
  grad_accum: number;
  optimizer: 'adamw' | 'muon';
  lr: number;
  min_lr_ratio: number;
  warmup_tokens: number;
  schedule: 'cosine' | 'wsd';
  /** Fraction of the run spent decaying, for `wsd`. */
  decay_fraction: number;
  weight_decay: number;
  beta1: number;
  beta2: number;
  adam_eps: number;
  muon_momentum: number;
  grad_clip: number;
  z_loss: number;
  eval_every_tokens: number;
  eval_tokens: number;
  ckpt_every_tokens: number;
  log_every_steps: number;
  maxlogit_every_steps: number;
  qk_clip: QkClipConfig;
}

export interface EvalConfig {
  tasks: string[];
  batch_size: number;
  limit: number;
}

export interface ExperimentConfig {
  /** Arms are the cross product of these lists; an empty list keeps the single value from the config. */
  variants: Variant[];
  seeds: number[];
  lrs: number[];
}

export type EngineChoice = 'tfjs' | 'torch' | 'auto';
export const ENGINE_CHOICES: readonly EngineChoice[] = ['tfjs', 'torch', 'auto'];

/** Which engine trains and scores, and the torch engine's settings (ignored by tfjs). */
export interface EngineConfig {
  name: EngineChoice;
  /** The Python interpreter with PyTorch; empty: $MLACTL_PYTHON, else python3 on the PATH (then /usr/bin/python3). */
  python: string;
  /** Processes on this host, one per GPU, launched through torchrun (1: a single process). */
  gpus: number;
  precision: 'auto' | 'bf16' | 'fp32';
  compile: 'auto' | 'on' | 'off';
  /** CPU threads per process; 0: the cores divided among the processes. */
  threads: number;
  device: 'auto' | 'cpu' | 'cuda';
}

export interface Config {
  name: string;
  backend: BackendName;
  engine: EngineConfig;
  seed: number;
  model: ModelConfig;
  data: DataConfig;
  train: TrainConfig;
  eval: EvalConfig;
  experiment: ExperimentConfig;
}
