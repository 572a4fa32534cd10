/**
 * The torch engine's `OpenScorer`: one long-lived `python -m mlactl_torch score` process per checkpoint, asked for
 * per-token log-probabilities of batches of token sequences (python/PROTOCOL.md, "Scoring"). Tasks, metrics and
 * result files stay in TypeScript, so results are the same files whichever engine scored them.
 */
import { spawn } from 'child_process';
import type { Config, EngineConfig } from '../../config/types';
import { UserError } from '../../errors';
import type { CheckpointScorer, OpenScorer, TokenScores } from '../../eval/types';
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
    const child = spawn(python, ['-m', 'mlactl_torch', ...args], {
      env: pythonEnv(),
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    const waiting = new Map<number, (m: Record<string, unknown>) => void>();
    let hello: (m: Record<string, unknown>) => void = () => undefined;
    const greeted = new Promise<Record<string, unknown>>((resolve) => (hello = resolve));
    let pending = '';
    let failure: string | undefined;
    let isReady = false;
    child.stdout!.on('data', (d: Buffer) => {
      const lines = (pending + d.toString()).split('\n');
      pending = lines.pop()!;
      for (const line of lines) {
        if (!line.trim()) continue;
        const m = JSON.parse(line) as Record<string, unknown>;
        if (m.event === 'ready' || m.event === 'error') hello(m);
        else waiting.get(m.id as number)?.(m);
      }
    });
    const ended = (why: string) => {
      failure ??= why;
      hello({ event: 'error', message: failure });
      for (const f of waiting.values()) f({ error: failure });
    };
    child.on('error', (e) => ended(`the torch scorer for ${dir} could not start: ${e.message}`));
    child.on('close', (code) => ended(`the torch scorer for ${dir} exited with code ${code}`));
    let nextId = 0;
    // Returned before the process has imported torch and loaded the weights (about 4 s for paper-400m on an H200),
    // so the caller tokenizes meanwhile; the scoring limits are filled in when `ready` arrives.
    const scorer: CheckpointScorer = {
      tokenizer,
      maxSeqLen,
      windowKey: opts.windowKey,
      source: dir,
      // Requests are filled to the process's token budget (below): the batch size is only their minimum.
      batchSize: opts.batchSize,
      // The next request already queued while this side decodes an answer: on an H200, 10k four-choice items
      // scored at 236 items/s with neither this nor the budget, 331 with both (bench/NOTES.md).
      inFlight: 2,
      ready: () => started,
      scoreSequences(seqs: number[][], from?: number[]): Promise<TokenScores[]> {
        return started.then(() => {
          if (failure) throw new Error(failure);
          const id = nextId++;
          return new Promise<TokenScores[]>((resolve, reject) => {
            waiting.set(id, (m) => {
              waiting.delete(id);
              if (m.error) return reject(new Error(String(m.error)));
              const results = m.results as { logprobs: number[]; greedy: number[] }[];
              resolve(results.map((r) => ({ logprobs: Float64Array.from(r.logprobs), greedy: Uint8Array.from(r.greedy, Number) })));
            });
            child.stdin!.write(JSON.stringify(from ? { id, seqs, from } : { id, seqs }) + '\n');
          });
        });
      },
      dispose() {
        child.stdin!.end();
        if (!isReady) child.kill(); // still loading: no reason to let it finish
      },
    };
    const started = greeted.then((m) => {
      if (m.event === 'error') throw new UserError(String(m.message));
      isReady = true;
      // Requests filled to the process's own pass size (short items: thousands of sequences, not a batch sized
      // for full windows).
      if (typeof m.token_budget === 'number') scorer.tokenBudget = m.token_budget;
      scorer.packsPrefixes = m.packs_prefixes === true;
      return typeof m.ready_at === 'number' ? Math.round(m.ready_at * 1000) : Date.now();
    });
    started.catch(() => undefined); // the reason reaches whoever awaits ready() or scores, not the process
    return scorer;
  };
}
