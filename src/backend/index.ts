import * as tf from '@tensorflow/tfjs';
import type { BackendName } from '../config/types';
import { UserError } from '../errors';

export interface BackendChoice {
  name: Exclude<BackendName, 'auto'>;
  /** Why this backend: what was tried before it and why those were skipped. */
  reason: string;
  /** A human description of the device (GPU adapter, CPU model). */
  device: string;
}

/** The slice of the WebGPU API that the probe touches. */
interface GPU {
  requestAdapter(opts?: { powerPreference?: string }): Promise<unknown | null>;
}

type Probe = () => Promise<string>; // resolves to a device description, throws why it cannot start

let current: BackendChoice | undefined;

/** The backend chosen by the last `initBackend`, for manifests and benchmark tables. */
export function currentBackend(): BackendChoice | undefined {
  return current;
}

/**
 * Start a TensorFlow.js backend. `auto` tries the native binding, then a WebGPU adapter, then wasm, then cpu,
 * and says why it chose what it chose. A named backend that cannot start is an error: a silent fallback would
 * turn a GPU benchmark into a CPU one without anybody noticing.
 */
export async function initBackend(requested: BackendName): Promise<BackendChoice> {
  if (current && (requested === current.name || requested === 'auto')) return current;
  const order: Exclude<BackendName, 'auto'>[] = requested === 'auto' ? ['tensorflow', 'webgpu', 'wasm', 'cpu'] : [requested];
  const skipped: string[] = [];
  for (const name of order) {
    if (requested === 'auto' && name === 'webgpu' && !gpuDeviceNodePresent()) {
      // Probing Dawn without a GPU makes it print Vulkan loader errors; the device nodes tell us cheaply.
      skipped.push('webgpu skipped (no /dev/nvidia* or /dev/dri GPU device)');
      continue;
    }
    try {
      const device = await PROBES[name]();
      current = {
        name,
        device,
        reason: requested === 'auto' ? (skipped.length ? `auto: ${skipped.join('; ')}` : 'auto: first choice') : 'requested',
      };
      return current;
    } catch (err) {
      const why = (err as Error).message.split('\n')[0];
      if (requested !== 'auto') throw new UserError(`backend ${name} cannot start: ${why}`);
      skipped.push(`${name} unavailable (${why})`);
    }
  }
  throw new UserError(`no TensorFlow.js backend could start: ${skipped.join('; ')}`);
}

/**
 * The largest buffer one kernel may bind on the current backend, in bytes, where there is such a limit: WebGPU's
 * maxStorageBufferBindingSize (2 GiB - 4 on the lent H100s). A larger tensor does not fail cleanly there: Dawn
 * reports a cascade of invalid-buffer errors and the results are garbage, so callers check sizes up front.
 */
export function maxBindingBytes(): number | undefined {
  const b = tf.backend() as unknown as { device?: { limits?: { maxStorageBufferBindingSize?: number } } };
  return b.device?.limits?.maxStorageBufferBindingSize;
}

function gpuDeviceNodePresent(): boolean {
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  const fs = require('fs') as typeof import('fs');
  try {
    if (fs.readdirSync('/dev').some((n) => /^nvidia\d+$/.test(n))) return true;
    return fs.existsSync('/dev/dri') && fs.readdirSync('/dev/dri').some((n) => n.startsWith('renderD'));
  } catch {
    return false;
  }
}

async function activate(name: string): Promise<void> {
  const ok = await tf.setBackend(name);
  if (!ok) throw new Error(`tf.setBackend('${name}') returned false`);
  await tf.ready();
}

function cpuModel(): string {
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  const os = require('os') as typeof import('os');
  const cpus = os.cpus();
  return `${cpus[0]?.model ?? 'cpu'} x${cpus.length}`;
}

const PROBES: Record<Exclude<BackendName, 'auto'>, Probe> = {
  async tensorflow() {
    // The native binding is an optional dependency: its install downloads libtensorflow, which fails offline.
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    require('@tensorflow/tfjs-node');
    await activate('tensorflow');
    return `libtensorflow on ${cpuModel()}`;
  },
  async webgpu() {
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    const dawn = require('webgpu') as { create(flags: string[]): GPU; globals: Record<string, unknown> };
    const g = globalThis as unknown as { navigator?: { gpu?: GPU } };
    if (!g.navigator?.gpu) {
      Object.assign(globalThis, dawn.globals);
      // The backend registers itself only if navigator.gpu exists when its module is first loaded.
      Object.defineProperty(globalThis, 'navigator', { value: { gpu: dawn.create([]) }, configurable: true, writable: true });
    }
    const adapter = await g.navigator!.gpu!.requestAdapter({ powerPreference: 'high-performance' });
    if (!adapter) throw new Error('no WebGPU adapter (no GPU or no Vulkan driver)');
    const info = (adapter as unknown as { info?: { vendor?: string; architecture?: string; device?: string; description?: string } }).info;
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    require('@tensorflow/tfjs-backend-webgpu');
    await activate('webgpu');
    return `webgpu ${[info?.vendor, info?.architecture, info?.description || info?.device].filter(Boolean).join(' ')}`.trim();
  },
  async wasm() {
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    require('@tensorflow/tfjs-backend-wasm');
    registerWasmSegmentSum();
    await activate('wasm');
    return `wasm (single-threaded SIMD) on ${cpuModel()}`;
  },
  async cpu() {
    registerSegmentSum('cpu');
    await activate('cpu');
    return `tfjs cpu on ${cpuModel()}`;
  },
};

interface WasmBackendLike {
  typedArrayFromHeap(t: tf.TensorInfo): Float32Array | Int32Array | Uint8Array;
  makeOutput(shape: number[], dtype: tf.DataType): tf.TensorInfo;
}

interface CpuBackendLike {
  data: { get(id: unknown): { values: Float32Array | Int32Array } };
  makeTensorInfo(shape: number[], dtype: tf.DataType, values: Float32Array): tf.TensorInfo;
}

/** out[ids[r]] += x[r] over rows of `inner` values: the scatter-add behind the embedding gradient. */
function segmentSumInto(dst: Float32Array, src: Float32Array, ids: Int32Array, rows: number, inner: number, numSegments: number): void {
  for (let r = 0; r < rows; r++) {
    const s = ids[r];
    if (s < 0 || s >= numSegments) continue;
    const so = r * inner;
    const d0 = s * inner;
    for (let i = 0; i < inner; i++) dst[d0 + i] += src[so + i];
  }
}

function segmentShapes(x: tf.TensorInfo, segmentIds: tf.TensorInfo, numSegments: number) {
  if (x.dtype !== 'float32') throw new Error(`UnsortedSegmentSum: dtype ${x.dtype} unsupported`);
  const rows = segmentIds.shape.reduce((a, b) => a * b, 1);
  const tail = x.shape.slice(segmentIds.shape.length);
  return { rows, inner: tail.reduce((a, b) => a * b, 1), outShape: [numSegments, ...tail] };
}

const registered = new Set<string>();

/**
 * The gradient of `gather` (the embedding lookup) is `UnsortedSegmentSum`. wasm has no kernel for it, so training
 * fails on the first backward pass; the cpu backend has one that loops over segments with whole-tensor ops, which
 * costs O(vocab x tokens x d) and dominated a small model's step. Both keep tensors in host memory, so a direct
 * scatter-add over typed arrays is exact (the same summation order as the reference kernel) and linear in size.
 */
export function registerWasmSegmentSum(): void {
  registerSegmentSum('wasm');
}

export function registerSegmentSum(backendName: 'wasm' | 'cpu'): void {
  if (registered.has(backendName)) return;
  if (tf.getKernel('UnsortedSegmentSum', backendName)) tf.unregisterKernel('UnsortedSegmentSum', backendName);
  tf.registerKernel({
    kernelName: 'UnsortedSegmentSum',
    backendName,
    kernelFunc: ({ inputs, attrs, backend }) => {
      const { x, segmentIds } = inputs as { x: tf.TensorInfo; segmentIds: tf.TensorInfo };
      const numSegments = (attrs as unknown as { numSegments: number }).numSegments;
      const { rows, inner, outShape } = segmentShapes(x, segmentIds, numSegments);
      if (backendName === 'cpu') {
        const cpu = backend as unknown as CpuBackendLike;
        const dst = new Float32Array(numSegments * inner);
        segmentSumInto(dst, cpu.data.get(x.dataId).values as Float32Array, cpu.data.get(segmentIds.dataId).values as Int32Array, rows, inner, numSegments);
        return cpu.makeTensorInfo(outShape, 'float32', dst);
      }
      const wasm = backend as unknown as WasmBackendLike;
      const out = wasm.makeOutput(outShape, 'float32');
      const dst = wasm.typedArrayFromHeap(out) as Float32Array;
      dst.fill(0);
      // Read the inputs after allocating: allocation can grow the heap and detach earlier views.
      segmentSumInto(dst, wasm.typedArrayFromHeap(x) as Float32Array, wasm.typedArrayFromHeap(segmentIds) as Int32Array, rows, inner, numSegments);
      return out;
    },
  });
  registered.add(backendName);
}
