import * as fs from 'fs';
import { Flags } from '@oclif/core';
import { initBackend } from '../backend';
import { backendFlag, MlactlCommand } from '../cli/base';
import { UserError } from '../errors';
import { ENGINE_CHOICES, type EngineConfig } from '../config/types';
import { inferenceEngine, runConfigNear } from '../engine/torch/decode';
import { torchScorers } from '../engine/torch/scorer';
import { formatTextScore, loadRunModel, resolveModelFolder, scoreText, TfScoringModel, type TextScore } from '../inference/scoring';

export type ScoreCommandResult = TextScore & { checkpoint: string; step: number | null; tokenizer: string; engine: 'tfjs' | 'torch'; backend: string };

export default class Score extends MlactlCommand<ScoreCommandResult> {
  static override description = 'Per-token log-probabilities of a text under a trained model, with total, mean and perplexity';

  static override examples = [
    '<%= config.bin %> score --run runs/demo/qk-norm --text "The jury said"',
    '<%= config.bin %> score --run runs/demo/baseline --step 0 --text "It was" --json',
    '<%= config.bin %> score --run runs/demo/qk-norm --text "The jury said" --engine torch',
  ];

  static override flags = {
    run: Flags.string({ description: 'run folder (newest checkpoint, or --step) or checkpoint folder', required: true }),
    step: Flags.integer({ description: 'the checkpoint of this training step', min: 0 }),
    text: Flags.string({ description: 'text to score' }),
    file: Flags.string({ description: 'UTF-8 file whose text to score' }),
    stride: Flags.integer({ description: 'tokens newly scored per window when the text exceeds max_seq_len (default max_seq_len - 1: disjoint windows)', min: 1 }),
    'batch-size': Flags.integer({ description: 'windows per forward pass', default: 8, min: 1 }),
    backend: backendFlag({ default: 'auto' }),
    engine: Flags.option({ options: ENGINE_CHOICES, description: "who scores: tfjs, torch (PyTorch child process) or auto; default: the run config's engine.name, else tfjs" })(),
  };

  async run(): Promise<ScoreCommandResult> {
    const { flags } = await this.parse(Score);
    if ((flags.text === undefined) === (flags.file === undefined)) throw new UserError('score: give exactly one of --text TEXT or --file FILE');
    let text = flags.text;
    if (flags.file !== undefined) {
      if (!fs.existsSync(flags.file)) throw new UserError(`--file ${flags.file}: no such file`);
      text = fs.readFileSync(flags.file, 'utf8');
    }
    const chosen = inferenceEngine(flags.engine, runConfigNear(flags.run));
    if (chosen.engine === 'torch') return this.runTorch(flags, text!, chosen.settings);
    const backend = await initBackend(flags.backend);

    const model = loadRunModel(flags.run, { step: flags.step });
    try {
      if (flags.stride !== undefined && flags.stride > model.spec.maxSeqLen) {
        throw new UserError(`--stride: at most max_seq_len = ${model.spec.maxSeqLen} for this model, got ${flags.stride}`);
      }
      const scorer = new TfScoringModel(model, { batchSize: flags['batch-size'] });
      const result = await scoreText(scorer, text!, { stride: flags.stride, batchSize: flags['batch-size'] });
      this.say(formatTextScore(result, model));
      return { checkpoint: model.ckptDir, step: model.step, tokenizer: model.tokenizer.name, engine: 'tfjs', backend: backend.name, ...result };
    } finally {
      model.dispose();
    }
  }

  /** The same windows and table through the torch engine's scoring process (as `eval --engine torch`). */
  private async runTorch(flags: { run: string; step?: number; stride?: number; 'batch-size': number }, text: string, settings: EngineConfig): Promise<ScoreCommandResult> {
    const where = resolveModelFolder(flags.run, flags.step);
    const open = torchScorers({ engine: settings });
    const scorer = await open(where.dir, { batchSize: flags['batch-size'], window: Number.MAX_SAFE_INTEGER, windowKey: 'model.max_seq_len' });
    try {
      const maxSeqLen = scorer.maxSeqLen - 1;
      if (flags.stride !== undefined && flags.stride > maxSeqLen) throw new UserError(`--stride: at most max_seq_len = ${maxSeqLen} for this model, got ${flags.stride}`);
      const result = await scoreText(scorer, text, { stride: flags.stride, batchSize: flags['batch-size'] });
      this.say(formatTextScore(result, { ckptDir: where.dir, step: where.step, tokenizer: scorer.tokenizer }));
      return { checkpoint: where.dir, step: where.step, tokenizer: scorer.tokenizer.name, engine: 'torch', backend: 'torch', ...result };
    } finally {
      scorer.dispose();
    }
  }
}
