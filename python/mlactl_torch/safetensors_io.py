"""A small streaming safetensors reader and writer (F32, I32, U8: what mlactl stores).

Format: an unsigned 64-bit little-endian header length n, n bytes of JSON header padded with spaces so the data
starts at a multiple of 8, then the raw little-endian data. Both directions move one tensor at a time in chunks,
so a file of any size (over 2 GiB included) never becomes one bytes object.

The writer is always this one: tensors in name order and the same JSON layout as src/runfolder/safetensors.ts, so
both engines write byte-identical files for identical weights. The reader validates the header here and reads
the data with the `safetensors` package when it is installed (from its memory map), with plain chunked reads
otherwise.
"""
from __future__ import annotations

import ctypes
import json
import os
import sys
from typing import Dict, Iterator, Optional, Tuple

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


def stream_tensors(path: str, entries: Dict[str, dict], data_start: int, use_package: bool = True) -> Iterator[Tuple[str, torch.Tensor]]:
    """
    The tensors of a checked file (`read_header`'s entries) as CPU tensors, one at a time: each is valid until the
    next is read (the package's come from its memory map), so a caller copies it somewhere or clones it. Loading
    weights this way never holds a second copy of the whole file.
    """
    if use_package and _package_safe_open is not None:
        with _package_safe_open(path, framework="pt") as f:
            for name in entries:
                yield name, f.get_tensor(name)
        return
    with open(path, "rb") as f:
        for name, entry in entries.items():
            t = torch.empty(entry["shape"], dtype=DTYPES[entry["dtype"]])
            view = _bytes_of(t)
            f.seek(data_start + entry["data_offsets"][0])
            for start in range(0, len(view), CHUNK_BYTES):
                chunk = view[start : start + CHUNK_BYTES]
                if f.readinto(chunk) != len(chunk):
                    raise SafetensorsError(f"{path}: short read in tensor {name}")
            del view
            yield name, t


def read_safetensors(path: str, use_package: bool = True) -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    """All tensors of a file as CPU tensors of their own (the file may be replaced while they live on), and its metadata."""
    entries, metadata, data_start = read_header(path)
    mapped = use_package and _package_safe_open is not None
    return {name: t.clone() if mapped else t for name, t in stream_tensors(path, entries, data_start, use_package)}, metadata
