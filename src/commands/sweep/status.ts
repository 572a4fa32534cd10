import { Args } from '@oclif/core';
import { MlactlCommand } from '../../cli/base';
import { statusLines } from '../../sweep/render';
import { countsLine, sweepStatus, type SweepStatus } from '../../sweep/status';

export default class SweepStatusCommand extends MlactlCommand<SweepStatus> {
  static override description = "Each run of a sweep: its state, steps, final losses, exit code and (Slurm) its array task's state";

  static override examples = ['<%= config.bin %> sweep status runs/lr-ladder', '<%= config.bin %> sweep status runs/lr-ladder --json'];

  static override args = {
    dir: Args.string({ description: 'sweep folder (holds sweep.json)', required: true }),
  };

  async run(): Promise<SweepStatus> {
    const { args } = await this.parse(SweepStatusCommand);
    const status = sweepStatus(args.dir);
    for (const line of statusLines(status, countsLine(status.counts))) this.say(line);
    return status;
  }
}
