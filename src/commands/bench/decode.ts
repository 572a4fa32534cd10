import * as fs from 'fs';
import * as path from 'path';
import { Flags } from '@oclif/core';
import { initBackend } from '../../backend';
import {
  DEEPSEEK_LIKE_DIMS,
  DEFAULT_CONTEXTS,
  DecodeCheckError,
  parseBytes,
  parseCaches,
  parseContexts,
  runDecodeBench,
  type DecodeBenchResult,
  type DecodeBenchShape,
} from '../../bench/decode';
import {
  formatDecodeTable,
  formatMemoryAccount,
  memoryAccount,
  presetMemoryAccount,
  writeDecodeOutputs,
  type DecodeFiles,
  type MemoryAccount,
} from '../../bench/decode-report';
import { backendFlag, MlactlCommand } from '../../cli/base';
import { loadConfig } from '../../config/load';
import { UserError } from '../../errors';
import { specFromCheckpointConfig, type CheckpointConfigJson } from '../../runfolder/checkpoint';
import { resolveModelFolder } from '../../inference/scoring';
import { CACHE_KINDS, configSpec, type ModelSpec } from '../../model/spec';
import { runTorchDecodeBench } from '../../bench/decode-torch';
import { inferenceEngine } from '../../engine/torch/decode';

export type BenchDecodeResult = DecodeBenchResult & {
  out: string;
  files: DecodeFiles;
  memory: { bench_dims: MemoryAccount; preset: MemoryAccount };
  warnings: string[];
};

function timestamp(d = new Date()): string {
  const p = (n: number) => String(n).padStart(2, '0');
  return `${d.getFullYear()}${p(d.getMonth() + 1)}${p(d.getDate())}-${p(d.getHours())}${p(d.getMinutes())}${p(d.getSeconds())}`;
}

/** The attention dims of a run folder (its resolved config) or of a checkpoint (its config.json). */
function dimsOfRun(dir: string): ModelSpec {
  const resolved = path.join(dir, 'config.resolved.yaml');
  if (fs.existsSync(resolved)) {
    const cfg = loadConfig(resolved);
    return configSpec(cfg);
  }
  const where = resolveModelFolder(dir);
  const file = path.join(where.dir, 'config.json');
  return specFromCheckpointConfig(JSON.parse(fs.readFileSync(file, 'utf8')) as CheckpointConfigJson);
}

export default class BenchDecode extends MlactlCommand<BenchDecodeResult> {
  static override description =
    'Per-token decode latency of one attention layer for the latent, latent+invrms and full-key caches, with cache memory accounting';

  static override examples = [
    '<%= config.bin %> bench decode',
    '<%= config.bin %> bench decode --contexts 16k,64k,256k --caches latent,latent+invrms --backend wasm',
    '<%= config.bin %> bench decode --config configs/models/paper-400m.yaml --contexts 4k,32k',
    '<%= config.bin %> bench decode --engine torch --dtype bf16 --contexts 1k,16k,64k,256k --batch 8 --repeats 30',
  ];

  static override flags = {
    contexts: Flags.string({ description: 'cached tokens per sequence, comma-separated (k = 1024, m = 1024^2)', default: DEFAULT_CONTEXTS }),
    batch: Flags.integer({ description: 'sequences decoded together (one new token each per step)', default: 1, min: 1 }),
    repeats: Flags.integer({ description: 'timed steps per cache and context', default: 10, min: 1 }),
    warmup: Flags.integer({ description: 'untimed steps per cache and context before timing', default: 2, min: 0 }),
    caches: Flags.string({ description: `caches to compare, comma-separated: ${CACHE_KINDS.join(', ')}`, default: CACHE_KINDS.join(',') }),
    config: Flags.string({ char: 'c', description: "a model preset whose attention dims to use (default: DeepSeek-like d 2048, H 16, dc 512, dr 64, dn 128, dv 128)" }),
    set: Flags.string({ description: 'override a key of --config: --set model.qk_norm.key_groups=1 (repeatable)', multiple: true, default: [] }),
    'key-groups': Flags.integer({
      description: 'QK-norm key groups G of the latent+invrms cache (G numbers per token; must divide the heads), whatever the dims source',
      min: 1,
    }),
    run: Flags.string({ description: 'a run or checkpoint folder whose attention dims to use' }),
    backend: backendFlag({ default: 'auto' }),
    out: Flags.string({ char: 'o', description: 'output folder (default runs/bench-decode-<timestamp>)' }),
    'max-memory': Flags.string({ description: 'refuse contexts whose estimated peak exceeds this (e.g. 6GB; default: free memory)' }),
    seed: Flags.integer({ description: 'seeds the weights and the token history', default: 0 }),
    engine: Flags.option({ options: ['tfjs', 'torch'] as const, description: 'tfjs (the --backend) or torch (PyTorch child process: CUDA graphs and the fused Triton kernel on a GPU)', default: 'tfjs' })(),
    dtype: Flags.option({ options: ['fp32', 'bf16'] as const, description: 'torch engine: the cache and weight dtype (softmax and accumulation in float32)', default: 'fp32' })(),
  };

  async run(): Promise<BenchDecodeResult> {
    const { flags } = await this.parse(BenchDecode);
    const contexts = parseContexts(flags.contexts);
    const caches = parseCaches(flags.caches);
    const maxMemory = flags['max-memory'] !== undefined ? parseBytes(flags['max-memory']) : undefined;
    if (flags.config && flags.run) throw new UserError('bench decode: give --config or --run, not both');
    if (flags.set.length && !flags.config) throw new UserError('--set: only with --config (it overrides keys of that preset)');
    let dims = DEEPSEEK_LIKE_DIMS;
    let source = 'DeepSeek-like defaults';
    if (flags.config) {
      const cfg = loadConfig(flags.config, flags.set);
      dims = configSpec(cfg);
      source = flags.config;
    } else if (flags.run) {
      dims = dimsOfRun(flags.run);
      source = flags.run;
    }
    if (flags['key-groups'] !== undefined) {
      const G = flags['key-groups'];
      if (dims.H % G !== 0) throw new UserError(`--key-groups: ${G} does not divide the ${dims.H} heads of ${source}`);
      dims = { ...dims, G };
      source = `${source}, G ${G}`;
    }
    if (flags.engine !== 'torch' && flags.dtype !== 'fp32') throw new UserError('--dtype: only with --engine torch (the tfjs benchmark stores float32)');
    const torch = flags.engine === 'torch';
    const backend = torch ? { name: 'torch', device: '' } : await initBackend(flags.backend);
    const out = flags.out ?? path.join('runs', `bench-decode-${timestamp()}`);

    const shape: DecodeBenchShape = { dims, dimsSource: source, contexts, batch: flags.batch, repeats: flags.repeats, warmup: flags.warmup, caches, seed: flags.seed };
    let result: DecodeBenchResult;
    try {
      result = torch
        ? await runTorchDecodeBench({
            ...shape,
            dtype: flags.dtype,
            settings: inferenceEngine('torch', null).settings,
            log: (text) => process.stderr.write(text),
          })
        : await runDecodeBench({
            ...shape,
            maxMemory,
            backend: { name: backend.name, device: backend.device },
            log: (line) => process.stderr.write(`${line}\n`),
          });
    } catch (err) {
      if (err instanceof DecodeCheckError) {
        // Not the user's input, but as loud: one line, exit 1, and nothing timed is written.
        process.stderr.write(`mlactl: ${err.message}\n`);
        this.exit(1);
      }
      throw err;
    }

    const memory = { bench_dims: memoryAccount(source, { ...dims, L: 1 }), preset: presetMemoryAccount() };
    const { files, warnings } = await writeDecodeOutputs(out, result, memory);
    this.say(`decode step of one attention layer: ${result.backend}${torch ? ` ${flags.dtype}` : ''} (${result.device}), dims from ${source}, batch ${flags.batch}, ${flags.repeats} repeats`);
    for (const line of formatDecodeTable(result)) this.say(line);
    this.say('');
    for (const line of formatMemoryAccount(memory.preset)) this.say(line);
    for (const w of warnings) this.say(`warning: ${w}`);
    this.say(`written: ${[files.csv, files.json, files.memory, files.svg, files.png].filter(Boolean).join(', ')}`);
    return { ...result, out, files, memory, warnings };
  }
}
