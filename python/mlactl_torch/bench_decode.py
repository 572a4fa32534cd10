"""`python -m mlactl_torch bench-decode`: the decode step of one attention layer, timed per cache, for `mlactl bench
decode --engine torch` (the TypeScript side summarises the samples and writes the same files as the tfjs bench).

Per context, as src/bench/decode.ts: one random layer (unit-gain weights, norm gains in [0.5, 1.5]), one token
history (latents drawn as N(0, 1) rows through the layer's latent norm, shared keys N(0, 1), the last row the new
token's own), every cache filled from it with the decode path's append math, each cache's step checked against an
independent float64 reference (explicit per-head keys, training form), then single-token steps timed against the
fixed-size caches, interleaved round by round.

Timing on CUDA: each step is captured once in a CUDA graph and replayed, timed with CUDA events, so kernel launch
overhead does not decide the ratio; before every timed replay a 256 MiB memset evicts L2, so small caches are read
from memory as a real model's layers would be (Triton's do_bench does the same). On the CPU: wall-clock and process
time of eager steps. The bandwidth bound of a step is the bytes it must read (its cache rows once, and the layer
weights the step uses) over the copy bandwidth measured in the same run ((read + written bytes) / time of a large
device-to-device copy).
"""
from __future__ import annotations

import copy
import math
import os
import statistics
import time
from typing import Callable, Dict, List, Optional, Tuple

import torch

from .decode import (
    CACHE_KINDS,
    DecodeLayer,
    LayerCache,
    compile_available,
    fused_attention_for,
    max_relative_error,
    numbers_per_token,
)
from .model import MLAttention, ModelSpec, rope_tables

FLUSH_BYTES = 256 << 20
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
# Max-abs error over max-abs of the float64 output. float32: the contract's 1e-5 (design note §4). bf16 rounds the
# weights, the cache and the scores to 8 bits: about 1e-2 is what that precision can give.
TOLERANCE = {"fp32": 1e-5, "bf16": 5e-2}


class BenchError(ValueError):
    """Bad input or a context that cannot fit; one line naming the flag."""


# ---------------------------------------------------------------------------------------------------------------
# The layer, the history, the caches


@torch.no_grad()
def make_layer(dims: ModelSpec, seed: int, device) -> MLAttention:
    """Random weights at unit gain (std 1/sqrt(fan-in)) and norm gains uniform in [0.5, 1.5], drawn on the CPU."""
    attn = MLAttention(dims)
    gen = torch.Generator().manual_seed(seed * 7919 + 1)
    for _, p in sorted(attn.named_parameters()):
        if p.dim() == 1:
            p.copy_(torch.rand(p.shape, generator=gen) + 0.5)
        else:
            p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(p.shape[1]))
    return attn.to(device)


@torch.no_grad()
def draw_history(attn: MLAttention, dims: ModelSpec, x: torch.Tensor, S: int, seed: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """c [B, S, dc] and kp [B, S, dr] in float32: S-1 drawn tokens, then the new token's own row (from x [B, d])."""
    B = x.shape[0]
    gen = torch.Generator(device=x.device).manual_seed(seed * 1000003 + S)
    c = attn.kv_a_layernorm(torch.randn(B, S, dims.dc, device=x.device, generator=gen))
    kp = torch.randn(B, S, dims.dr, device=x.device, generator=gen)
    a, kp_new = attn.kv_a_proj_with_mqa(x).split([dims.dc, dims.dr], dim=-1)
    c[:, -1] = attn.kv_a_layernorm(a)
    kp[:, -1] = kp_new
    return c, kp


def fill_block(B: int) -> int:
    """Tokens per block when filling caches and the reference: bounds the explicit keys to a few hundred MB."""
    return max(256, 16384 // B)


@torch.no_grad()
def build_cache(kind: str, layer: DecodeLayer, c: torch.Tensor, kp: torch.Tensor, dtype: torch.dtype) -> LayerCache:
    B, S, _ = c.shape
    cache = LayerCache(kind, layer.spec, B, S, c.device, dtype)
    step = fill_block(B)
    for start in range(0, S, step):
        end = min(S, start + step)
        layer.store(cache, c[:, start:end].to(dtype), kp[:, start:end].to(dtype), start)
    return cache


# ---------------------------------------------------------------------------------------------------------------
# The float64 reference: the training form (design note §1, §3) with explicit per-head keys and values


def _rotate(z: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Adjacent pairs (2i, 2i+1) of z [..., n, X, dr] rotated by the angles of cos/sin [n, dr/2]."""
    z0, z1 = z[..., 0::2], z[..., 1::2]
    c, s = cos[:, None, :], sin[:, None, :]
    out = torch.empty_like(z)
    out[..., 0::2] = z0 * c - z1 * s
    out[..., 1::2] = z0 * s + z1 * c
    return out


def _group_norm(z: torch.Tensor, weight: torch.Tensor, G: int, eps: float) -> torch.Tensor:
    """z [n, H, w]: one statistic per token and group of H/G heads over all their entries, then the weight."""
    n, H, w = z.shape
    zg = z.reshape(n, G, H // G, w)
    return (zg / torch.sqrt((zg * zg).mean(dim=(2, 3), keepdim=True) + eps)).reshape(n, H, w) * weight


@torch.no_grad()
def reference_output(attn: MLAttention, spec: ModelSpec, x: torch.Tensor, c: torch.Tensor, kp: torch.Tensor) -> torch.Tensor:
    """The new token's (position S-1) attention output [B, d] in float64; spec.variant says whether QK-norm applies."""
    s = spec
    W = {name: p.detach().double() for name, p in attn.named_parameters()}
    B, S, _ = c.shape
    cos, sin = (t.to(c.device) for t in rope_tables(s.dr, S, s.rope_theta))
    qk_norm = s.variant == "qk-norm"
    full = s.scope == "full"
    w_kv = W["kv_b_proj.weight"].view(s.H, s.dn + s.dv, s.dc)
    w_uk, w_uv = w_kv[:, : s.dn], w_kv[:, s.dn :]  # [H, dn, dc], [H, dv, dc]

    def normed(z, name):  # z [n, H, dn+dr]
        if not qk_norm:
            return z
        if full:
            return _group_norm(z, W[name], s.G, s.qk_eps)
        return torch.cat([_group_norm(z[..., : s.dn], W[name], s.G, s.qk_eps), z[..., s.dn :]], dim=-1)

    out = torch.empty(B, s.d, dtype=torch.float64, device=c.device)
    step = fill_block(1)
    for b in range(B):
        xb = x[b].double()
        if s.dq > 0:
            qa = W["q_a_proj.weight"] @ xb
            qa = W["q_a_layernorm.weight"] * qa / torch.sqrt((qa * qa).mean() + s.norm_eps)
            q = W["q_b_proj.weight"] @ qa
        else:
            q = W["q_proj.weight"] @ xb
        q = normed(q.view(1, s.H, s.dn + s.dr), "q_norm.weight")
        q = torch.cat([q[..., : s.dn], _rotate(q[..., s.dn :], cos[S - 1 : S], sin[S - 1 : S])], dim=-1)[0]  # [H, dn+dr]
        scores = torch.empty(s.H, S, dtype=torch.float64, device=c.device)
        for j0 in range(0, S, step):
            j1 = min(S, j0 + step)
            cb = c[b, j0:j1].double()
            kn = torch.einsum("nc,hdc->nhd", cb, w_uk)  # [n, H, dn]
            k = torch.cat([kn, kp[b, j0:j1].double()[:, None, :].expand(-1, s.H, -1)], dim=-1)
            k = normed(k, "k_norm.weight")
            k = torch.cat([k[..., : s.dn], _rotate(k[..., s.dn :], cos[j0:j1], sin[j0:j1])], dim=-1)
            scores[:, j0:j1] = torch.einsum("hd,nhd->hn", q, k) * s.scale
        p = torch.softmax(scores, dim=-1)
        o = torch.zeros(s.H, s.dv, dtype=torch.float64, device=c.device)
        for j0 in range(0, S, step):
            j1 = min(S, j0 + step)
            v = torch.einsum("nc,hvc->nhv", c[b, j0:j1].double(), w_uv)  # [n, H, dv]
            o += torch.einsum("hn,nhv->hv", p[:, j0:j1], v)
        out[b] = W["o_proj.weight"] @ o.reshape(-1)
    return out


# ---------------------------------------------------------------------------------------------------------------
# Memory, bandwidth, timing


def estimate_bytes(dims: ModelSpec, S: int, B: int, caches: List[str], elem: int, device_type: str) -> int:
    """Peak bytes of one context: the float32 history, every cache, score temporaries, the flush buffer."""
    history = B * S * (dims.dc + dims.dr) * 4
    cache_bytes = sum(B * S * numbers_per_token(dims, k) * elem for k in caches)
    work = 8 * B * dims.H * S * 4 + fill_block(B) * B * dims.H * (dims.dn + dims.dr) * 8 * 3
    return history + cache_bytes + work + (FLUSH_BYTES if device_type == "cuda" else 0)


def free_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 1 << 62


def copy_bandwidth(device: torch.device) -> float:
    """(bytes read + bytes written) per second of a large device-to-device copy: the step's memory roofline."""
    if device.type == "cuda":
        n = min(1 << 30, torch.cuda.mem_get_info(device)[0] // 4)
        src = torch.empty(n, dtype=torch.uint8, device=device).fill_(1)
        dst = torch.empty_like(src)
        dst.copy_(src)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(10):
            dst.copy_(src)
        end.record()
        torch.cuda.synchronize()
        return 2 * n * 10 / (start.elapsed_time(end) / 1000)
    n = 256 << 20
    src = torch.ones(n, dtype=torch.uint8)
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - t0)
    return 2 * n / best


def time_cuda(steps: Dict[str, Callable[[], torch.Tensor]], repeats: int, warmup: int, inner: int, device) -> Dict[str, List[float]]:
    """
    Capture each step in a CUDA graph (after warm-up calls on a side stream, which also compile), then `repeats`
    rounds of every step, round-robin with a rotating start; in a round each step is replayed `inner` times, each
    after an L2-evicting memset and between two CUDA events. Returns ms per step, one mean per round.
    """
    graphs = {}
    for key, fn in steps.items():
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(max(2, warmup)):
                fn()
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn()
        graphs[key] = graph
    flush = torch.empty(FLUSH_BYTES, dtype=torch.uint8, device=device)
    keys = list(steps)
    marks: Dict[str, List[list]] = {k: [] for k in keys}
    for r in range(repeats):
        for i in range(len(keys)):
            key = keys[(i + r) % len(keys)]
            pairs = []
            for _ in range(inner):
                flush.zero_()
                a, z = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                graphs[key].replay()
                z.record()
                pairs.append((a, z))
            marks[key].append(pairs)
    torch.cuda.synchronize(device)
    return {k: [statistics.fmean(a.elapsed_time(z) for a, z in pairs) for pairs in marks[k]] for k in keys}


def time_cpu(steps: Dict[str, Callable[[], torch.Tensor]], repeats: int, warmup: int) -> Tuple[Dict[str, List[float]], Dict[str, List[float]]]:
    """Wall-clock and process-time ms of eager steps, interleaved as time_cuda."""
    keys = list(steps)
    for _ in range(warmup):
        for k in keys:
            steps[k]()
    wall = {k: [] for k in keys}
    cpu = {k: [] for k in keys}
    for r in range(repeats):
        for i in range(len(keys)):
            key = keys[(i + r) % len(keys)]
            c0, t0 = time.process_time(), time.perf_counter()
            steps[key]()
            wall[key].append((time.perf_counter() - t0) * 1000)
            cpu[key].append((time.process_time() - c0) * 1000)
    return wall, cpu


# ---------------------------------------------------------------------------------------------------------------
# The run


def run_bench(dims: ModelSpec, contexts: List[int], batch: int, repeats: int, warmup: int, caches: List[str], seed: int,
              device: torch.device, dtype_name: str, inner: int = 5, log: Callable[[str], None] = print, tolerance: Optional[float] = None) -> dict:
    """Measurements for `mlactl bench decode --engine torch`; the TypeScript side summarises and writes them."""
    started = time.time()
    dtype = DTYPES[dtype_name]
    tol = TOLERANCE[dtype_name] if tolerance is None else tolerance
    elem = torch.tensor([], dtype=dtype).element_size()
    unknown = [k for k in caches if k not in CACHE_KINDS]
    if unknown or not caches:
        raise BenchError(f"--caches: unknown cache {unknown[0]!r}" if unknown else "--caches: empty list")
    available = free_bytes(device)
    estimates = []
    for S in contexts:
        need = estimate_bytes(dims, S, batch, caches, elem, device.type)
        estimates.append({"context": S, "total": need})
        if need > available:
            raise BenchError(f"--contexts {S}{f' at --batch {batch}' if batch > 1 else ''}: needs an estimated {need / 2**30:.2f} GiB, more than the "
                             f"{available / 2**30:.2f} GiB free on {device}; lower the context or the batch, or drop a cache from --caches")
    if device.type == "cuda":
        torch.set_float32_matmul_precision("highest")  # float32 means float32: no TF32 in the products
    spec = ModelSpec(**{**dims.__dict__, "variant": "qk-norm", "L": 1})
    plain_spec = ModelSpec(**{**spec.__dict__, "variant": "baseline"})
    attn = make_layer(spec, seed, device)  # float32 master weights: the reference reads these
    timed_attn = attn if dtype == torch.float32 else copy.deepcopy(attn).to(dtype)
    x = torch.randn(batch, spec.d, device=device, generator=torch.Generator(device=device).manual_seed(seed * 31 + 7))
    bandwidth = copy_bandwidth(device)
    log(f"copy bandwidth {bandwidth / 1e9:.1f} GB/s (read + write)")

    fused = fused_attention_for(device, dtype, spec, log) if any(k != "full-key" for k in caches) else None
    fused_note = "not on CUDA" if device.type != "cuda" else ("self-check passed" if fused is not None else "unavailable (see the log)")
    fused_config = None
    if fused is not None:
        from . import decode_triton

        cfg = decode_triton.chosen_config(device, dtype, spec)
        fused_config = cfg.__dict__ if cfg is not None else None
    compiled = compile_available(device)
    compile_note = "torch.compile on CUDA" if compiled else "eager (no torch.compile here, or MLACTL_DECODE_COMPILE=0)"

    # One pair of decode layers for the whole run (RoPE tables long enough for the longest context), so
    # torch.compile traces each function once: the context length is a dynamic size, not a new graph.
    cos, sin = (t.to(device) for t in rope_tables(spec.dr, max(contexts), spec.rope_theta))
    layers = {"latent": DecodeLayer(timed_attn, plain_spec, cos, sin, dtype), "normed": DecodeLayer(timed_attn, spec, cos, sin, dtype)}
    if compiled:
        for l in layers.values():
            l.compile()
    layer_for = lambda kind: layers["latent" if kind == "latent" else "normed"]  # noqa: E731

    def eager_after(failure: str, e: Exception) -> str:
        """A compiled step failed (`failure` says where): every layer goes eager for the rest of the run, said in the log and the result."""
        log(f"{failure} failed ({type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}); eager from now on")
        for l in layers.values():
            l.uncompile()
        return f"eager ({failure} failed: {type(e).__name__})"

    measurements = []
    for S in contexts:
        say = lambda m: log(f"context {S}: {m}")  # noqa: E731
        say(f"drawing {S} tokens x {batch} sequence(s)")
        c, kp = draw_history(attn, spec, x, S, seed)
        built, prefill = {}, {}
        for kind in caches:
            t0 = time.perf_counter()
            built[kind] = build_cache(kind, layer_for(kind), c, kp, dtype)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            prefill[kind] = (time.perf_counter() - t0) * 1000
        t0 = time.perf_counter()
        refs = {v: reference_output(attn, sp, x, c, kp) for v, sp in (("plain", plain_spec), ("qk-norm", spec))
                if any((k == "latent") == (v == "plain") for k in caches)}
        say(f"float64 reference in {time.perf_counter() - t0:.2f} s")
        del c, kp
        xs = x.to(dtype)[:, None, :]  # [B, 1, d]: the new token, whose rows are the caches' last

        def step_of(kind: str, impl: str):
            layer, cache = layer_for(kind), built[kind]
            return lambda: layer.attend(xs, cache, S, fused if impl == "fused" else None)

        steps, errors = {}, {}
        for kind in caches:
            for impl in ("torch", "fused"):
                if impl == "fused" and (fused is None or kind == "full-key"):
                    continue
                fn = step_of(kind, impl)
                try:
                    with torch.no_grad():
                        out = fn()[:, 0]
                except Exception as e:
                    if not compiled:
                        raise
                    compiled, compile_note = False, eager_after("torch.compile", e)
                    with torch.no_grad():
                        out = fn()[:, 0]
                err = max_relative_error(out, refs["plain" if kind == "latent" else "qk-norm"])
                if not err <= tol:
                    message = f"context {S}: the {kind} cache{' (fused kernel)' if impl == 'fused' else ''} gives a different attention output (relative error {err:.2e} > {tol}); no timing was taken"
                    if impl == "fused":
                        log(f"warning: {message}; fused rows dropped")
                        continue
                    raise CheckFailed(message)
                steps[f"{kind}|{impl}"] = fn
                errors[f"{kind}|{impl}"] = err
        say("outputs agree (" + ", ".join(f"{k.replace('|torch', '').replace('|fused', ' fused')} {e:.1e}" for k, e in errors.items()) + "); timing")
        with torch.no_grad():
            if device.type == "cuda":
                try:
                    wall = time_cuda(steps, repeats, warmup, inner, device)
                except Exception as e:
                    if not compiled:
                        raise
                    # A compiled step that cannot be captured in a CUDA graph: eager steps.
                    compiled, compile_note = False, eager_after("capturing the compiled step", e)
                    torch.cuda.synchronize(device)
                    wall = time_cuda(steps, repeats, warmup, inner, device)
                cpu = {k: [] for k in steps}
            else:
                wall, cpu = time_cpu(steps, repeats, warmup)
        entries = []
        for key in steps:
            kind, impl = key.split("|")
            bytes_read = batch * S * numbers_per_token(spec, kind) * elem + layer_for(kind).step_weight_bytes(kind)
            entries.append({"cache": kind, "impl": impl, "prefill_ms": prefill[kind], "check_rel_err": errors[key], "bytes_read": bytes_read,
                            "bound_ms": bytes_read / bandwidth * 1000, "samples_ms": wall[key], "samples_cpu_ms": cpu[key]})
        say(", ".join(f"{e['cache']}{' fused' if e['impl'] == 'fused' else ''} {statistics.median(e['samples_ms']):.3f} ms" for e in entries))
        measurements.append({"context": S, "entries": entries})
        del built, steps
        if device.type == "cuda":
            torch.cuda.empty_cache()

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    return {
        "event": "result",
        "engine": "torch",
        "torch": torch.__version__,
        "device": name,
        "dtype": dtype_name,
        "timing": f"CUDA graphs, CUDA events, L2 flushed, {inner} replays per round" if device.type == "cuda" else "wall clock, eager",
        "compile": compile_note,
        "copy_bandwidth_gbs": bandwidth / 1e9,
        "fused": {"available": fused is not None, "note": fused_note, "config": fused_config},
        "tolerance": tol,
        "measurements": measurements,
        "memory_estimates": estimates,
        "elapsed_s": time.time() - started,
    }


class CheckFailed(RuntimeError):
    """A cache's step differs from the float64 reference: the benchmark stops before timing (exit 1)."""


def dims_from_json(raw: dict) -> ModelSpec:
    """The attention dims as TypeScript sends them; max_seq_len is unused here (the tables cover each context)."""
    from .job import parse_spec

    raw = {k: v for k, v in raw.items() if k not in ("maxSeqLen", "max_seq_len")}
    return ModelSpec(**parse_spec({**raw, "max_seq_len": 1}))


def env_threads() -> int:
    return int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
