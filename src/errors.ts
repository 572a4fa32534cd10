/** An error caused by the user's input (config, file, flag). Commands print its one-line message and exit with `exitCode`. */
export class UserError extends Error {
  constructor(message: string, public readonly exitCode = 2) {
    super(message);
    this.name = 'UserError';
  }
}

/**
 * `text` (from a file, a flag or a config) made safe to quote in a message: C0 controls, DEL and C1 controls
 * would be acted on by a terminal (colours, cursor moves, title changes), so each is written as \xHH instead.
 * Backslashes are left alone, so escaping twice changes nothing.
 */
export function printable(text: string): string {
  return text.replace(/[\x00-\x1f\x7f-\x9f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}
