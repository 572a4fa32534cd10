import { UserError } from '../src/errors';

/** Runs `fn`, demands a one-line UserError with exit code 2, and returns its message. */
export function userErrorOf(fn: () => unknown): string {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  expect(caught).toBeInstanceOf(UserError);
  const err = caught as UserError;
  expect(err.exitCode).toBe(2);
  expect(err.message).not.toContain('\n');
  return err.message;
}
