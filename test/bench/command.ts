// Running an oclif command inside jest: oclif's Config.load imports an ES module dynamically, which jest's
// CommonJS sandbox cannot do, so the command gets a stand-in config (the end-to-end tests run the real CLI).
import { Config } from '@oclif/core';

export const stubConfig = {
  bin: 'mlactl',
  topicSeparator: ':',
  commandIDs: [],
  userAgent: 'mlactl-test',
  runHook: async () => ({ successes: [], failures: [] }),
  scopedEnvVar: () => undefined,
  scopedEnvVarKeys: (key: string) => [`MLACTL_${key}`],
} as unknown as Config;

export function stubOclifConfig(): void {
  jest.spyOn(Config, 'load').mockResolvedValue(stubConfig);
}

export interface CommandOutcome<T> {
  stdout: string;
  stderr: string;
  exitCode: number;
  result: T | undefined;
}

/** Run a command class, capturing what it prints; returns oclif's exit code (0 when it returned normally). */
export async function runCommand<T>(command: { run(argv: string[]): Promise<unknown> }, argv: string[]): Promise<CommandOutcome<T>> {
  const out: string[] = [];
  const err: string[] = [];
  // oclif prints through console.log; streamed text and mlactl's error handler write to the process streams.
  const log = jest.spyOn(console, 'log').mockImplementation((...args: unknown[]) => {
    out.push(`${args.join(' ')}\n`);
  });
  const stdout = jest.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
    out.push(String(chunk));
    return true;
  });
  const stderr = jest.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => {
    err.push(String(chunk));
    return true;
  });
  let exitCode = 0;
  let result: T | undefined;
  try {
    result = (await command.run(argv)) as T;
  } catch (error) {
    const exit = (error as { oclif?: { exit?: number } }).oclif?.exit;
    if (exit === undefined) throw error;
    exitCode = exit;
  } finally {
    log.mockRestore();
    stdout.mockRestore();
    stderr.mockRestore();
  }
  return { stdout: out.join(''), stderr: err.join(''), exitCode, result };
}
