import { Args, Flags } from '@oclif/core';
import { MlactlCommand } from '../../cli/base';
import { estimatePlan, type PlanEstimate } from '../../sweep/cost';
import { loadSweep } from '../../sweep/plan';
import { planLines } from '../../sweep/render';

export default class SweepPlan extends MlactlCommand<PlanEstimate> {
  static override description = 'Expand a sweep file into its runs and estimate their cost (FLOPs, and hours where a throughput was measured)';

  static override examples = ['<%= config.bin %> sweep plan configs/sweeps/lr-ladder.yaml', '<%= config.bin %> sweep plan configs/sweeps/lr-ladder.yaml --jobs 4 --json'];

  static override args = {
    sweep: Args.string({ description: 'sweep file (YAML: base, set, axes, slurm)', required: true }),
  };

  static override flags = {
    jobs: Flags.integer({ description: 'runs at a time, for the wall-time estimate', default: 1, min: 1 }),
  };

  async run(): Promise<PlanEstimate> {
    const { args, flags } = await this.parse(SweepPlan);
    const estimate = estimatePlan(loadSweep(args.sweep), flags.jobs);
    for (const line of planLines(estimate)) this.say(line);
    return estimate;
  }
}
