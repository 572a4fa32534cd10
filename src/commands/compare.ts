import { Args, Flags } from '@oclif/core';
import { MlactlCommand } from '../cli/base';
import { compareRuns, ExpectationError, type CompareResult } from '../report/compare';
import { sensitivitySummary } from '../report/sensitivity';
import { markdownTable, sensitivityTable } from '../report/tables';

export default class Compare extends MlactlCommand<CompareResult> {
  static override description = 'Compare runs and experiments: seed-aggregated tables, plots, config diff and a self-contained report.html';

  static override examples = [
    '<%= config.bin %> compare runs/exp-qk --baseline baseline',
    '<%= config.bin %> compare runs/a runs/b --out compare-ab',
    '<%= config.bin %> compare runs/lr-sweep',
    '<%= config.bin %> compare runs/exp-qk --expect "qk-norm.val_loss < baseline.val_loss + 0.01" --expect "qk-norm.max_logit < 100"',
  ];

  // Any number of run or experiment folders.
  static override strict = false;

  static override args = {
    runs: Args.string({ description: 'run folders, experiment folders (expanded to their arms) or folders of run folders such as a sweep', required: true }),
  };

  static override flags = {
    out: Flags.string({ char: 'o', description: 'output folder (default: <experiment or sweep>/compare, or ./compare for run folders)' }),
    baseline: Flags.string({ description: 'arm group to report differences against (its label or variant name)' }),
    expect: Flags.string({ description: 'gate such as "qk-norm.val_loss < baseline.val_loss + 0.01" (repeatable; see docs/compare.md)', multiple: true }),
    force: Flags.boolean({ description: 'compare runs even if their tokenizers or validation data differ', default: false }),
  };

  async run(): Promise<CompareResult> {
    const { argv, flags } = await this.parse(Compare);
    try {
      const result = await compareRuns({ inputs: argv as string[], out: flags.out, baseline: flags.baseline, expect: flags.expect, force: flags.force });
      this.printHeadline(result);
      return result;
    } catch (err) {
      // The report is written before gates are judged, so show where it is even when one fails.
      if (err instanceof ExpectationError) this.printHeadline(err.result);
      throw err;
    }
  }

  private printHeadline(result: CompareResult): void {
    this.say(result.headline);
    if (result.sensitivity) {
      this.say('');
      this.say(markdownTable(sensitivityTable(result.sensitivity)));
      for (const line of sensitivitySummary(result.sensitivity)) this.say(line);
    }
    for (const warning of result.warnings) this.say(`warning: ${warning}`);
    this.say(`report: ${result.report}`);
  }
}
