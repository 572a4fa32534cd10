"""Token streams on disk and the deterministic batch order.

A split is one token stream: a list of segments (path, dtype, offset, count) read through numpy.memmap, never
loaded whole. The window order is a port of src/data/rng.ts + src/data/batches.ts, exact to the bit: the same
data.seed gives the same windows, in the same order and with the same batch hash, as the tfjs engine. The global
batch of a step does not depend on the world size; each rank takes a disjoint slice of it (`rank_slice`).

File formats read here:
  - mlactl shards (src/data/shards.ts): `manifest.json` + raw little-endian uint16/uint32 `.bin` files.
  - llm.c / modded-nanogpt FineWeb `.bin`: a 256 x int32 header (magic 20240520, version 1, token count),
    then uint16 tokens.
"""
from __future__ import annotations

import hashlib
import json
import os
from bisect import bisect_right
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence

try:
    import numpy as np
except ImportError:  # numpy is optional: windows are then read with positioned reads
    np = None

M32 = 0xFFFFFFFF
TWO_POW_32 = 1 << 32


class DataError(ValueError):
    """Bad data input; the message is one line naming the file or key."""


# ---------------------------------------------------------------------------------------------------------------
# src/data/rng.ts: uint32 arithmetic, so every platform draws the same numbers


def _avalanche32(value: int) -> int:
    h = value & M32
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & M32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & M32
    h ^= h >> 16
    return h


def _integer_words(value: int):
    """A safe integer as (low, high) uint32 words, as JavaScript's two's-complement `>>> 0` gives them."""
    if not isinstance(value, int) or abs(value) > (1 << 53) - 1:
        raise ValueError(f"seed must be a safe integer, got {value!r}")
    return value % TWO_POW_32, (value // TWO_POW_32) & M32


def mix_seed(*parts: int) -> int:
    h = 0x9E3779B9
    for part in parts:
        for word in _integer_words(part):
            h = _avalanche32(h ^ _avalanche32(word + 0x7F4A7C15))
            h = (h * 5 + 0xE6546B64) & M32
    return _avalanche32(h ^ len(parts))


def _rotl(x: int, bits: int) -> int:
    return ((x << bits) | (x >> (32 - bits))) & M32


class Rng:
    """xoshiro128** seeded through splitmix32, exactly as `Rng` in src/data/rng.ts."""

    def __init__(self, words: Sequence[int]):
        self.s = [w & M32 for w in words]
        if not any(self.s):
            self.s[0] = 0x9E3779B9

    @classmethod
    def from_seed(cls, seed: int, *stream: int) -> "Rng":
        x = mix_seed(seed, *stream)
        words = []
        for _ in range(4):
            x = (x + 0x9E3779B9) & M32
            z = x
            z = ((z ^ (z >> 16)) * 0x21F0AAAD) & M32
            z = ((z ^ (z >> 15)) * 0x735A2D97) & M32
            words.append(z ^ (z >> 15))
        return cls(words)

    def next_uint32(self) -> int:
        s0, s1, s2, s3 = self.s
        result = (_rotl((s1 * 5) & M32, 7) * 9) & M32
        shifted = (s1 << 9) & M32
        s2 ^= s0
        s3 ^= s1
        s1 ^= s2
        s0 ^= s3
        s2 ^= shifted
        self.s = [s0, s1, s2, _rotl(s3, 11)]
        return result

    def next_int(self, bound: int) -> int:
        """Uniform in [0, bound) without modulo bias (rejection of the incomplete last block)."""
        limit = TWO_POW_32 - (TWO_POW_32 % bound)
        while True:
            draw = self.next_uint32()
            if draw < limit:
                return draw % bound

    def shuffle_range(self, n: int):
        """Fisher-Yates over [0, n) in place, as Rng.shuffle; the generator is inlined (this is the hot loop)."""
        order = np.arange(n, dtype=np.uint32) if np is not None else list(range(n))
        s0, s1, s2, s3 = self.s
        for i in range(n - 1, 0, -1):
            bound = i + 1
            limit = TWO_POW_32 - (TWO_POW_32 % bound)
            while True:
                x = (s1 * 5) & M32
                draw = ((((x << 7) | (x >> 25)) & M32) * 9) & M32
                shifted = (s1 << 9) & M32
                s2 ^= s0
                s3 ^= s1
                s1 ^= s2
                s0 ^= s3
                s2 ^= shifted
                s3 = ((s3 << 11) | (s3 >> 21)) & M32
                if draw < limit:
                    break
            j = draw % bound
            order[i], order[j] = order[j], order[i]
        self.s = [s0, s1, s2, s3]
        return order


# ---------------------------------------------------------------------------------------------------------------
# src/data/batches.ts


def window_slot_count(stream_length: int, seq_len: int) -> int:
    """Slot k spans tokens [k T, k T + T + 1): consecutive slots share one token, each transition is a target once."""
    return 0 if stream_length <= seq_len else (stream_length - 1) // seq_len


_BATCH_STREAM = 0x62617463  # "batc"
_permutations: "OrderedDict[tuple, object]" = OrderedDict()


def epoch_permutation(seed: int, epoch: int, slots: int):
    """The visiting order of all slots in one epoch (a few recent epochs are kept)."""
    key = (seed, epoch, slots)
    if key not in _permutations:
        if len(_permutations) >= 4:
            _permutations.popitem(last=False)
        _permutations[key] = Rng.from_seed(seed, _BATCH_STREAM, epoch).shuffle_range(slots)
    return _permutations[key]


def batch_starts(seed: int, step: int, micro: int, batch_size: int, seq_len: int, stream_length: int, micro_per_step: int = 1) -> List[int]:
    """
    Window starts of one micro-batch: sequence number g = (step * micro_per_step + micro) * batch_size + b walks
    the epochs in order (epoch = g // slots); within an epoch, slot = permutation[g % slots].
    """
    if batch_size < 1 or seq_len < 1 or micro_per_step < 1 or not 0 <= micro < micro_per_step or step < 0:
        raise ValueError("batch_starts: need batch_size, seq_len, micro_per_step >= 1, 0 <= micro < micro_per_step, step >= 0")
    slots = window_slot_count(stream_length, seq_len)
    if slots == 0:
        raise DataError(f"data.seq_len: the training split has {stream_length} tokens, fewer than seq_len + 1 = {seq_len + 1}")
    first = (step * micro_per_step + micro) * batch_size
    starts = []
    for b in range(batch_size):
        sequence = first + b
        starts.append(int(epoch_permutation(seed, sequence // slots, slots)[sequence % slots]) * seq_len)
    return starts


def step_starts(seed: int, step: int, batch_size: int, grad_accum: int, seq_len: int, stream_length: int) -> List[List[int]]:
    """The global batch of 0-based `step`: one list of window starts per micro-batch."""
    return [batch_starts(seed, step, m, batch_size, seq_len, stream_length, grad_accum) for m in range(grad_accum)]


def batch_hash(starts: Sequence[int]) -> str:
    """First 16 hex of sha256 over the comma-joined decimal offsets of all the step's windows."""
    return hashlib.sha256(",".join(str(int(s)) for s in starts).encode()).hexdigest()[:16]


def validation_windows(stream_length: int, seq_len: int, max_tokens: int) -> List[int]:
    """min(slots, max(1, max_tokens // seq_len)) slots spread evenly over the stream; max_tokens <= 0: all."""
    slots = window_slot_count(stream_length, seq_len)
    if slots == 0:
        return []
    count = slots if max_tokens <= 0 else min(slots, max(1, max_tokens // seq_len))
    return [(i * slots // count) * seq_len for i in range(count)]


def rank_slice(micro_batches: List[List[int]], world_size: int, rank: int) -> List[List[int]]:
    """
    This rank's part of a step's global batch, as equal-sized chunks. With grad_accum divisible by the world size,
    rank r takes whole micro-batches r*A/W .. (r+1)*A/W - 1; otherwise, with batch_size divisible by it, every
    micro-batch's rows r*B/W .. (r+1)*B/W - 1. Every chunk has the same number of windows, so the mean of chunk
    losses over all ranks is the step's loss. check_world_size() refuses the other cases up front.
    """
    A, B = len(micro_batches), len(micro_batches[0])
    if A % world_size == 0:
        per = A // world_size
        return micro_batches[rank * per : (rank + 1) * per]
    per = B // world_size
    return [mb[rank * per : (rank + 1) * per] for mb in micro_batches]


def check_world_size(batch_size: int, grad_accum: int, world_size: int) -> Optional[str]:
    if grad_accum % world_size == 0 or batch_size % world_size == 0:
        return None
    return f"train.grad_accum ({grad_accum}) or train.batch_size ({batch_size}) must be divisible by the world size {world_size}"


# ---------------------------------------------------------------------------------------------------------------
# Token streams

DTYPE_WIDTH = {"uint16": 2, "uint32": 4, "int32": 4}
LLMC_MAGIC, LLMC_VERSION, LLMC_HEADER_INTS = 20240520, 1, 256
LLMC_HEADER_BYTES = LLMC_HEADER_INTS * 4


def read_llmc_header(path: str) -> int:
    """Token count of an llm.c .bin shard; a one-line DataError for a wrong magic, version or size."""
    try:
        with open(path, "rb") as f:
            head = f.read(LLMC_HEADER_BYTES)
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None
    if len(head) < 12:
        raise DataError(f"{path}: too short for an llm.c token shard header")
    magic, version, count = (int.from_bytes(head[i : i + 4], "little", signed=True) for i in (0, 4, 8))
    if magic != LLMC_MAGIC:
        raise DataError(f"{path}: not an llm.c token shard (magic {magic}, expected {LLMC_MAGIC})")
    if version != LLMC_VERSION:
        raise DataError(f"{path}: llm.c token shard version {version} is not supported (expected {LLMC_VERSION})")
    size = os.path.getsize(path)
    if size < LLMC_HEADER_BYTES + 2 * count:
        raise DataError(f"{path}: header says {count} tokens but the file has {size} bytes")
    return count


def llmc_segments(paths: Sequence[str]) -> List[dict]:
    """Segments for llm.c / modded-nanogpt FineWeb shards, in the given order."""
    return [{"path": p, "dtype": "uint16", "format": "llmc", "offset_tokens": 0, "tokens": read_llmc_header(p)} for p in paths]


def manifest_segments(manifest_path: str, split: str) -> List[dict]:
    """Segments for one split of an mlactl shard set (src/data/shards.ts), checking each file's size."""
    try:
        with open(manifest_path) as f:
            manifest = json.load(f)
    except (OSError, ValueError) as e:
        raise DataError(f"{manifest_path}: unreadable shard manifest ({e})") from None
    if manifest.get("format") != "mlactl-shards" or manifest.get("version") != 1:
        raise DataError(f"{manifest_path}: not an mlactl-shards version 1 manifest")
    dtype = manifest.get("dtype")
    if dtype not in ("uint16", "uint32"):
        raise DataError(f"{manifest_path}: unknown dtype {dtype!r}")
    folder = os.path.dirname(manifest_path)
    return [{"path": os.path.join(folder, e["file"]), "dtype": dtype, "offset_tokens": 0, "tokens": int(e["tokens"])} for e in manifest["shards"] if e["split"] == split]


class TokenStream:
    """
    One split's tokens as the concatenation of segments {path, dtype, offset_tokens, tokens[, format]}. A segment
    of format `llmc` has its offset counted after the 1024-byte header (its magic is checked); format `raw`
    (default) is a plain little-endian array. Files are memory-mapped when numpy is present.
    """

    def __init__(self, segments: Sequence[dict], what: str = "data"):
        self.paths, self.dtypes, self.byte_offsets, self.starts = [], [], [], [0]
        self._maps: Dict[int, object] = {}
        for i, seg in enumerate(segments):
            key = f"{what}[{i}]"
            path, dtype = seg.get("path"), seg.get("dtype")
            if not isinstance(path, str) or not path:
                raise DataError(f"{key}.path: missing")
            if dtype not in DTYPE_WIDTH:
                raise DataError(f"{key}.dtype: must be uint16, uint32 or int32, got {dtype!r}")
            if not os.path.isfile(path):
                raise DataError(f"{path}: file not found ({key})")
            fmt = seg.get("format", "raw")
            header = 0
            if fmt == "llmc":
                available = read_llmc_header(path)
                header = LLMC_HEADER_BYTES
                if dtype != "uint16":
                    raise DataError(f"{key}.dtype: llm.c shards hold uint16 tokens, got {dtype}")
            elif fmt == "raw":
                available = None
            else:
                raise DataError(f"{key}.format: must be raw or llmc, got {fmt!r}")
            offset, count = seg.get("offset_tokens", 0), seg.get("tokens")
            if not (isinstance(offset, int) and offset >= 0 and isinstance(count, int) and count >= 0):
                raise DataError(f"{key}: offset_tokens and tokens must be non-negative integers")
            width = DTYPE_WIDTH[dtype]
            need = header + (offset + count) * width
            if os.path.getsize(path) < need or (available is not None and offset + count > available):
                raise DataError(f"{path}: holds fewer than the {offset + count} tokens {key} asks for")
            self.paths.append(path)
            self.dtypes.append(dtype)
            self.byte_offsets.append(header + offset * width)
            self.starts.append(self.starts[-1] + count)

    def __len__(self) -> int:
        return self.starts[-1]

    def _map(self, i: int):
        if i not in self._maps:
            count = self.starts[i + 1] - self.starts[i]
            self._maps[i] = np.memmap(self.paths[i], dtype=np.dtype(self.dtypes[i]).newbyteorder("<"), mode="r", offset=self.byte_offsets[i], shape=(count,))
        return self._maps[i]

    def read(self, offset: int, n: int):
        """Tokens [offset, offset + n) as int64 (a numpy array, or a list without numpy)."""
        if offset < 0 or n < 0 or offset + n > len(self):
            raise IndexError(f"TokenStream: read [{offset}, {offset + n}) is outside [0, {len(self)})")
        parts, done = [], 0
        seg = bisect_right(self.starts, offset) - 1
        while done < n:
            inside = offset + done - self.starts[seg]
            count = min(n - done, self.starts[seg + 1] - self.starts[seg] - inside)
            if count > 0:
                parts.append(self._read_segment(seg, inside, count))
            done += count
            seg += 1
        if np is not None:
            return np.concatenate(parts) if len(parts) > 1 else parts[0]
        return [t for part in parts for t in part]

    def _read_segment(self, i: int, inside: int, count: int):
        if np is not None:
            return self._map(i)[inside : inside + count].astype(np.int64)
        width = DTYPE_WIDTH[self.dtypes[i]]
        with open(self.paths[i], "rb") as f:
            f.seek(self.byte_offsets[i] + inside * width)
            raw = f.read(count * width)
        signed = self.dtypes[i] == "int32"
        return [int.from_bytes(raw[k : k + width], "little", signed=signed) for k in range(0, len(raw), width)]

    def windows(self, starts: Sequence[int], seq_len: int):
        """Inputs and next-token targets [len(starts), seq_len] as int64 torch tensors."""
        import torch

        rows = [self.read(int(s), seq_len + 1) for s in starts]
        block = torch.from_numpy(np.stack(rows)) if np is not None else torch.tensor(rows, dtype=torch.int64)
        return block[:, :-1].contiguous(), block[:, 1:].contiguous()
