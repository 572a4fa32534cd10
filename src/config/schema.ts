// The runtime description of `Config`: what each key must hold. The mapped types below make the compiler
// reject a schema that misses or adds a key of the interface in types.ts, so the two cannot drift apart.

import { BACKENDS, Config, ENGINE_CHOICES, VARIANTS } from './types';

/** Inclusive bounds unless marked open; an absent bound is unbounded. */
export interface Range {
  min?: number;
  max?: number;
  minOpen?: boolean;
  maxOpen?: boolean;
}

export interface IntSpec { kind: 'int'; range: Range }
export interface NumberSpec { kind: 'number'; range: Range }
export interface BooleanSpec { kind: 'boolean' }
export interface StringSpec { kind: 'string'; pattern: RegExp; expected: string }
export interface EnumSpec<T extends string = string> { kind: 'enum'; values: readonly T[] }
export interface ListSpec<E> { kind: 'list'; of: LeafSpec<E> }
export interface SectionSpec<T> { kind: 'section'; fields: { [K in keyof T]-?: Spec<T[K]> } }

// Brackets stop the conditional types from distributing over unions such as `'adamw' | 'muon'`.
export type LeafSpec<T> = [T] extends [boolean]
  ? BooleanSpec
  : [T] extends [number]
    ? IntSpec | NumberSpec
    : [T] extends [string]
      ? string extends T ? StringSpec : EnumSpec<T>
      : never;

export type Spec<T> = [T] extends [readonly (infer E)[]]
  ? ListSpec<E>
  : [T] extends [boolean | number | string]
    ? LeafSpec<T>
    : SectionSpec<T>;

/** The same specs with the key types erased, for the generic walk in validate.ts. */
export type AnyLeafSpec = IntSpec | NumberSpec | BooleanSpec | StringSpec | EnumSpec;
export type AnySpec = AnyLeafSpec | { kind: 'list'; of: AnyLeafSpec } | { kind: 'section'; fields: Record<string, AnySpec> };

const positiveInt: IntSpec = { kind: 'int', range: { min: 1 } };
const nonNegativeInt: IntSpec = { kind: 'int', range: { min: 0 } };
const positiveNumber: NumberSpec = { kind: 'number', range: { min: 0, minOpen: true } };
const nonNegativeNumber: NumberSpec = { kind: 'number', range: { min: 0 } };
const unitInterval: NumberSpec = { kind: 'number', range: { min: 0, max: 1 } };
const unitIntervalOpenTop: NumberSpec = { kind: 'number', range: { min: 0, max: 1, maxOpen: true } };
const nonEmptyString: StringSpec = { kind: 'string', pattern: /\S/, expected: 'a non-empty string' };

// The run name becomes a folder name, so it must not smuggle in path separators, spaces or `..`.
const runName: StringSpec = {
  kind: 'string',
  pattern: /^[A-Za-z0-9][A-Za-z0-9._-]*$/,
  expected: "a run name of letters, digits, '.', '_' or '-' (it names the run folder)",
};

export const CONFIG_SCHEMA: SectionSpec<Config> = {
  kind: 'section',
  fields: {
    name: runName,
    backend: { kind: 'enum', values: BACKENDS },
    engine: {
      kind: 'section',
      fields: {
        name: { kind: 'enum', values: ENGINE_CHOICES },
        python: { kind: 'string', pattern: /^[^\0\n]*$/, expected: 'an interpreter path or command (empty: the default)' },
        gpus: positiveInt,
        precision: { kind: 'enum', values: ['auto', 'bf16', 'fp32'] },
        compile: { kind: 'enum', values: ['auto', 'on', 'off'] },
        threads: nonNegativeInt,
        device: { kind: 'enum', values: ['auto', 'cpu', 'cuda'] },
      },
    },
    seed: nonNegativeInt,
    model: {
      kind: 'section',
      fields: {
        vocab_size: nonNegativeInt,
        d_model: positiveInt,
        n_layers: positiveInt,
        n_heads: positiveInt,
        q_lora_rank: nonNegativeInt,
        kv_lora_rank: positiveInt,
        qk_nope_head_dim: positiveInt,
        qk_rope_head_dim: positiveInt,
        v_head_dim: positiveInt,
        d_ff: positiveInt,
        rope_theta: positiveNumber,
        norm_eps: positiveNumber,
        max_seq_len: positiveInt,
        tie_embeddings: { kind: 'boolean' },
        init_std: positiveNumber,
        variant: { kind: 'enum', values: VARIANTS },
        qk_norm: {
          kind: 'section',
          fields: {
            scope: { kind: 'enum', values: ['full', 'nope'] },
            key_groups: nonNegativeInt,
            eps: positiveNumber,
          },
        },
      },
    },
    data: {
      kind: 'section',
      fields: {
        source: nonEmptyString,
        tokenizer: { kind: 'enum', values: ['byte', 'gpt2'] },
        seq_len: positiveInt,
        seed: nonNegativeInt,
        val_fraction: unitIntervalOpenTop,
        test_fraction: unitIntervalOpenTop,
      },
    },
    train: {
      kind: 'section',
      fields: {
        tokens: positiveInt,
        batch_size: positiveInt,
        grad_accum: positiveInt,
        optimizer: { kind: 'enum', values: ['adamw', 'muon'] },
        lr: positiveNumber,
        min_lr_ratio: unitInterval,
        warmup_tokens: nonNegativeInt,
        schedule: { kind: 'enum', values: ['cosine', 'wsd'] },
        decay_fraction: unitInterval,
        weight_decay: nonNegativeNumber,
        beta1: unitIntervalOpenTop,
        beta2: unitIntervalOpenTop,
        adam_eps: positiveNumber,
        muon_momentum: unitIntervalOpenTop,
        grad_clip: nonNegativeNumber,
        z_loss: nonNegativeNumber,
        eval_every_tokens: nonNegativeInt,
        eval_tokens: nonNegativeInt,
        ckpt_every_tokens: nonNegativeInt,
        log_every_steps: positiveInt,
        maxlogit_every_steps: positiveInt,
        qk_clip: {
          kind: 'section',
          fields: {
            tau: positiveNumber,
            alpha: unitInterval,
          },
        },
      },
    },
    eval: {
      kind: 'section',
      fields: {
        tasks: { kind: 'list', of: nonEmptyString },
        batch_size: positiveInt,
        limit: nonNegativeInt,
      },
    },
    experiment: {
      kind: 'section',
      fields: {
        variants: { kind: 'list', of: { kind: 'enum', values: VARIANTS } },
        seeds: { kind: 'list', of: nonNegativeInt },
        lrs: { kind: 'list', of: positiveNumber },
      },
    },
  },
};

/** Every leaf key path of the schema (`model.qk_norm.scope`, ...), in declaration order. */
export function schemaKeyPaths(spec: AnySpec = CONFIG_SCHEMA as unknown as AnySpec, prefix = ''): string[] {
  if (spec.kind !== 'section') return [prefix];
  return Object.entries(spec.fields).flatMap(([key, child]) => schemaKeyPaths(child, prefix ? `${prefix}.${key}` : key));
}
