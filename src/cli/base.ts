import { Command, Flags } from '@oclif/core';
import { BACKENDS, ENGINE_CHOICES } from '../config/types';
import { UserError } from '../errors';

/**
 * Every mlactl command extends this: `run()` parses flags, calls one library function and returns a typed
 * result, which oclif prints as JSON under `--json`. User errors become one line on stderr and their exit code
 * (2 for bad input) instead of a stack trace.
 */
export abstract class MlactlCommand<T> extends Command {
  static override enableJsonFlag = true;

  static override baseFlags = {};

  protected override async catch(err: Error & { exitCode?: number; oclif?: { exit?: number } }): Promise<unknown> {
    if (err instanceof UserError) {
      process.stderr.write(`mlactl: ${err.message}\n`);
      this.exit(err.exitCode);
    }
    // The disk or the file system said no (full, read-only, no permission): one line naming the file, not a trace.
    const sys = systemErrorLine(err as NodeJS.ErrnoException);
    if (sys) {
      process.stderr.write(`mlactl: ${sys}\n`);
      this.exit(1);
    }
    // oclif's own flag-parsing errors are also the user's input: keep them one line with exit code 2.
    if (err.oclif?.exit === 2 || err.name === 'CLIError' && /flag|argument|Unexpected/i.test(err.message)) {
      process.stderr.write(`mlactl: ${oneLine(err.message)}\n`);
      this.exit(2);
    }
    return super.catch(err);
  }

  /** Print human output only when --json is off. */
  protected say(line: string): void {
    if (!this.jsonEnabled()) this.log(line);
  }

  abstract override run(): Promise<T>;
}

/** The TensorFlow.js backend, one declaration for every command: oclif checks the value against the list. */
export const backendFlag = Flags.option({ options: BACKENDS, description: 'TensorFlow.js backend (auto: the fastest that loads here)' });

export const configFlags = {
  config: Flags.string({ char: 'c', description: 'YAML config file (presets extend configs/base.yaml)' }),
  set: Flags.string({ description: 'override a config key: --set train.lr=3e-4 (repeatable)', multiple: true, default: [] }),
  backend: backendFlag({ description: 'TensorFlow.js backend; overrides the config key `backend`' }),
};

const SYSTEM_ERRORS: Record<string, string> = {
  ENOSPC: 'no space left on the device',
  EDQUOT: 'disk quota exceeded',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  EROFS: 'read-only file system',
  EMFILE: 'too many open files',
  EIO: 'input/output error',
};

/** `path: what went wrong` for the file-system failures a user can act on; null for anything else. */
export function systemErrorLine(e: NodeJS.ErrnoException): string | null {
  const what = e && typeof e.code === 'string' ? SYSTEM_ERRORS[e.code] : undefined;
  if (!what) return null;
  return `${e.path ?? 'a file'}: ${what} (${e.syscall ?? 'write'})`;
}

/**
 * oclif's parse errors span lines ("The following error occurred:", then each problem, then a pointer to --help):
 * every problem is kept, on one line, without the generic header.
 */
export function oneLine(message: string): string {
  const lines = message.split('\n').map((l) => l.trim()).filter((l) => l !== '' && !/^The following errors? occurred:?$/.test(l));
  return lines.join('; ');
}

/** The engine's flags, for the commands that train. */
export const engineFlags = {
  engine: Flags.option({ options: ENGINE_CHOICES, description: 'tfjs (in process), torch (PyTorch child process) or auto; overrides engine.name' })(),
  gpus: Flags.integer({ description: 'torch engine: processes on this host, one per GPU, through torchrun; overrides engine.gpus', min: 1 }),
};

/** `--set` overrides plus the flags that stand for config keys (`--backend`, `--engine`, `--gpus`). */
export function configOverrides(flags: { set: string[]; backend?: string; engine?: string; gpus?: number }): string[] {
  return [
    ...flags.set,
    ...(flags.backend ? [`backend=${flags.backend}`] : []),
    ...(flags.engine ? [`engine.name=${flags.engine}`] : []),
    ...(flags.gpus ? [`engine.gpus=${flags.gpus}`] : []),
  ];
}
