import { Args, Flags } from '@oclif/core';
import { MlactlCommand } from '../../cli/base';
import { statusLines } from '../../sweep/render';
import { countsLine } from '../../sweep/status';
import { resumeSweep, type SweepOutcome } from '../../sweep/sweep';

export default class SweepResume extends MlactlCommand<SweepOutcome> {
  static override description = 'Train again the runs of a sweep that did not finish (interrupted, cancelled, failed, missing), each from its newest checkpoint';

  static override examples = ['<%= config.bin %> sweep resume runs/lr-ladder', '<%= config.bin %> sweep resume runs/lr-ladder --jobs 4 --wait'];

  static override args = {
    dir: Args.string({ description: 'sweep folder (holds sweep.json)', required: true }),
  };

  static override flags = {
    jobs: Flags.integer({ description: 'runs at a time (local; default 1) or the Slurm array throttle %K (default: as the sweep was started)', min: 1 }),
    wait: Flags.boolean({ description: 'slurm: wait until every task has left the queue, then show the status' }),
  };

  async run(): Promise<SweepOutcome> {
    const { args, flags } = await this.parse(SweepResume);
    const note = (line: string) => process.stderr.write(`${line}\n`);
    const outcome = await resumeSweep({ dir: args.dir, jobs: flags.jobs, wait: flags.wait, note });
    if (outcome.status) for (const line of statusLines(outcome.status, countsLine(outcome.status.counts))) this.say(line);
    else this.say(`sweep ${outcome.name}: submitted; \`mlactl sweep status ${outcome.dir}\` shows where the runs stand`);
    process.exitCode = outcome.exit_code;
    return outcome;
  }
}
