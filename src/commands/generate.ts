import { Flags } from '@oclif/core';
import { initBackend } from '../backend';
import { backendFlag, MlactlCommand } from '../cli/base';
import { UserError } from '../errors';
import { ENGINE_CHOICES } from '../config/types';
import { inferenceEngine, runConfigNear } from '../engine/torch/decode';
import { modelFolderInfo } from '../runfolder/checkpoint';
import { generate, generateWithTorch, type GenerateResult, type SamplingOptions } from '../inference/generate';
import { loadRunModel, resolveModelFolder } from '../inference/scoring';
import { CACHE_KINDS, type CacheKind } from '../model/spec';

export interface GenerateCommandResult {
  checkpoint: string;
  step: number | null;
  /** tfjs, or torch (then `backend` is the torch device and `attention` says which decode step ran). */
  engine: 'tfjs' | 'torch';
  backend: string;
  attention?: 'torch' | 'fused';
  prompt: string;
  prompt_tokens: number;
  tokens: number[];
  text: string;
  cache: CacheKind;
  cache_shapes: Record<string, number[]>;
  stopped: 'eos' | 'max-tokens';
  seed: number;
  sampling: SamplingOptions;
  timings: { prefill_ms: number; ms_per_token: number | null; total_ms: number };
}

function parseNumber(flag: string, text: string): number {
  const value = Number(text);
  if (text.trim() === '' || !Number.isFinite(value)) throw new UserError(`${flag}: expected a number, got ${JSON.stringify(text)}`);
  return value;
}

export default class Generate extends MlactlCommand<GenerateCommandResult> {
  static override description = "Sample text from a trained model, decoding through the cache that matches its variant (latent+invrms for qk-norm)";

  static override examples = [
    '<%= config.bin %> generate --run runs/demo/qk-norm --prompt "The jury said"',
    '<%= config.bin %> generate --run runs/demo/qk-norm --prompt "It was" --temperature 0.8 --top-p 0.95 --seed 1 --max-tokens 200',
    '<%= config.bin %> generate --run runs/demo/qk-norm --prompt "It was" --temperature 0 --cache full-key --json',
    '<%= config.bin %> generate --run runs/demo/qk-norm --prompt "It was" --engine torch',
  ];

  static override flags = {
    run: Flags.string({ description: 'run folder (newest checkpoint, or --step) or checkpoint folder', required: true }),
    step: Flags.integer({ description: 'the checkpoint of this training step', min: 0 }),
    prompt: Flags.string({ description: 'text to continue (empty: start a new document)', default: '' }),
    'max-tokens': Flags.integer({ description: 'tokens to generate at most (stops early at end of text)', default: 64 }),
    temperature: Flags.string({ description: 'softmax temperature; 0 is greedy (default 1; the torch engine decodes greedily: 0)' }),
    'top-k': Flags.integer({ description: 'sample among the k most likely tokens (0: all)', default: 0 }),
    'top-p': Flags.string({ description: 'sample among the most likely tokens totalling probability p (1: all)', default: '1' }),
    seed: Flags.integer({ description: 'seeds the sampler: the same seed gives the same text', default: 0 }),
    cache: Flags.string({ description: `decode cache: ${CACHE_KINDS.join(', ')} (default: latent+invrms for qk-norm, latent otherwise)` }),
    backend: backendFlag({ default: 'auto' }),
    engine: Flags.option({ options: ENGINE_CHOICES, description: "who decodes: tfjs, torch (PyTorch child process, greedy) or auto; default: the run config's engine.name, else tfjs" })(),
  };

  async run(): Promise<GenerateCommandResult> {
    const { flags } = await this.parse(Generate);
    const chosen = inferenceEngine(flags.engine, runConfigNear(flags.run));
    const sampling: SamplingOptions = {
      temperature: parseNumber('--temperature', flags.temperature ?? (chosen.engine === 'torch' ? '0' : '1')),
      topK: flags['top-k'],
      topP: parseNumber('--top-p', flags['top-p']),
    };
    if (chosen.engine === 'torch') return this.runTorch(flags, sampling, chosen.settings);
    const backend = await initBackend(flags.backend);
    const model = loadRunModel(flags.run, { step: flags.step });
    try {
      const streaming = !this.jsonEnabled();
      const r = await generate(model, flags.prompt, {
        maxTokens: flags['max-tokens'],
        sampling,
        seed: flags.seed,
        cache: flags.cache,
        onText: streaming ? (text) => process.stdout.write(text) : undefined,
      });
      if (streaming) this.summarise(r, backend.name);
      return this.result(model.ckptDir, model.step, 'tfjs', backend.name, flags, sampling, r);
    } finally {
      model.dispose();
    }
  }

  /** Greedy decoding through `python -m mlactl_torch generate`; sampling flags other than greedy are refused. */
  private async runTorch(flags: { run: string; step?: number; prompt: string; 'max-tokens': number; cache?: string; seed: number }, sampling: SamplingOptions, settings: Parameters<typeof generateWithTorch>[0]): Promise<GenerateCommandResult> {
    if (sampling.temperature !== 0 || sampling.topK !== 0 || sampling.topP !== 1) {
      throw new UserError('--temperature: the torch engine decodes greedily (--temperature 0, no --top-k or --top-p); sample with --engine tfjs');
    }
    const where = resolveModelFolder(flags.run, flags.step);
    const { spec, tokenizer } = modelFolderInfo(where.dir);
    const streaming = !this.jsonEnabled();
    const r = await generateWithTorch(settings, { dir: where.dir, spec, tokenizer }, flags.prompt, {
      maxTokens: flags['max-tokens'],
      cache: flags.cache,
      onText: streaming ? (text) => process.stdout.write(text) : undefined,
    });
    const backend = `torch ${r.device}, ${r.attention === 'fused' ? 'fused Triton attention' : 'PyTorch attention'}`;
    if (streaming) this.summarise(r, backend);
    return { ...this.result(where.dir, where.step, 'torch', r.device, flags, sampling, r), attention: r.attention };
  }

  private summarise(r: GenerateResult, backend: string): void {
    process.stdout.write('\n');
    const perToken = r.msPerToken === null ? '' : `, ${r.msPerToken.toFixed(1)} ms/token`;
    process.stderr.write(`[${r.tokens.length} tokens, stopped at ${r.stopped}; cache ${r.cache}; prefill ${r.promptTokens.length} tokens in ${r.prefillMs.toFixed(1)} ms${perToken}; ${backend}]\n`);
  }

  private result(
    checkpoint: string,
    step: number | null,
    engine: 'tfjs' | 'torch',
    backend: string,
    flags: { prompt: string; seed: number },
    sampling: SamplingOptions,
    r: GenerateResult,
  ): GenerateCommandResult {
    return {
      checkpoint,
      step,
      engine,
      backend,
      prompt: flags.prompt,
      prompt_tokens: r.promptTokens.length,
      tokens: r.tokens,
      text: r.text,
      cache: r.cache,
      cache_shapes: r.cacheShapes,
      stopped: r.stopped,
      seed: flags.seed,
      sampling,
      timings: { prefill_ms: r.prefillMs, ms_per_token: r.msPerToken, total_ms: r.totalMs },
    };
  }
}
