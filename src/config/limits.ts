// Bounds on configured sizes that hold whatever the backend, checked when a config is validated, and the
// byte formatting that size errors share. Kept free of imports so validation and the memory estimate
// (memory.ts) can both use it without a cycle through load.ts.

/** Token ids, tensor shapes and kernel indices are int32 in TensorFlow.js: no size above this can be built. */
export const MAX_INT32 = 2 ** 31 - 1;

/**
 * The most positions a model may have (documented at model.max_seq_len in configs/base.yaml). Far above any
 * context a TensorFlow.js model here can attend over (the scores of one head at 2^24 tokens are 2^48 numbers),
 * yet low enough that a typo such as 1e9 is refused by name before the RoPE tables are built position by position.
 */
export const MAX_POSITIONS = 2 ** 24;

/**
 * Bytes that the RoPE tables of a model take while they are built (src/model/layers.ts, RopeTables): cos and sin
 * [positions, dr] as Float32Arrays and as tensors, their copies for rows of width dr and of width dn + dr, and the
 * ones and zeros [positions, dn] those are concatenated from.
 */
export function ropeTableBytes(positions: number, dn: number, dr: number): number {
  return 4 * positions * (8 * dr + 4 * dn);
}

/** `bytes` in binary units with two decimals ("4.00 GiB", "1.52 TiB"); past 1024 EiB, in powers of ten. */
export function formatBytes(bytes: number): string {
  const units = ['bytes', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB', 'EiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  if (unit === 0) return `${bytes} bytes`;
  if (value >= 1024) return `${bytes.toExponential(2)} bytes`;
  return `${value.toFixed(2)} ${units[unit]}`;
}
