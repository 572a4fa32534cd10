/**
 * How every file of a run folder is written: to a temporary in the same folder, every byte (a write may take fewer
 * than asked), synced, renamed over the old one, the folder synced. A crash, a kill or a full disk mid-write leaves
 * the previous file, never a torn one; the errors a user can act on are one line naming the file.
 */
// The default import, so tests can stub fs.writeSync on the module object this file calls through.
import fs from 'fs';
import * as path from 'path';
import { UserError } from '../errors';

/** The largest single write: Node refuses buffers over 2 GiB in one call. */
const IO_CHUNK = 2 ** 30;

/** Writes all of `bytes` at the file position: a write may take fewer bytes than asked (full disk, signals, limits). */
export function writeAll(fd: number, bytes: Uint8Array, file: string): void {
  let done = 0;
  while (done < bytes.byteLength) {
    const n = fs.writeSync(fd, bytes, done, Math.min(bytes.byteLength - done, IO_CHUNK));
    if (!(n > 0)) throw new UserError(`${file}: write made no progress (${done} of ${bytes.byteLength} bytes of a chunk written)`);
    done += n;
  }
}

/** The errors a user can act on, as one line naming the file; anything else stays as it is. */
function ioError(e: unknown, file: string): unknown {
  const code = (e as NodeJS.ErrnoException | undefined)?.code;
  if (code === 'ENOSPC' || code === 'EDQUOT') return new UserError(`disk full while writing ${file}`);
  if (code === 'EACCES' || code === 'EPERM') return new UserError(`permission denied writing ${file}`);
  if (code === 'EROFS') return new UserError(`read-only file system: cannot write ${file}`);
  return e;
}

/** Makes a rename durable: without it a power cut may bring back the old directory entry. */
function syncFolder(dir: string): void {
  // Windows cannot open a folder for fsync, and NTFS journals the rename itself.
  if (process.platform === 'win32') return;
  const fd = fs.openSync(dir, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Write atomically: `body` fills a temporary in the same folder (a rename cannot cross file systems), which is
 * synced and renamed over `file`. A crash or error mid-write leaves the previous file (or none), never a torn one.
 */
export function writeAtomically(file: string, body: (fd: number) => void): void {
  const tmp = `${file}.tmp-${process.pid}`;
  let fd: number | undefined;
  try {
    fd = fs.openSync(tmp, 'w');
    body(fd);
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fd = undefined;
    fs.renameSync(tmp, file);
    syncFolder(path.dirname(file));
  } catch (e) {
    if (fd !== undefined) {
      try {
        fs.closeSync(fd);
      } catch {
        // the write error is the one to report
      }
    }
    try {
      fs.rmSync(tmp, { force: true });
    } catch {
      // likewise
    }
    throw ioError(e, file);
  }
}

/** Replaces `file` atomically; a full disk, a permission or a read-only file system is a one-line UserError naming it. */
export function writeFileAtomic(file: string, data: Buffer | string): void {
  const bytes = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
  writeAtomically(file, (fd) => writeAll(fd, bytes, file));
}

export function writeJson(file: string, value: unknown): void {
  writeFileAtomic(file, JSON.stringify(value, null, 2) + '\n');
}

export function readJson<T>(file: string): T {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8')) as T;
  } catch (e) {
    throw new UserError(`${file}: ${fs.existsSync(file) ? 'invalid JSON' : 'file not found'}`);
  }
}

