import { backendFlag, MlactlCommand } from '../cli/base';
import { initBackend } from '../backend';
import { pythonCandidates, probePython, type TorchProbe } from '../engine/torch';

export interface DoctorResult {
  node: string;
  tfjs: { usable: boolean; backend?: string; device?: string; reason: string };
  torch: TorchProbe[];
  /** The engine `engine.name: auto` would pick here. */
  auto: 'tfjs' | 'torch';
}

export default class Doctor extends MlactlCommand<DoctorResult> {
  static override description = 'What each engine can use on this machine: the TensorFlow.js backend, and every interpreter tried for PyTorch with its versions and devices';

  static override examples = ['<%= config.bin %> doctor', '<%= config.bin %> doctor --backend wasm --json'];

  static override flags = { backend: backendFlag({ default: 'auto' }) };

  async run(): Promise<DoctorResult> {
    const { flags } = await this.parse(Doctor);
    let tfjs: DoctorResult['tfjs'];
    try {
      const b = await initBackend(flags.backend);
      tfjs = { usable: true, backend: b.name, device: b.device, reason: b.reason };
    } catch (e) {
      tfjs = { usable: false, reason: (e as Error).message };
    }
    const torch = pythonCandidates({ engine: { name: 'auto', python: '', gpus: 1, precision: 'auto', compile: 'auto', threads: 0, device: 'auto' } }).map(probePython);
    const auto = torch.some((p) => p.usable) ? 'torch' : 'tfjs';
    this.say(`node ${process.version}`);
    this.say(`engine tfjs:  ${tfjs.usable ? `usable, backend ${tfjs.backend} (${tfjs.device}): ${tfjs.reason}` : `not usable: ${tfjs.reason}`}`);
    for (const p of torch) {
      const devices = p.cuda_available ? `CUDA ${p.cuda}, ${p.device_count} GPU(s): ${(p.device_names ?? []).join(', ')}` : 'no CUDA (CPU)';
      this.say(`engine torch: ${p.usable ? `usable with ${p.executable ?? p.python}: torch ${p.torch}, ${devices}` : `not with ${p.reason}`}`);
    }
    this.say(`engine.name auto picks: ${auto}`);
    return { node: process.version, tfjs, torch, auto };
  }
}
