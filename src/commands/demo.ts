import { Flags } from '@oclif/core';
import { MlactlCommand } from '../cli/base';
import { runDemo, type DemoResult } from '../demo';
import { silentProgress, terminalProgress } from '../train/progress';

export default class Demo extends MlactlCommand<DemoResult> {
  static override description = 'Train baseline, QK-clip and QK-norm MLA on the Brown corpus, evaluate them and write the comparison report';

  static override examples = ['<%= config.bin %> demo', '<%= config.bin %> demo --set train.tokens=40960 --jobs 2'];

  static override flags = {
    out: Flags.string({ description: 'folder for the experiment', default: 'runs' }),
    set: Flags.string({ description: 'override a key of configs/experiments/demo.yaml (repeatable)', multiple: true, default: [] }),
    jobs: Flags.integer({ description: 'arms trained in parallel (default: all three when there are two or more cores)', min: 1 }),
    force: Flags.boolean({ description: 'replace an earlier demo in the same folder', default: true, allowNo: true }),
  };

  async run(): Promise<DemoResult> {
    const { flags } = await this.parse(Demo);
    const progress = this.jsonEnabled() ? silentProgress : terminalProgress(process.stderr, 20);
    const r = await runDemo({ out: flags.out, sets: flags.set, jobs: flags.jobs, force: flags.force, progress });
    progress.stop();
    this.say('');
    this.say(r.headline);
    this.say('');
    for (const line of r.summary) this.say(`- ${line}`);
    this.say('');
    if (r.learning.length) {
      this.say('Downstream accuracy, untrained vs trained (se: standard errors of the difference):');
      for (const line of r.learning) this.say(`- ${line}`);
      this.say('');
    }
    this.say(`report: ${r.report}`);
    this.say(`time: ${r.seconds.total.toFixed(0)} s (train ${r.seconds.train.toFixed(0)}, eval ${r.seconds.eval.toFixed(0)}, compare ${r.seconds.compare.toFixed(0)})`);
    return r;
  }
}
