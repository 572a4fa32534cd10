// Entry of the single-file bundle that runs on machines without node_modules (the GPU recipe in
// docs/gpu.md). It dispatches to the same command classes as bin/run.js; only discovery differs.
import * as path from 'path';
import { COMMANDS, resolveCommand } from './commands';

// Same filter as bin/run.js: mlactl picks and reports backends itself, so tfjs's tfjs-node advice is noise.
const warn = console.warn;
console.warn = (...args: unknown[]) => {
  if (!String(args[0] ?? '').includes('looks like you are running TensorFlow.js in Node.js')) warn(...args);
};

// Child processes (parallel experiment arms, the demo's evaluations) start this bundle, not bin/run.js.
process.env.MLACTL_ENTRY = __filename;

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const found = resolveCommand(argv);
  if (!found) {
    const ids = Object.keys(COMMANDS).map((id) => id.replace(':', ' ')).join(', ');
    process.stderr.write(`mlactl (bundle): unknown command '${argv.slice(0, 2).join(' ')}'; commands: ${ids}\n`);
    process.exit(2);
  }
  if (found.rest.some((a) => a === '--help' || a === '-h')) return printHelp(found.id);
  // oclif reads package.json from the root it is given: the project folder the bundle runs in.
  await COMMANDS[found.id].run(found.rest, path.resolve('.'));
}

/** oclif's help needs its command discovery, which the bundle does without: a plain listing of the flags. */
function printHelp(id: string): void {
  const cmd = COMMANDS[id];
  const lines = [`mlactl ${id.replace(':', ' ')}: ${cmd.summary ?? cmd.description ?? ''}`.trim(), '', 'FLAGS'];
  for (const [name, flag] of Object.entries(cmd.flags ?? {})) {
    const f = flag as { char?: string; description?: string; default?: unknown; type?: string };
    const value = f.type === 'option' ? '=<value>' : '';
    const dflt = f.default !== undefined && typeof f.default !== 'function' && !(Array.isArray(f.default) && f.default.length === 0) ? ` [default: ${String(f.default)}]` : '';
    lines.push(`  ${f.char ? `-${f.char}, ` : '    '}--${name}${value}  ${f.description ?? ''}${dflt}`);
  }
  process.stdout.write(lines.join('\n') + '\n');
}

main().then(
  // A Dawn device keeps the event loop alive; every command has finished its work here.
  () => process.exit(process.exitCode ?? 0),
  async (err: Error & { oclif?: { exit?: number } }) => {
    const { handle } = await import('@oclif/core');
    await handle(err);
  },
);
