import * as path from 'path';
import { Flags } from '@oclif/core';
import { configFlags, MlactlCommand } from '../../cli/base';
import { loadConfig } from '../../config/load';
import { formatModelInfo, modelInfo, type ModelInfo } from '../../inference/info';
import { configSpec } from '../../model/spec';

export type ModelInfoResult = ModelInfo & { config: string; name: string };

export default class ModelInfoCommand extends MlactlCommand<ModelInfoResult> {
  static override description = 'Parameters by component, FLOPs per token and decode-cache memory of a model config';

  static override examples = [
    '<%= config.bin %> model info --config configs/models/paper-400m.yaml',
    '<%= config.bin %> model info --config configs/models/demo.yaml --set model.variant=qk-norm --json',
  ];

  static override flags = {
    config: Flags.string({ char: 'c', description: 'YAML config file', required: true }),
    set: configFlags.set,
    'seq-len': Flags.integer({ description: 'sequence length for the attention FLOPs (default data.seq_len)', min: 1 }),
  };

  async run(): Promise<ModelInfoResult> {
    const { flags } = await this.parse(ModelInfoCommand);
    const cfg = loadConfig(flags.config, flags.set);
    const info = modelInfo(configSpec(cfg), flags['seq-len'] ?? cfg.data.seq_len);
    const name = cfg.name || path.basename(flags.config);
    this.say(formatModelInfo(info, name));
    return { config: flags.config, name, ...info };
  }
}
