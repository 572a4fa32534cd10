import { Args, Flags } from '@oclif/core';
import { MlactlCommand } from '../../cli/base';
import { countsLine } from '../../sweep/status';
import { statusLines } from '../../sweep/render';
import { startSweep, type SweepOutcome } from '../../sweep/sweep';
import { EXECUTORS } from '../../sweep/types';

export default class SweepRun extends MlactlCommand<SweepOutcome> {
  static override description = 'Train every run of a sweep: here in child processes (local) or as one Slurm job array (slurm)';

  static override examples = [
    '<%= config.bin %> sweep run configs/sweeps/tiny.yaml --executor local --jobs 2',
    '<%= config.bin %> sweep run configs/sweeps/lr-ladder.yaml --executor slurm --jobs 8',
    '<%= config.bin %> sweep run configs/sweeps/lr-ladder.yaml --executor slurm --wait',
  ];

  static override args = {
    sweep: Args.string({ description: 'sweep file (YAML: base, set, axes, slurm)', required: true }),
  };

  static override flags = {
    executor: Flags.option({ options: EXECUTORS, description: 'local: child processes here; slurm: one sbatch --array job', default: 'local' as const })(),
    jobs: Flags.integer({ description: 'runs at a time (local; default 1) or the Slurm array throttle %K (default slurm.throttle)', min: 1 }),
    out: Flags.string({ description: 'folder that holds sweep folders', default: 'runs' }),
    'sweep-dir': Flags.string({ description: 'exact sweep folder (default <out>/<name>)' }),
    force: Flags.boolean({ description: 'delete an existing sweep folder (none of its runs may be running) and start over' }),
    wait: Flags.boolean({ description: 'slurm: wait until every task has left the queue, then show the status' }),
  };

  async run(): Promise<SweepOutcome> {
    const { args, flags } = await this.parse(SweepRun);
    const note = (line: string) => process.stderr.write(`${line}\n`);
    const outcome = await startSweep({
      file: args.sweep, executor: flags.executor, jobs: flags.jobs, out: flags.out, dir: flags['sweep-dir'], force: flags.force, wait: flags.wait, note,
    });
    if (outcome.status) for (const line of statusLines(outcome.status, countsLine(outcome.status.counts))) this.say(line);
    else this.say(`sweep ${outcome.name}: submitted; \`mlactl sweep status ${outcome.dir}\` shows where the runs stand`);
    process.exitCode = outcome.exit_code;
    return outcome;
  }
}
