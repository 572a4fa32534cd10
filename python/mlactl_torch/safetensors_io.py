"""A small streaming safetensors reader and writer (F32, I32, U8: what mlactl stores).

Format: an unsigned 64-bit little-endian header length n, n bytes of JSON header padded with spaces so the data
starts at a multiple of 8, then the raw little-endian data. Both directions move one tensor at a time in chunks,
so a file of any size (over 2 GiB included) never becomes one bytes object.

The writer is always this one: tensors in name order and the same JSON layout as src/runfolder/safetensors.ts, so
both engines write byte-identical files for identical weights. The reader validates the header here;
`read_into` reads the data straight into existing tensors (a model's parameters, on the CPU or a GPU), and
`read_safetensors` returns new CPU tensors, read with the `safetensors` package when it is installed (from its
memory map) and with plain chunked reads otherwise.
"""
from __future__ import annotations

import ctypes
import json
import os
import sys
from typing import Dict, Optional, Sequence, Tuple

import torch

try:
    from safetensors import safe_open as _package_safe_open
except ImportError:  # Debian has no python3-safetensors; our reader is the CPU path there
    _package_safe_open = None

DTYPES = {"F32": torch.float32, "I32": torch.int32, "U8": torch.uint8}
WIDTHS = {"F32": 4, "I32": 4, "U8": 1}
CODES = {v: k for k, v in DTYPES.items()}
CHUNK_BYTES = 64 << 20

if sys.byteorder != "little":  # the format is little-endian and we copy memory as is
    raise ImportError("mlactl_torch's safetensors I/O needs a little-endian host")


class SafetensorsError(ValueError):
    """A file that is not a well-formed safetensors file of the supported dtypes (message names the file)."""


def _bytes_of(t: torch.Tensor) -> memoryview:
    """The bytes of a contiguous CPU tensor, without a copy (the tensor must outlive the view)."""
    n = t.numel() * t.element_size()
    if n == 0:
        return memoryview(b"")
    return memoryview((ctypes.c_ubyte * n).from_address(t.data_ptr())).cast("B")


def write_safetensors(path: str, tensors: Dict[str, torch.Tensor], metadata: Optional[Dict[str, str]] = None) -> None:
    """Write `tensors` (any device) in name order, one tensor and one 64 MiB chunk at a time, then fsync."""
    names = sorted(tensors)
    header: Dict[str, object] = {"__metadata__": dict(metadata or {})}
    offset = 0
    for name in names:
        t = tensors[name]
        if t.dtype not in CODES:
            raise ValueError(f"safetensors: {name} has unsupported dtype {t.dtype}")
        size = t.numel() * t.element_size()
        header[name] = {"dtype": CODES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + size]}
        offset += size
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * ((8 - (len(head) + 8) % 8) % 8)
    with open(path, "wb") as f:
        f.write(len(head).to_bytes(8, "little"))
        f.write(head)
        for name in names:
            host = tensors[name].detach().to("cpu").contiguous()
            view = _bytes_of(host)
            for start in range(0, len(view), CHUNK_BYTES):
                f.write(view[start : start + CHUNK_BYTES])
            del view, host
        f.flush()
        os.fsync(f.fileno())


def read_header(path: str) -> Tuple[Dict[str, dict], Dict[str, str], int]:
    """(entries by name, metadata, byte offset of the data), after checking every entry against the file size."""
    if not os.path.isfile(path):
        raise SafetensorsError(f"{path}: file not found")
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise SafetensorsError(f"{path}: not a safetensors file (too short)")
        n = int.from_bytes(prefix, "little")
        if 8 + n > size:
            raise SafetensorsError(f"{path}: truncated safetensors header")
        try:
            header = json.loads(f.read(n).decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise SafetensorsError(f"{path}: unreadable safetensors header") from None
    if not isinstance(header, dict):
        raise SafetensorsError(f"{path}: unreadable safetensors header")
    metadata = header.pop("__metadata__", None) or {}
    body = size - 8 - n
    for name, entry in header.items():
        dtype = entry.get("dtype") if isinstance(entry, dict) else None
        if dtype not in DTYPES:
            raise SafetensorsError(f"{path}: tensor {name} has unsupported dtype {dtype}")
        shape, (a, b) = entry["shape"], entry["data_offsets"]
        count = 1
        for dim in shape:
            count *= dim
        if a < 0 or b - a != count * WIDTHS[dtype] or b > body:
            raise SafetensorsError(f"{path}: tensor {name} has inconsistent offsets")
    return header, metadata, 8 + n


def first_mismatch(source: str, expected: Dict[str, Tuple[int, ...]], found: Dict[str, Sequence[int]], hint: str) -> Optional[str]:
    """
    How a file's tensors (`found`: name -> shape) first differ from exactly the `expected` names and shapes, as a
    one-line message naming `source` (`hint` guesses why, for a wrong or missing name); None when they match. Both
    checkpoint files, the weights and the optimizer state, are checked this strictly before anything is changed.
    """
    extra = sorted(set(found) - set(expected))
    if extra:
        return f"{source}: unexpected tensor {extra[0]} ({hint})"
    missing = sorted(set(expected) - set(found))
    if missing:
        return f"{source}: missing tensor {missing[0]} ({hint})"
    for name, shape in expected.items():
        if tuple(found[name]) != tuple(shape):
            return f"{source}: tensor {name} has shape {list(found[name])}, expected {list(shape)}"
    return None


def _read_exactly(f, view: memoryview, path: str, name: str) -> None:
    got = 0
    while got < len(view):
        n = f.readinto(view[got:])
        if not n:
            raise SafetensorsError(f"{path}: short read in tensor {name}")
        got += n


class _PinnedChunks:
    """Two pinned host buffers used in turn: one is filled from the file while the other's copy to the GPU runs."""

    def __init__(self, size: int, device: torch.device):
        self.buffers = [torch.empty(size, dtype=torch.uint8).pin_memory() for _ in range(2)]
        self.copies: list = [None, None]
        self.turn = 0
        self.device = device

    def take(self) -> torch.Tensor:
        self.turn ^= 1
        if self.copies[self.turn] is not None:
            self.copies[self.turn].synchronize()  # its last copy has left it
        return self.buffers[self.turn]

    def copied(self) -> None:
        # A copy to the GPU runs on the target device's current stream: the event marks its end there.
        self.copies[self.turn] = torch.cuda.Event()
        self.copies[self.turn].record(torch.cuda.current_stream(self.device))

    def finish(self) -> None:
        torch.cuda.synchronize(self.device)  # the buffers are freed on return: every copy must be done


def read_into(path: str, entries: Dict[str, dict], data_start: int, targets: Dict[str, torch.Tensor]) -> None:
    """
    Read each named tensor of a checked file (`read_header`'s entries) straight into its target: a contiguous
    tensor of the entry's shape and dtype, on any device. A CPU target receives the file's bytes directly; a CUDA
    target gets them through two pinned chunks in turn, so reading the next chunk overlaps copying the last. Neither
    holds a second copy of the file: loading a 400M model this way needs 128 MiB of host memory beside it.
    """
    devices = {t.device for t in targets.values() if t.device.type != "cpu"}
    if len(devices) > 1 or any(t.device.type not in ("cpu", "cuda") for t in targets.values()):
        raise ValueError(f"read_into: targets on the CPU and at most one CUDA device, got {sorted(map(str, devices))}")
    device_bytes = sum(t.numel() * t.element_size() for t in targets.values() if t.device.type == "cuda")
    chunks = _PinnedChunks(min(CHUNK_BYTES, device_bytes), devices.pop()) if device_bytes else None
    with open(path, "rb", buffering=0) as f:
        for name in sorted(targets, key=lambda n: entries[n]["data_offsets"][0]):  # one pass through the file
            target = targets[name].detach()
            if not target.is_contiguous():
                raise ValueError(f"read_into: target {name} is not contiguous")
            a, b = entries[name]["data_offsets"]
            f.seek(data_start + a)
            if target.device.type == "cpu":
                _read_exactly(f, _bytes_of(target), path, name)
                continue
            flat = target.view(-1).view(torch.uint8)
            for at in range(0, b - a, CHUNK_BYTES):
                n = min(CHUNK_BYTES, b - a - at)
                buffer = chunks.take()
                _read_exactly(f, _bytes_of(buffer)[:n], path, name)
                flat[at : at + n].copy_(buffer[:n], non_blocking=True)
                chunks.copied()
    if chunks is not None:
        chunks.finish()


def read_safetensors(path: str, use_package: bool = True) -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    """All tensors of a file as CPU tensors, and its metadata."""
    entries, metadata, data_start = read_header(path)
    if use_package and _package_safe_open is not None:
        # The package maps the file; each tensor is copied out so the file may be replaced while tensors live on.
        with _package_safe_open(path, framework="pt") as f:
            return {name: f.get_tensor(name).clone() for name in entries}, metadata
    tensors = {name: torch.empty(entry["shape"], dtype=DTYPES[entry["dtype"]]) for name, entry in entries.items()}
    read_into(path, entries, data_start, tensors)
    return tensors, metadata
