import { spawn } from 'child_process';
import * as path from 'path';

export const ROOT = path.resolve(__dirname, '..');

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** The built CLI (bin/run.js) as a user starts it, from the checkout's root, without colours. */
export function runMlactl(args: string[]): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(ROOT, 'bin', 'run.js'), ...args], { cwd: ROOT, env: { ...process.env, NO_COLOR: '1' } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}
