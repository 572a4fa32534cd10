import { Flags } from '@oclif/core';
import { initBackend } from '../backend';
import { configFlags, MlactlCommand } from '../cli/base';
import { loadConfig } from '../config/load';
import { UserError } from '../errors';
import { ENGINE_CHOICES } from '../config/types';
import { inferenceEngine, runConfigNear } from '../engine/torch/decode';
import { DEFAULT_VERIFY_TOLERANCE, DEFAULT_VERIFY_TOKENS, formatVerifyReport, verifyCheckpoint, verifyConfig, verifyWithTorch, type VerifySourceReport } from '../inference/verify';

export type VerifyCommandResult = VerifySourceReport & { engine: 'tfjs' | 'torch'; backend: string };

export default class Verify extends MlactlCommand<VerifyCommandResult> {
  static override description =
    'Check that the training form, every decode cache and (for small models) the float64 reference give the same logits; exit 1 if any pair differs by more than the tolerance';

  static override examples = [
    '<%= config.bin %> verify --config configs/models/tiny.yaml --set model.variant=qk-norm',
    '<%= config.bin %> verify --run runs/demo/qk-norm --backend wasm --json',
    '<%= config.bin %> verify --run runs/demo/qk-norm --engine torch',
  ];

  static override flags = {
    ...configFlags,
    run: Flags.string({ description: 'run folder (newest checkpoint, or --step) or checkpoint folder, instead of --config' }),
    step: Flags.integer({ description: 'with --run: the checkpoint of this step', min: 0 }),
    tolerance: Flags.string({ description: 'largest allowed max-relative logit error', default: DEFAULT_VERIFY_TOLERANCE.toExponential() }),
    tokens: Flags.integer({ description: `length of the test sequence (default ${DEFAULT_VERIFY_TOKENS}, at most max_seq_len)`, min: 2 }),
    engine: Flags.option({ options: ENGINE_CHOICES, description: "who runs the forms: tfjs, torch (PyTorch child process; the fused CUDA kernel too where it runs) or auto; default: the config's engine.name" })(),
  };

  async run(): Promise<VerifyCommandResult> {
    const { flags } = await this.parse(Verify);
    if (!!flags.config === !!flags.run) throw new UserError('verify: give exactly one of --config FILE or --run DIR');
    if (flags.step !== undefined && !flags.run) throw new UserError('--step: only applies with --run');
    if (flags.run && flags.set.length > 0) throw new UserError('--set: only applies with --config (a checkpoint fixes its own model)');
    const tolerance = Number(flags.tolerance);
    if (!Number.isFinite(tolerance) || tolerance < 0) throw new UserError(`--tolerance: expected a non-negative number, got ${JSON.stringify(flags.tolerance)}`);

    let report: VerifySourceReport;
    let backend: string;
    let engine: 'tfjs' | 'torch';
    if (flags.config) {
      const cfg = loadConfig(flags.config, [...flags.set, ...(flags.backend ? [`backend=${flags.backend}`] : [])]);
      const chosen = inferenceEngine(flags.engine, cfg);
      engine = chosen.engine;
      if (engine === 'torch') {
        const r = await verifyWithTorch(chosen.settings, { config: cfg, file: flags.config }, { tolerance, tokens: flags.tokens });
        backend = `torch ${r.device}`;
        report = r;
      } else {
        backend = (await initBackend(cfg.backend)).name;
        report = await verifyConfig(cfg, flags.config, { tolerance, tokens: flags.tokens });
      }
    } else {
      const chosen = inferenceEngine(flags.engine, runConfigNear(flags.run!));
      engine = chosen.engine;
      if (engine === 'torch') {
        const r = await verifyWithTorch(chosen.settings, { run: flags.run!, step: flags.step }, { tolerance, tokens: flags.tokens });
        backend = `torch ${r.device}`;
        report = r;
      } else {
        backend = (await initBackend(flags.backend ?? 'auto')).name;
        report = await verifyCheckpoint(flags.run!, { tolerance, tokens: flags.tokens, step: flags.step });
      }
    }
    this.say(formatVerifyReport(report, backend));
    if (!report.pass) {
      const failed = report.comparisons.filter((c) => !c.pass).map((c) => `${c.pair} ${c.max_rel_error.toExponential(2)}`);
      process.stderr.write(`mlactl: verify failed: ${failed.join(', ')} exceed tolerance ${tolerance}\n`);
      process.exitCode = 1;
    }
    return { ...report, engine, backend };
  }
}
