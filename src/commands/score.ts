import * as fs from 'fs';
import { Flags } from '@oclif/core';
import { initBackend } from '../backend';
import { backendFlag, MlactlCommand } from '../cli/base';
import { UserError } from '../errors';
import { formatTextScore, loadRunModel, scoreText, TfScoringModel, type TextScore } from '../inference/scoring';

export type ScoreCommandResult = TextScore & { checkpoint: string; step: number | null; tokenizer: string; backend: string };

export default class Score extends MlactlCommand<ScoreCommandResult> {
  static override description = 'Per-token log-probabilities of a text under a trained model, with total, mean and perplexity';

  static override examples = [
    '<%= config.bin %> score --run runs/demo/qk-norm --text "The jury said"',
    '<%= config.bin %> score --run runs/demo/baseline --step 0 --text "It was" --json',
  ];

  static override flags = {
    run: Flags.string({ description: 'run folder (newest checkpoint, or --step) or checkpoint folder', required: true }),
    step: Flags.integer({ description: 'the checkpoint of this training step', min: 0 }),
    text: Flags.string({ description: 'text to score' }),
    file: Flags.string({ description: 'UTF-8 file whose text to score' }),
    stride: Flags.integer({ description: 'tokens newly scored per window when the text exceeds max_seq_len (default max_seq_len - 1: disjoint windows)', min: 1 }),
    'batch-size': Flags.integer({ description: 'windows per forward pass', default: 8, min: 1 }),
    backend: backendFlag({ default: 'auto' }),
  };

  async run(): Promise<ScoreCommandResult> {
    const { flags } = await this.parse(Score);
    if ((flags.text === undefined) === (flags.file === undefined)) throw new UserError('score: give exactly one of --text TEXT or --file FILE');
    let text = flags.text;
    if (flags.file !== undefined) {
      if (!fs.existsSync(flags.file)) throw new UserError(`--file ${flags.file}: no such file`);
      text = fs.readFileSync(flags.file, 'utf8');
    }
    const backend = await initBackend(flags.backend);

    const model = loadRunModel(flags.run, { step: flags.step });
    try {
      if (flags.stride !== undefined && flags.stride > model.spec.maxSeqLen) {
        throw new UserError(`--stride: at most max_seq_len = ${model.spec.maxSeqLen} for this model, got ${flags.stride}`);
      }
      const scorer = new TfScoringModel(model, { batchSize: flags['batch-size'] });
      const result = await scoreText(scorer, text!, { stride: flags.stride, batchSize: flags['batch-size'] });
      this.say(formatTextScore(result, model));
      return { checkpoint: model.ckptDir, step: model.step, tokenizer: model.tokenizer.name, backend: backend.name, ...result };
    } finally {
      model.dispose();
    }
  }
}
