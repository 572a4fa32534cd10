/**
 * The torch engine's decode commands, from the TypeScript side (python/PROTOCOL.md, "Decoding"): `generate`,
 * `verify` and `bench-decode` of `python -m mlactl_torch`, each a child process that prints one JSON object. The
 * CLI keeps tokenizing, flag checking, tables and result files; the Python side owns the caches and kernels.
 */
import { spawn } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import YAML from 'yaml';
import type { Config, EngineChoice, EngineConfig } from '../../config/types';
import { UserError } from '../../errors';
import { findTorch, pythonEnv, requireTorch } from './index';
import { SCORING_ENGINE_DEFAULTS } from './scorer';

export type InferenceEngine = 'tfjs' | 'torch';

/** The run's config.resolved.yaml for a run folder or one of its ckpt/step-N folders, if there is one. */
export function runConfigNear(dir: string): Partial<Config> | null {
  for (const candidate of [dir, path.join(dir, '..', '..')]) {
    const file = path.join(candidate, 'config.resolved.yaml');
    if (fs.existsSync(file)) {
      try {
        return YAML.parse(fs.readFileSync(file, 'utf8')) as Partial<Config>;
      } catch {
        throw new UserError(`${file}: not valid YAML`);
      }
    }
  }
  return null;
}

/**
 * Who runs an inference command: `--engine` when given, else the config's `engine.name` (`auto`: torch when an
 * interpreter imports PyTorch, else tfjs), else tfjs. Returns the torch settings too (the config's, with scoring
 * defaults for keys an older run folder lacks).
 */
export function inferenceEngine(flag: EngineChoice | undefined, cfg: Partial<Pick<Config, 'engine'>> | null): { engine: InferenceEngine; settings: EngineConfig; reason: string } {
  const settings: EngineConfig = { ...SCORING_ENGINE_DEFAULTS, ...(cfg?.engine ?? {}), name: 'torch' };
  const asked = flag ?? cfg?.engine?.name ?? 'tfjs';
  if (asked === 'auto') {
    const found = findTorch({ engine: settings });
    return 'probe' in found
      ? { engine: 'torch', settings, reason: `engine auto: ${found.probe.python} imports torch ${found.probe.torch}` }
      : { engine: 'tfjs', settings, reason: `engine auto: no PyTorch (${found.reasons.join('; ')}), so tfjs` };
  }
  return { engine: asked, settings, reason: flag ? `--engine ${flag}` : `engine.name ${asked}` };
}

/**
 * Run `python -m mlactl_torch <args>`: its stderr (progress, warnings) passes through; its stdout's last line is
 * the result. An `error` event becomes a one-line UserError with the child's exit code (2: bad input).
 */
export function runTorchCommand<T>(settings: EngineConfig, args: string[], onStderr: (text: string) => void = (t) => process.stderr.write(t)): Promise<T> {
  const python = requireTorch({ engine: settings }).python;
  const threads = settings.threads > 0 ? ['--threads', String(settings.threads)] : [];
  const device = args[0] === 'selftest-decode' ? [] : ['--device', settings.device, ...threads];
  const child = spawn(python, ['-m', 'mlactl_torch', ...args, ...device], { env: pythonEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderrTail = '';
  child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr!.on('data', (d: Buffer) => {
    stderrTail = (stderrTail + d.toString()).slice(-4000);
    onStderr(d.toString());
  });
  return new Promise<T>((resolve, reject) => {
    child.on('error', (e) => reject(new UserError(`${python}: ${e.message}`)));
    child.on('close', (code) => {
      const last = stdout.trim().split('\n').pop() ?? '';
      let message: Record<string, unknown> | undefined;
      try {
        message = JSON.parse(last) as Record<string, unknown>;
      } catch {
        message = undefined;
      }
      if (message?.event === 'error') return reject(new UserError(String(message.message), code === 2 ? 2 : 1));
      if (code !== 0 || message?.event !== 'result') {
        return reject(new Error(`python -m mlactl_torch ${args[0]} exited with code ${code}: ${stderrTail.trim().split('\n').pop() ?? ''}`));
      }
      resolve(message as T);
    });
  });
}

export interface TorchGenerateResult {
  tokens: number[];
  stopped: 'eos' | 'max-tokens';
  cache: string;
  cache_shapes: Record<string, number[]>;
  attention: 'torch' | 'fused';
  device: string;
  prefill_ms: number;
  ms_per_token: number | null;
  total_ms: number;
}

/** Greedy tokens after `prompt` (ids) through the torch engine's decode cache. */
export function torchGenerate(settings: EngineConfig, dir: string, prompt: number[], o: { maxTokens: number; cache?: string; eos: number; vocabLimit: number }): Promise<TorchGenerateResult> {
  const args = ['generate', '--model', dir, '--prompt', prompt.join(','), '--max-tokens', String(o.maxTokens), '--eos', String(o.eos), '--vocab-limit', String(o.vocabLimit)];
  if (o.cache) args.push('--cache', o.cache);
  return runTorchCommand<TorchGenerateResult>(settings, args);
}
