/** An error caused by the user's input (config, file, flag). Commands print its one-line message and exit with `exitCode`. */
export class UserError extends Error {
  constructor(message: string, public readonly exitCode = 2) {
    super(message);
    this.name = 'UserError';
  }
}
