// The tiny sweep (configs/sweeps/tiny.yaml: 3 variants x 3 learning rates x 2 seeds) through both executors: the
// local one, and a real one-node Slurm cluster started by test/slurm/start-cluster.sh (installed with apt when
// missing and running as root). Training is deterministic, so both must leave the same final losses run by run,
// including a run whose training process is killed mid-way and finished by `sweep resume` from its checkpoint.
// Then the two ways a Slurm task is stopped: scancel (every process gets SIGTERM) and the signal before the time
// limit (the batch shell gets USR1, stops the run and requeues the task).
//
// Where Slurm cannot start the Slurm tests fail with the script's reason; only when this is not root and Slurm is
// not installed (so the script could neither install nor start it) are they skipped, with the reason in their names.
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import type { RunSummary } from '../../src/runfolder/types';
import type { SweepStatus } from '../../src/sweep/status';
import type { SweepOutcome } from '../../src/sweep/sweep';
import type { RunExit, SlurmJobsFile } from '../../src/sweep/types';
import { runMlactl as mlactl } from '../cli';

const ROOT = path.resolve(__dirname, '../..');
const TINY_SWEEP = path.join(ROOT, 'configs/sweeps/tiny.yaml');

const hasCommand = (cmd: string) => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
const SKIP_REASON = process.getuid?.() !== 0 && !hasCommand('sbatch')
  ? 'not root and Slurm is not installed, so test/slurm/start-cluster.sh can neither install nor start a cluster (Debian: apt-get install slurm-wlm munge, then run it as root)'
  : null;
if (SKIP_REASON) console.warn(`test/sweep/slurm.test.ts: the Slurm tests are skipped: ${SKIP_REASON}`);
const slurmTest = (name: string, fn: () => Promise<void>, timeout: number) =>
  SKIP_REASON ? test.skip(`${name} [skipped: ${SKIP_REASON}]`, fn) : test(name, fn, timeout);

/**
 * Runs a Slurm command that must succeed and returns its output. The environment is passed explicitly: jest's
 * `process.env` is the test's own copy, which is where beforeAll put SLURM_CONF.
 */
function slurmCommand(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', env: process.env });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: exit ${r.status}: ${r.stderr}${r.stdout}`);
  return r.stdout;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const readJson = <T>(file: string): T => JSON.parse(fs.readFileSync(file, 'utf8')) as T;
const metricsSteps = (runDir: string): number[] => {
  try {
    return fs.readFileSync(path.join(runDir, 'metrics.jsonl'), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l).step as number);
  } catch {
    return [];
  }
};
const lastStep = (runDir: string) => metricsSteps(runDir).pop() ?? 0;
const losses = (status: SweepStatus) => Object.fromEntries(status.runs.map((r) => [r.id, [r.final_train_loss, r.final_val_loss]]));

async function until(what: string, cond: () => boolean, timeoutMs: number, everyMs = 50): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs / 1000} s waiting until ${what}`);
    await sleep(everyMs);
  }
}

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mlactl-sweep-exec-'));
let localLosses: Record<string, (number | null)[]> | null = null;

beforeAll(() => {
  if (!fs.existsSync(path.join(ROOT, 'dist/commands/sweep/run.js'))) throw new Error('dist/commands/sweep/run.js is missing: build first with `npm run build`');
});

afterAll(() => {
  // A test that failed half-way may leave tasks queued: cancel the jobs this file submitted before their folders go.
  const jobs = fs.readdirSync(tmp).flatMap((d) => {
    const file = path.join(tmp, d, 'slurm', 'jobs.json');
    return fs.existsSync(file) ? readJson<SlurmJobsFile>(file).submissions.map((s) => s.job_id) : [];
  });
  if (jobs.length && !SKIP_REASON) spawnSync('scancel', jobs, { env: process.env });
  fs.rmSync(tmp, { recursive: true, force: true });
});

test('the tiny sweep through the local executor: 18 runs, two at a time, each its own run folder', async () => {
  const dir = path.join(tmp, 'local');
  const r = await mlactl(['sweep', 'run', TINY_SWEEP, '--executor', 'local', '--jobs', '2', '--sweep-dir', dir, '--json']);
  expect(r.stderr).not.toMatch(/failed/);
  expect(r.code).toBe(0);
  const outcome: SweepOutcome = JSON.parse(r.stdout);
  expect(outcome.runs).toHaveLength(18);
  const status = outcome.status!;
  expect(status.counts).toEqual({ completed: 18 });
  for (const run of status.runs) {
    expect(run).toMatchObject({ state: 'completed', step: 32, total_steps: 32, exit_code: 0 });
    // Exactly what `train --run-dir` writes, where compare will look for it.
    const runDir = path.join(dir, 'runs', run.id);
    for (const f of ['config.resolved.yaml', 'manifest.json', 'metrics.jsonl', 'summary.json']) expect(fs.existsSync(path.join(runDir, f))).toBe(true);
    expect(readJson<RunSummary>(path.join(runDir, 'summary.json'))).toMatchObject({ arm: run.id, variant: run.overrides['model.variant'], lr: run.overrides['train.lr'], seed: run.overrides.seed });
  }
  localLosses = losses(status);
  // The axes matter: learning rates and seeds change the losses.
  expect(new Set(Object.values(localLosses).map((l) => l[0])).size).toBeGreaterThan(9);
}, 600000);

describe('Slurm', () => {
  beforeAll(() => {
    if (SKIP_REASON) return;
    const r = spawnSync('bash', [path.join(ROOT, 'test/slurm/start-cluster.sh')], { encoding: 'utf8', timeout: 900000 });
    const conf = /^SLURM_CONF=(.+)$/m.exec(r.stdout ?? '');
    if (r.status !== 0 || !conf) {
      const why = (r.stderr ?? '').split('\n').filter((l) => l.startsWith('start-cluster:')).pop() ?? `exit ${r.status}${r.error ? ` (${r.error.message})` : ''}`;
      throw new Error(`Slurm could not be started for these tests: ${why}`);
    }
    process.env.SLURM_CONF = conf[1];
  }, 900000);

  // Every job the controller knows, finished ones included (MinJobAge keeps them ten minutes).
  const jobIds = () => new Set(slurmCommand('squeue', ['-h', '-t', 'all', '-o', '%i']).split('\n').filter(Boolean));

  slurmTest('Slurm options that sbatch rejects, or GPUs that are not asked for: one line, exit 2, no folder, no job', async () => {
    const cases: [string, RegExp][] = [
      ['slurm: {partition: no-such-partition}', /^mlactl: slurm: sbatch rejects the sweep's batch job: .*invalid partition/i],
      ['slurm: {gres: "gpu:1"}', /^mlactl: slurm: sbatch rejects the sweep's batch job: .*gres/i],
      ['slurm: {time: "soon"}', /^mlactl: slurm: sbatch rejects the sweep's batch job: .*time/i],
      ['set: {engine.name: torch, engine.gpus: 2}', /^mlactl: slurm\.gres: the runs start 2 processes \(engine\.gpus\), one per GPU, but no GPUs are requested/],
    ];
    const jobsBefore = jobIds();
    for (const [extra, pattern] of cases) {
      const file = path.join(tmp, `bad-${cases.findIndex((c) => c[0] === extra)}.yaml`);
      fs.writeFileSync(file, `base: ${path.join(ROOT, 'configs/models/tiny.yaml')}\naxes: {seed: [0, 1]}\n${extra}\n`);
      const dir = path.join(tmp, 'refused');
      const r = await mlactl(['sweep', 'run', file, '--executor', 'slurm', '--sweep-dir', dir]);
      const lines = r.stderr.split('\n').filter((l) => l.trim());
      expect({ extra, code: r.code, lines: lines.length }).toEqual({ extra, code: 2, lines: 1 });
      expect(lines[0]).toMatch(pattern);
      expect(fs.existsSync(dir)).toBe(false);
    }
    expect([...jobIds()].filter((id) => !jobsBefore.has(id))).toEqual([]);
  }, 120000);

  slurmTest('the tiny sweep through Slurm equals the local run by run; a killed task is resumed from its checkpoint and nothing else is touched', async () => {
    if (!localLosses) throw new Error('the local executor test above left no results to compare with');
    const dir = path.join(tmp, 'slurm');
    const running = mlactl(['sweep', 'run', TINY_SWEEP, '--executor', 'slurm', '--jobs', '2', '--sweep-dir', dir, '--wait', '--json']);

    // Kill one run's training process mid-run (after its step-8 checkpoint), as an OOM killer or a crash would.
    const victim = 'qk-clip_lr1e-2_s0';
    const victimDir = path.join(dir, 'runs', victim);
    await until(`${victim} passes step 9`, () => lastStep(victimDir) >= 9, 300000, 20);
    const killedAt = lastStep(victimDir);
    expect(killedAt).toBeLessThan(30);
    const pid = Number(fs.readFileSync(path.join(victimDir, 'run.lock'), 'utf8'));
    expect(fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8')).toContain(`runs/${victim}`);
    process.kill(pid, 'SIGKILL');

    const first = await running;
    expect(first.code).toBe(1); // one run failed
    const afterRun: SweepOutcome = JSON.parse(first.stdout);
    expect(afterRun.submission).toMatchObject({ array: '0-17%2', reason: 'run' });
    expect(afterRun.status!.counts).toEqual({ completed: 17, failed: 1 });
    const killed = afterRun.status!.runs.find((r) => r.id === victim)!;
    expect(killed).toMatchObject({ state: 'failed', exit_code: 137, slurm: { state: 'FAILED' } });
    expect(fs.readFileSync(path.join(dir, 'slurm', 'sweep.sbatch'), 'utf8')).toMatch(/^#SBATCH --signal=B:USR1@60$/m);

    const others = afterRun.status!.runs.filter((r) => r.id !== victim).map((r) => path.join(dir, 'runs', r.id));
    const snapshot = () => others.map((d) => ['summary.json', 'metrics.jsonl', 'manifest.json'].map((f) => fs.statSync(path.join(d, f)).mtimeMs));
    const before = snapshot();

    const resumed = await mlactl(['sweep', 'resume', dir, '--wait', '--json']);
    expect(resumed.code).toBe(0);
    const outcome: SweepOutcome = JSON.parse(resumed.stdout);
    expect(outcome.runs).toEqual([victim]);
    const index = afterRun.status!.runs.findIndex((r) => r.id === victim);
    expect(outcome.submission).toMatchObject({ array: `${index}%2`, indices: [index], reason: 'resume' });
    expect(outcome.status!.counts).toEqual({ completed: 18 });
    expect(snapshot()).toEqual(before);
    expect(readJson<SlurmJobsFile>(path.join(dir, 'slurm', 'jobs.json')).submissions).toHaveLength(2);

    // It continued from a checkpoint of the killed attempt (step 8, 16 or 24, at most where it was killed).
    const log = fs.readFileSync(path.join(dir, 'logs', `${victim}.log`), 'utf8');
    const from = /resuming .* from ckpt\/step-(\d+) \(step (\d+)\)/.exec(log);
    expect(from).not.toBeNull();
    const step = Number(from![1]);
    expect(step).toBeGreaterThan(0);
    expect(step).toBeLessThanOrEqual(killedAt);
    expect(readJson<{ resumed_at: string[] }>(path.join(victimDir, 'manifest.json')).resumed_at).toHaveLength(1);
    expect(metricsSteps(victimDir)).toEqual(Array.from({ length: 32 }, (_, i) => i + 1));

    // The same results as the local executor, run by run, bit for bit: the killed and resumed run included.
    const slurmLosses = losses(outcome.status!);
    expect(Object.keys(slurmLosses).sort()).toEqual(Object.keys(localLosses).sort());
    for (const id of Object.keys(localLosses)) expect({ id, losses: slurmLosses[id] }).toEqual({ id, losses: localLosses[id] });
  }, 900000);

  slurmTest('scancel stops a task with a checkpoint (resume finishes it); the signal before the time limit checkpoints and requeues', async () => {
    const file = path.join(tmp, 'signals.yaml');
    // 160 steps per run, both running at once; checkpoints come from the signals alone.
    fs.writeFileSync(file, [
      `base: ${path.join(ROOT, 'configs/models/tiny.yaml')}`,
      'set: {backend: wasm, train.tokens: 20480, train.ckpt_every_tokens: 0, train.eval_every_tokens: 0}',
      'axes: {seed: [0, 1]}',
      "slurm: {time: '00:10:00', cpus_per_task: 1, signal_before_s: 60}",
      '',
    ].join('\n'));
    const dir = path.join(tmp, 'signals');
    const started = await mlactl(['sweep', 'run', file, '--executor', 'slurm', '--sweep-dir', dir, '--json']);
    expect(started.code).toBe(0);
    const job = (JSON.parse(started.stdout) as SweepOutcome).submission!.job_id;
    const runDir = (id: string) => path.join(dir, 'runs', id);
    await until('both runs pass step 10', () => lastStep(runDir('s0')) >= 10 && lastStep(runDir('s1')) >= 10, 300000, 20);

    // scancel: Slurm sends SIGTERM to every process of the task; train checkpoints after its step and exits 143.
    slurmCommand('scancel', [`${job}_0`]);
    // What --signal=B:USR1@60 does a minute before the time limit: USR1 to the batch shell alone.
    slurmCommand('scancel', ['--batch', '--signal=USR1', `${job}_1`]);

    const exitOf = (id: string): RunExit | null => (fs.existsSync(path.join(dir, 'exits', `${id}.json`)) ? readJson<RunExit>(path.join(dir, 'exits', `${id}.json`)) : null);
    await until('s1 was stopped and requeued', () => exitOf('s1')?.requeued === true, 120000);
    expect(exitOf('s1')!.exit_code).toBe(143);
    const s1Stopped = readJson<RunSummary>(path.join(runDir('s1'), 'summary.json'));
    expect(s1Stopped.status).toBe('interrupted');
    expect(s1Stopped.step).toBeGreaterThanOrEqual(10);
    // A requeued job waits out Slurm's requeue delay (about two minutes) before it may start again; the test lets it
    // start sooner. Not at once: slurmd refuses a batch job whose new credential dates from the second its old one
    // was revoked ("Job credential revoked"), so it is released a few seconds after it is pending again.
    const taskState = () => slurmCommand('squeue', ['-h', '-t', 'all', '-j', `${job}_1`, '-o', '%T']).trim();
    await until('s1 is pending again', () => taskState() === 'PENDING', 60000, 200);
    await sleep(3000);
    slurmCommand('scontrol', ['update', `JobId=${job}_1`, 'StartTime=now']);

    const status = async (): Promise<SweepStatus> => JSON.parse((await mlactl(['sweep', 'status', dir, '--json'])).stdout);
    let st = await status();
    const deadline = Date.now() + 300000;
    while (st.runs.some((r) => r.state === 'queued' || r.state === 'running') && Date.now() < deadline) {
      await sleep(1000);
      st = await status();
    }
    // s1 came back by itself and finished from its checkpoint; s0 was cancelled with one.
    expect(st.runs.map((r) => [r.id, r.state])).toEqual([['s0', 'cancelled'], ['s1', 'completed']]);
    expect(fs.readFileSync(path.join(dir, 'logs', 's1.log'), 'utf8')).toContain(`resuming ${runDir('s1')} from ckpt/step-${s1Stopped.step} (step ${s1Stopped.step})`);
    const s0 = readJson<RunSummary>(path.join(runDir('s0'), 'summary.json'));
    expect(s0.status).toBe('interrupted');
    expect(s0.step).toBeGreaterThanOrEqual(10);
    expect(fs.existsSync(path.join(runDir('s0'), 'ckpt', `step-${s0.step}`, 'state.json'))).toBe(true);
    expect(exitOf('s0')).toMatchObject({ exit_code: 143, requeued: false });

    const s1Summary = fs.statSync(path.join(runDir('s1'), 'summary.json')).mtimeMs;
    const resumed = await mlactl(['sweep', 'resume', dir, '--wait', '--json']);
    expect(resumed.code).toBe(0);
    const outcome: SweepOutcome = JSON.parse(resumed.stdout);
    expect(outcome.runs).toEqual(['s0']);
    expect(outcome.status!.counts).toEqual({ completed: 2 });
    expect(fs.readFileSync(path.join(dir, 'logs', 's0.log'), 'utf8')).toContain(`resuming ${runDir('s0')} from ckpt/step-${s0.step} (step ${s0.step})`);
    expect(fs.statSync(path.join(runDir('s1'), 'summary.json')).mtimeMs).toBe(s1Summary);
    expect(metricsSteps(runDir('s0'))).toEqual(Array.from({ length: 160 }, (_, i) => i + 1));
  }, 900000);
});
