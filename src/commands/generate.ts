import { Flags } from '@oclif/core';
import { initBackend } from '../backend';
import { backendFlag, MlactlCommand } from '../cli/base';
import { UserError } from '../errors';
import { generate, type SamplingOptions } from '../inference/generate';
import { loadRunModel } from '../inference/scoring';
import { CACHE_KINDS, type CacheKind } from '../model/spec';

export interface GenerateCommandResult {
  checkpoint: string;
  step: number | null;
  backend: string;
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
  ];

  static override flags = {
    run: Flags.string({ description: 'run folder (newest checkpoint, or --step) or checkpoint folder', required: true }),
    step: Flags.integer({ description: 'the checkpoint of this training step', min: 0 }),
    prompt: Flags.string({ description: 'text to continue (empty: start a new document)', default: '' }),
    'max-tokens': Flags.integer({ description: 'tokens to generate at most (stops early at end of text)', default: 64 }),
    temperature: Flags.string({ description: 'softmax temperature; 0 is greedy', default: '1' }),
    'top-k': Flags.integer({ description: 'sample among the k most likely tokens (0: all)', default: 0 }),
    'top-p': Flags.string({ description: 'sample among the most likely tokens totalling probability p (1: all)', default: '1' }),
    seed: Flags.integer({ description: 'seeds the sampler: the same seed gives the same text', default: 0 }),
    cache: Flags.string({ description: `decode cache: ${CACHE_KINDS.join(', ')} (default: latent+invrms for qk-norm, latent otherwise)` }),
    backend: backendFlag({ default: 'auto' }),
  };

  async run(): Promise<GenerateCommandResult> {
    const { flags } = await this.parse(Generate);
    const sampling: SamplingOptions = {
      temperature: parseNumber('--temperature', flags.temperature),
      topK: flags['top-k'],
      topP: parseNumber('--top-p', flags['top-p']),
    };
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
      if (streaming) {
        process.stdout.write('\n');
        const perToken = r.msPerToken === null ? '' : `, ${r.msPerToken.toFixed(1)} ms/token`;
        process.stderr.write(`[${r.tokens.length} tokens, stopped at ${r.stopped}; cache ${r.cache}; prefill ${r.promptTokens.length} tokens in ${r.prefillMs.toFixed(1)} ms${perToken}; ${backend.name}]\n`);
      }
      return {
        checkpoint: model.ckptDir,
        step: model.step,
        backend: backend.name,
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
    } finally {
      model.dispose();
    }
  }
}
