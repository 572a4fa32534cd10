/**
 * The torch engine, from the TypeScript side: find an interpreter with PyTorch, write the job file
 * (python/PROTOCOL.md), start `python -m mlactl_torch train` (or torchrun with one process per GPU) and turn the
 * JSON lines it prints into the same events the tfjs engine emits. The Python package owns the training step and
 * its checkpoints; the run folder's other files stay the orchestrator's.
 */
import { spawn, spawnSync, type ChildProcess } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import type { Config } from '../../config/types';
import type { TokenSegment, TokenStore } from '../../data/batches';
import { UserError } from '../../errors';
import { childExitCode } from '../../exit-codes';
import { PACKAGE_ROOT } from '../../paths';
import type { EngineInfo } from '../../runfolder/types';
import type { StopRequest, TrainEvent, TrainingEngine, TrainJob, TrainOutcome } from '../types';

export const PYTHON_PACKAGE_DIR = path.join(PACKAGE_ROOT, 'python');

/** What `python -m mlactl_torch info` reports about an interpreter. */
export interface TorchProbe {
  /** The interpreter as named by the config, $MLACTL_PYTHON or the PATH search. */
  python: string;
  /** Its version (sys.version), as it reported it. */
  python_version?: string;
  executable?: string;
  torch: string | null;
  usable: boolean;
  reason?: string;
  cuda_available?: boolean;
  cuda?: string | null;
  device_count?: number;
  device_names?: string[];
  cores?: number;
}

/** The environment of every `python -m mlactl_torch` child: this repo's package importable, output unbuffered. */
export function pythonEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const pythonPath = [PYTHON_PACKAGE_DIR, process.env.PYTHONPATH].filter(Boolean).join(path.delimiter);
  return { ...process.env, PYTHONPATH: pythonPath, PYTHONUNBUFFERED: '1', ...extra };
}

/** Interpreters to try, in order: the config's, $MLACTL_PYTHON, python3 on the PATH, then Debian's own. */
export function pythonCandidates(cfg: Pick<Config, 'engine'>): string[] {
  if (cfg.engine.python) return [cfg.engine.python];
  if (process.env.MLACTL_PYTHON) return [process.env.MLACTL_PYTHON];
  // Debian's python3-torch is visible to /usr/bin/python3 only; a pyenv or venv python3 first on the PATH may lack it.
  return ['python3', '/usr/bin/python3'];
}

const probes = new Map<string, TorchProbe>();

/** Asks one interpreter what it has (cached per process). Never throws: an unusable interpreter says why. */
export function probePython(python: string): TorchProbe {
  const cached = probes.get(python);
  if (cached) return cached;
  const r = spawnSync(python, ['-m', 'mlactl_torch', 'info'], { env: pythonEnv(), encoding: 'utf8', timeout: 120_000 });
  let probe: TorchProbe;
  if (r.error) {
    probe = { python, torch: null, usable: false, reason: `${python}: ${(r.error as NodeJS.ErrnoException).code === 'ENOENT' ? 'not found' : r.error.message}` };
  } else {
    try {
      const reported = JSON.parse(r.stdout.trim().split('\n').pop() ?? '') as Omit<TorchProbe, 'python_version'>;
      probe = { ...reported, python_version: reported.python, python };
      if (!probe.usable) probe.reason = `${python}: ${probe.reason ?? 'PyTorch is not usable'}`;
    } catch {
      probe = { python, torch: null, usable: false, reason: `${python}: \`python -m mlactl_torch info\` failed (${(r.stderr || '').trim().split('\n').pop() ?? `exit ${r.status}`})` };
    }
  }
  probes.set(python, probe);
  return probe;
}

/** The first candidate interpreter with a usable PyTorch, or the reasons each one failed. */
export function findTorch(cfg: Pick<Config, 'engine'>): { probe: TorchProbe } | { reasons: string[] } {
  const reasons: string[] = [];
  for (const python of pythonCandidates(cfg)) {
    const probe = probePython(python);
    if (probe.usable) return { probe };
    reasons.push(probe.reason ?? `${python}: unusable`);
  }
  return { reasons };
}

/** The interpreter to use, or a one-line refusal (exit 2) listing every interpreter tried and why it failed. */
export function requireTorch(cfg: Pick<Config, 'engine'>): TorchProbe {
  const found = findTorch(cfg);
  if ('reasons' in found) {
    throw new UserError(`engine.name: torch needs an interpreter with PyTorch >= 1.13: ${found.reasons.join('; ')} (set engine.python or MLACTL_PYTHON)`);
  }
  return found.probe;
}

/** Token streams the engine can map: shard segments as they are, in-memory streams written once to a file. */
function segmentsOf(store: TokenStore, name: string, scratch: string, vocab: number): TokenSegment[] {
  if (store.segments) return store.segments;
  const dtype = vocab <= 65536 ? 'uint16' : 'uint32';
  const file = path.join(scratch, `${name}.${dtype}`);
  const chunk = 1 << 20;
  const fd = fs.openSync(file, 'w');
  try {
    for (let at = 0; at < store.length; at += chunk) {
      const ids = store.read(at, Math.min(chunk, store.length - at));
      const out = dtype === 'uint16' ? Uint16Array.from(ids) : Uint32Array.from(ids);
      fs.writeSync(fd, new Uint8Array(out.buffer, out.byteOffset, out.byteLength));
    }
  } finally {
    fs.closeSync(fd);
  }
  return [{ path: file, dtype, offset_tokens: 0, tokens: store.length }];
}

/** The config as the Python side reads it: `engine.compile` as true / false / "auto". */
function jobConfig(cfg: Config): unknown {
  const compile = cfg.engine.compile === 'on' ? true : cfg.engine.compile === 'off' ? false : 'auto';
  return { ...cfg, engine: { ...cfg.engine, compile } };
}

function writeJobFile(job: TrainJob, scratch: string): string {
  const file = path.join(scratch, 'job.json');
  const s = job.spec;
  const finite = (n: number) => (Number.isFinite(n) ? n : 0);
  const body = {
    format: 'mlactl-torch-job/1',
    config: jobConfig(job.cfg),
    spec: {
      variant: s.variant, vocab: s.vocab, d: s.d, L: s.L, H: s.H, dq: s.dq, dc: s.dc, dn: s.dn, dr: s.dr, dv: s.dv, dff: s.dff, G: s.G,
      scope: s.scope, qk_eps: s.qkEps, norm_eps: s.normEps, rope_theta: s.ropeTheta, max_seq_len: s.maxSeqLen, tied: s.tied, init_std: s.initStd,
    },
    run_dir: path.resolve(job.runDir),
    resume_from: job.resumeFrom ? path.resolve(job.resumeFrom) : null,
    stop_after_steps: job.stopAfterSteps,
    plan: { total_steps: job.plan.totalSteps, warmup_steps: job.plan.warmupSteps, tokens_per_step: job.plan.tokensPerStep },
    data: {
      train: segmentsOf(job.data.train, 'train', scratch, s.vocab),
      val: job.valStarts.length ? segmentsOf(job.data.val, 'val', scratch, s.vocab) : [],
    },
    val_starts: job.valStarts,
    tokenizer: job.tokenizer,
    // 0 on the Python side means "only at the end of the run".
    every: { eval_steps: finite(job.every.evalSteps), ckpt_steps: finite(job.every.ckptSteps), maxlogit_steps: finite(job.every.maxlogitSteps) },
  };
  fs.writeFileSync(file, JSON.stringify(body));
  return file;
}

/** Python writes non-finite numbers as strings ("NaN", "Infinity"); Number() reads them back. */
const num = (v: unknown): number => (typeof v === 'number' ? v : Number(v));

/** The launcher: one process, or torchrun with one process per GPU on this host (rendezvous flags pass through). */
function launchCommand(python: string, cfg: Config, jobFile: string): { command: string; args: string[] } {
  const module = ['-m', 'mlactl_torch', 'train', '--job', jobFile];
  if (cfg.engine.gpus <= 1) return { command: python, args: module };
  const extra = (process.env.MLACTL_TORCHRUN_ARGS ?? '').split(/\s+/).filter(Boolean);
  const rendezvous = extra.length ? extra : ['--standalone'];
  return { command: python, args: ['-m', 'torch.distributed.run', ...rendezvous, `--nproc_per_node=${cfg.engine.gpus}`, ...module] };
}

export const torchEngine: TrainingEngine = {
  name: 'torch',

  async prepare(job: TrainJob): Promise<EngineInfo> {
    const probe = requireTorch(job.cfg);
    const gpus = job.cfg.engine.gpus;
    if (gpus > 1 && (probe.device_count ?? 0) < gpus) {
      throw new UserError(`engine.gpus: ${gpus} processes asked for, but ${probe.python} sees ${probe.device_count ?? 0} CUDA device(s) on this host`);
    }
    const cuda = job.cfg.engine.device !== 'cpu' && !!probe.cuda_available;
    return {
      engine: 'torch',
      backend: cuda ? 'cuda' : 'cpu',
      reason: `engine.name ${job.cfg.engine.name}: ${probe.executable ?? probe.python} imports torch ${probe.torch}`,
      device: cuda ? (probe.device_names ?? []).join(', ') || 'cuda' : `cpu (${probe.cores ?? os.cpus().length} cores)`,
      versions: { torch: probe.torch ?? '', cuda: probe.cuda ?? '', python: probe.python_version ?? probe.python },
      world_size: gpus,
      precision: job.cfg.engine.precision === 'auto' ? (cuda ? 'bf16' : 'fp32') : job.cfg.engine.precision,
    };
  },

  async train(job: TrainJob, onEvent: (e: TrainEvent) => void, stop: StopRequest): Promise<TrainOutcome> {
    // Probes are cached per interpreter: this is the one prepare() found.
    const probe = requireTorch(job.cfg);
    const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'mlactl-torch-'));
    let child: ChildProcess | undefined;
    try {
      const jobFile = writeJobFile(job, scratch);
      const { command, args } = launchCommand(probe.python, job.cfg, jobFile);
      // Its own process group: a terminal's Ctrl-C reaches mlactl alone, which passes it on once (torchrun forwards
      // it to its workers); the engine then finishes the step, checkpoints and reports `interrupted`.
      child = spawn(command, args, { env: pythonEnv(), stdio: ['ignore', 'pipe', 'pipe'], detached: true });
      const running = child;
      stop.onRequest((signal) => running.kill(signal as NodeJS.Signals));
      let done: TrainOutcome | undefined;
      let error: string | undefined;
      let stderrTail = '';
      running.stderr!.on('data', (d: Buffer) => {
        stderrTail = (stderrTail + d.toString()).slice(-4000);
        process.stderr.write(d);
      });
      let pending = '';
      const handle = (line: string) => {
        if (!line.trim()) return;
        let e: Record<string, unknown>;
        try {
          e = JSON.parse(line) as Record<string, unknown>;
        } catch {
          return; // not an event: the engine moves stray prints to stderr, so this is only a torn line at a kill
        }
        switch (e.event) {
          case 'step':
            onEvent({
              event: 'step',
              step: num(e.step),
              tokens: num(e.tokens),
              lr: num(e.lr),
              train_loss: num(e.train_loss),
              grad_norm: num(e.grad_norm),
              max_logit_heads: Array.isArray(e.max_logit_heads) ? (e.max_logit_heads as unknown[][]).map((row) => row.map(num)) : null,
              heads_clipped: num(e.heads_clipped),
              batch_hash: String(e.batch_hash),
              val_loss: e.val_loss === null || e.val_loss === undefined ? null : num(e.val_loss),
              elapsed_s: num(e.elapsed_s),
            });
            break;
          case 'checkpoint':
            onEvent({ event: 'checkpoint', step: num(e.step), dir: String(e.dir), initial: num(e.step) === 0 && !job.resumeFrom });
            break;
          case 'done':
            done = { status: e.status as TrainOutcome['status'], step: num(e.step) };
            break;
          case 'error':
            error = String(e.message);
            break;
          default:
            break; // ready, val: the step event carries what the run folder needs
        }
      };
      running.stdout!.on('data', (d: Buffer) => {
        const lines = (pending + d.toString()).split('\n');
        pending = lines.pop()!;
        for (const line of lines) handle(line);
      });
      const code = await new Promise<number>((resolve) => {
        running.on('close', (c, signal) => resolve(childExitCode(c, signal)));
        running.on('error', () => resolve(1));
      });
      if (pending) handle(pending);
      if (error) throw new UserError(error, code === 2 ? 2 : 1);
      if (!done) throw new Error(`the torch engine exited with code ${code} before reporting an end: ${stderrTail.trim().split('\n').pop() ?? ''}`);
      return done;
    } finally {
      if (child && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      fs.rmSync(scratch, { recursive: true, force: true });
    }
  },
};
