import * as path from 'path';
import { Flags } from '@oclif/core';
import { configFlags, configOverrides, engineFlags, MlactlCommand } from '../cli/base';
import { loadConfig } from '../config/load';
import { UserError } from '../errors';
import { expandArms, isExperiment, runExperiment, type ExperimentResult } from '../train/experiment';
import { jsonlProgress, PROGRESS_JSONL_ENV, silentProgress, terminalProgress } from '../train/progress';
import type { RunSummary } from '../runfolder/types';
import { EXIT_DIVERGED, SIGNAL_EXIT_CODES } from '../exit-codes';
import { trainRun } from '../train/run';

export type TrainCommandResult = { kind: 'run'; dir: string; summary: RunSummary } | { kind: 'experiment'; result: ExperimentResult };

export default class Train extends MlactlCommand<TrainCommandResult> {
  static override description = 'Train a model (or every arm of an experiment) on a token budget into a run folder';

  static override examples = [
    '<%= config.bin %> train --config configs/models/demo.yaml',
    '<%= config.bin %> train --config configs/experiments/demo.yaml --jobs 2',
    '<%= config.bin %> train --config configs/models/tiny.yaml --set train.lr=1e-2 --set model.variant=qk-clip',
  ];

  static override flags = {
    ...configFlags,
    ...engineFlags,
    config: Flags.string({ char: 'c', description: 'YAML config file', required: true }),
    out: Flags.string({ description: 'folder that holds run folders', default: 'runs' }),
    'run-dir': Flags.string({ description: 'exact run folder (single runs; default <out>/<name>)' }),
    resume: Flags.boolean({ description: 'continue from the newest complete checkpoint' }),
    force: Flags.boolean({ description: 'delete an existing run folder and start over' }),
    jobs: Flags.integer({ description: 'experiment arms trained in parallel processes', default: 1, min: 1 }),
    arm: Flags.string({ description: 'train only this arm of an experiment' }),
    'stop-after-steps': Flags.integer({ description: 'stop (interrupted, with a checkpoint) after this many optimizer steps in total; 0 initialises the run and writes step 0 only', min: 0 }),
  };

  async run(): Promise<TrainCommandResult> {
    const { flags } = await this.parse(Train);
    const sets = configOverrides(flags);
    const cfg = loadConfig(flags.config, sets);
    const progress = process.env[PROGRESS_JSONL_ENV]
      ? jsonlProgress()
      : this.jsonEnabled() ? silentProgress : terminalProgress(process.stderr, cfg.train.log_every_steps);

    if (isExperiment(cfg) && !flags.arm) {
      const dir = path.join(flags.out, cfg.name);
      const result = await runExperiment({
        config: cfg,
        dir,
        resume: flags.resume,
        force: flags.force,
        jobs: flags.jobs,
        progress,
        childArgs: (arm) => [
          'train', '--config', flags.config, ...sets.flatMap((s) => ['--set', s]), '--arm', arm.name, '--out', flags.out,
          ...(flags.resume ? ['--resume'] : []), ...(flags.force ? ['--force'] : []),
        ],
      });
      progress.stop();
      for (const a of result.arms) this.say(`${a.name.padEnd(24)} ${a.status.padEnd(12)} ${a.summary?.final_val_loss?.toFixed(4) ?? a.error ?? ''}`);
      this.say(`experiment folder: ${dir}`);
      if (result.stopSignal) process.exitCode = SIGNAL_EXIT_CODES[result.stopSignal];
      else if (result.arms.some((a) => a.status === 'failed')) process.exitCode = 1;
      else if (result.arms.some((a) => a.status === 'diverged')) process.exitCode = EXIT_DIVERGED;
      return { kind: 'experiment', result };
    }

    let runCfg = cfg;
    let runDir = flags['run-dir'] ?? path.join(flags.out, cfg.name);
    let experiment: string | null = null;
    if (flags.arm) {
      const arm = expandArms(cfg).find((a) => a.name === flags.arm);
      if (!arm) throw new UserError(`--arm ${flags.arm}: no such arm (arms: ${expandArms(cfg).map((a) => a.name).join(', ')})`);
      runCfg = arm.config;
      runDir = path.join(flags.out, cfg.name, arm.name);
      experiment = cfg.name;
    }
    const r = await trainRun({
      config: runCfg,
      runDir,
      resume: flags.resume,
      force: flags.force,
      arm: flags.arm,
      experiment,
      progress,
      stopAfterSteps: flags['stop-after-steps'],
    });
    const s = r.summary;
    this.say(`${s.status}: step ${s.step}/${s.total_steps}, train loss ${s.final_train_loss?.toFixed(4)}, val loss ${s.final_val_loss?.toFixed(4) ?? '-'}, run folder ${r.runDir}`);
    if (r.exitCode) process.exitCode = r.exitCode;
    return { kind: 'run', dir: r.runDir, summary: s };
  }
}
