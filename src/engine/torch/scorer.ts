/**
 * The torch engine's `OpenScorer`: one long-lived `python -m mlactl_torch score` process per checkpoint, asked for
 * per-token log-probabilities of batches of token sequences (python/PROTOCOL.md, "Scoring"). Tasks, metrics and
 * result files stay in TypeScript, so results are the same files whichever engine scored them.
 */
import { spawn } from 'child_process';
import type { Config, EngineConfig } from '../../config/types';
import { UserError } from '../../errors';
import type { OpenScorer, TokenScores } from '../../eval/types';
import { modelFolderInfo } from '../../runfolder/checkpoint';
import { pythonEnv, requireTorch } from './index';

/** For run folders written before `engine` was a config key: the torch settings scoring needs. */
export const SCORING_ENGINE_DEFAULTS: EngineConfig = { name: 'torch', python: '', gpus: 1, precision: 'fp32', compile: 'off', threads: 0, device: 'auto' };

export function torchScorers(cfg: Pick<Config, 'engine'>): OpenScorer {
  const python = requireTorch(cfg).python;
  return async (dir, opts) => {
    // config.json checked here too, so a bad folder is refused before a process starts; its tokenizer is the text's.
    // The weights are the scoring process's to read (and check): reading them here too would double the load time.
    const { spec, tokenizer } = modelFolderInfo(dir);
    const precision = cfg.engine.precision === 'bf16' ? 'bf16' : 'fp32';
    const maxSeqLen = Math.min(opts.window, spec.maxSeqLen) + 1;
    // Compiling the blocks took about 22 s on an H200 and pays off only past about 50k four-choice items
    // (bench/NOTES.md), so scoring compiles only when the config says `on`, never for `auto`.
    const compile = cfg.engine.compile === 'on' ? 'on' : 'off';
    const args = ['score', '--model', dir, '--device', cfg.engine.device, '--precision', precision, '--threads', String(cfg.engine.threads), '--compile', compile];
    // The process cuts each request into forward passes sized to its memory; on CUDA it suggests larger requests.
    args.push('--batch-size', String(opts.batchSize), '--window', String(maxSeqLen));
    const child = spawn(python, ['-m', 'mlactl_torch', ...args], {
      env: pythonEnv(),
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    const waiting = new Map<number, (m: Record<string, unknown>) => void>();
    let ready: (m: Record<string, unknown>) => void = () => undefined;
    const started = new Promise<Record<string, unknown>>((resolve) => (ready = resolve));
    let pending = '';
    let failure: string | undefined;
    child.stdout!.on('data', (d: Buffer) => {
      const lines = (pending + d.toString()).split('\n');
      pending = lines.pop()!;
      for (const line of lines) {
        if (!line.trim()) continue;
        const m = JSON.parse(line) as Record<string, unknown>;
        if (m.event === 'ready' || m.event === 'error') ready(m);
        else waiting.get(m.id as number)?.(m);
      }
    });
    child.on('close', (code) => {
      failure = `the torch scorer for ${dir} exited with code ${code}`;
      ready({ event: 'error', message: failure });
      for (const f of waiting.values()) f({ error: failure });
    });
    const hello = await started;
    if (hello.event === 'error') throw new UserError(String(hello.message));
    let nextId = 0;
    return {
      tokenizer,
      maxSeqLen,
      windowKey: opts.windowKey,
      source: dir,
      batchSize: typeof hello.batch_size === 'number' && hello.batch_size > opts.batchSize ? hello.batch_size : opts.batchSize,
      // Requests filled to the process's own pass size (short items: thousands of sequences, not a batch sized for
      // full windows), and the next one already queued while this side decodes an answer: on an H200, 10k
      // four-choice items scored at 236 items/s with neither, 331 with both (bench/NOTES.md).
      tokenBudget: typeof hello.token_budget === 'number' ? hello.token_budget : undefined,
      inFlight: 2,
      packsPrefixes: hello.packs_prefixes === true,
      scoreSequences(seqs: number[][], from?: number[]): Promise<TokenScores[]> {
        if (failure) return Promise.reject(new Error(failure));
        const id = nextId++;
        return new Promise((resolve, reject) => {
          waiting.set(id, (m) => {
            waiting.delete(id);
            if (m.error) return reject(new Error(String(m.error)));
            const results = m.results as { logprobs: number[]; greedy: number[] }[];
            resolve(results.map((r) => ({ logprobs: Float64Array.from(r.logprobs), greedy: Uint8Array.from(r.greedy, Number) })));
          });
          child.stdin!.write(JSON.stringify(from ? { id, seqs, from } : { id, seqs }) + '\n');
        });
      },
      dispose() {
        child.stdin!.end();
      },
    };
  };
}
