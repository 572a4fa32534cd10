"""Time the single-token latent attention alone (no query or output projection) on one CUDA device, side by side:
the fused Triton kernel under each launch config, and the PyTorch path's forms (torch.compile'd). For choosing
decode_triton.candidate_configs and the PyTorch path's form; bench/gpu-decode.sh measures the whole step.

    PYTHONPATH=python python tools/tune_decode.py [--contexts 16k,64k,256k] [--repeats 5]
    PYTHONPATH=python python tools/tune_decode.py --step 1:16k,1:256k,8:256k --programs ''   (the whole step)

DeepSeek-like layer (H 16, dc 512, dr 64), bf16 cache, scope full. Per case: median ms over rounds (CUDA graphs,
L2 flushed before each replay, as bench_decode.time_cuda), the fraction of the bandwidth bound (the cache rows
once, over the copy bandwidth measured here), and latent+invrms / latent for the same form and launch config.
Every form is checked against the float64 reference on the same inputs before it is timed. Tables print last.
"""
from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from mlactl_torch import decode_triton as dt  # noqa: E402
from mlactl_torch.bench_decode import copy_bandwidth, time_cuda  # noqa: E402
from mlactl_torch.decode import latent_attention, latent_attention_chunked  # noqa: E402

H, DC, DR, DN = 16, 512, 64, 128


def contexts_of(text: str):
    return [int(t[:-1]) * 1024 if t.endswith("k") else int(t) for t in text.split(",")]


def problem(B, S, G, dtype, seed):
    """Inputs as decode_triton's self-check draws them; G = 0 means the plain latent cache (no rk)."""
    q, kv, rk, q_stat = dt.random_problem(B, S, H, DC, DR, max(G, 1), DN + DR, dtype, "cuda", seed)
    return (q, kv, None, None) if G == 0 else (q, kv, rk, q_stat)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--contexts", default="16k,64k,256k")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--skip-torch", action="store_true")
    ap.add_argument("--skip-fused", action="store_true")
    ap.add_argument("--configs", default="", help="block_n/warps/stages list, e.g. 32/4/3,64/4/2 (default: a grid of 8)")
    ap.add_argument("--programs", default="1,2,4", help="programs per SM to try (at every context: no halving for short caches)")
    ap.add_argument("--step", default="", help="time the whole decode step (query, attention, output) instead, for these "
                    "B:S cases, e.g. 1:16k,1:256k,8:256k: the fused kernel as used, with the query rotated before it, with "
                    "the old combine plan, under each --programs count (none: --programs ''), and the "
                    "PyTorch path; then profile the kernels of the batch-1 step at the longest context")
    args = ap.parse_args()
    device = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = False
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    bw = copy_bandwidth(device)
    print(f"{torch.cuda.get_device_name(device)}, {sms} SMs, copy {bw / 1e9:.0f} GB/s, torch {torch.__version__}, triton {dt.triton.__version__}", flush=True)
    contexts, batches = contexts_of(args.contexts), [int(b) for b in args.batches.split(",")]
    tables = []
    if args.step:
        print("\n\n".join(whole_step(args, sms, bw, device)))
        return 0

    def prepared(B, S, G, dtype=torch.bfloat16):
        """Inputs and their float64 reference, drawn once per case and shared by every form and config."""
        inputs = problem(B, S, G, dtype, S + B)
        q, kv, rk, q_stat = inputs
        return inputs, dt.reference(q, kv, rk, DC, False, q_stat, 1e-6)

    def measure(label, fn, case, tol):
        (q, kv, rk, q_stat), want = case
        with torch.no_grad():
            got = fn(q, kv, rk, DC, False, q_stat, 1e-6)
        err = dt.relative_error(got, want)
        if not err <= tol:
            print(f"{label}: relative error {err:.2e} > {tol}: not timed", flush=True)
            return None
        with torch.no_grad():
            ms = time_cuda({"x": lambda: fn(q, kv, rk, DC, False, q_stat, 1e-6)}, args.repeats, 2, 5, device)["x"]
        return statistics.median(ms)

    def bound_ms(B, S, elem=2):
        """The plain latent cache read once at the measured copy bandwidth."""
        return B * S * (DC + DR) * elem / bw * 1000

    # --- the fused kernel: launch configs x program counts -------------------------------------------------------
    if not args.skip_fused:
        rows = []
        shapes = [tuple(int(v) for v in c.split("/")) for c in args.configs.split(",")] if args.configs else list(itertools.product((32, 64), (4, 8), (2, 3)))
        configs = [dt.KernelConfig(bn, w, st, "default", mult * sms, long_tokens=0)
                   for (bn, w, st), mult in itertools.product(shapes, [int(m) for m in args.programs.split(",")])]
        for B, S in itertools.product(batches, contexts):
            cases = {G: prepared(B, S, G) for G in (0, 16, 1)}
            for c in configs:
                fn = lambda *a, c=c: dt.fused_latent_attention(*a, config=c)  # noqa: E731
                times = {}
                for G, case in cases.items():
                    try:
                        times[G] = measure(f"fused {c} B{B} S{S} G{G}", fn, case, dt.tolerance(torch.bfloat16))
                    except Exception as e:  # a config that does not compile (shared memory) is a row that says so
                        print(f"fused {c}: {type(e).__name__}: {(str(e).splitlines() or [''])[0][:160]}", flush=True)
                        times[G] = None
                rows.append((c, B, S, times))
            del cases
            torch.cuda.empty_cache()
            print(f"fused B{B} S{S} done at {time.perf_counter():.0f}s", flush=True)
        t = ["| block_n/warps/stages | programs | B | S | latent ms | of bound | G16 ms | G16/latent | G1 ms | G1/latent |", "|---|---|---|---|---|---|---|---|---|---|"]
        for c, B, S, tm in rows:
            lat = tm.get(0)
            f = lambda G: (f"{tm[G]:.4f}", f"{tm[G] / lat:.3f}") if tm.get(G) and lat else ("-", "-")  # noqa: E731
            t.append(f"| {c.block_n}/{c.num_warps}/{c.num_stages} | {c.programs} | {B} | {S // 1024}k | {lat:.4f} | {bound_ms(B, S) / lat:.2f} | {' | '.join(f(16))} | {' | '.join(f(1))} |"
                     if lat else f"| {c.block_n}/{c.num_warps}/{c.num_stages} | {c.programs} | {B} | {S // 1024}k | - | - | - | - | - | - |")
        tables.append("\n".join(t))

    # --- the PyTorch path: the plain form against the chunked one ---------------------------------------------------
    if not args.skip_torch:
        forms = {"plain": torch.compile(latent_attention, dynamic=True)}
        for chunk in (1024, 2048, 4096, 8192):
            compiled = torch.compile(latent_attention_chunked, dynamic=True)
            forms[f"chunked {chunk}"] = lambda *a, f=compiled, chunk=chunk: f(*a, chunk=chunk)
        t = ["| form | dtype | B | S | latent ms | of bound | G16 ms | G16/latent |", "|---|---|---|---|---|---|---|---|"]
        results = {}
        runs = [(torch.bfloat16, B, S) for B, S in itertools.product(batches, contexts)] + [(torch.float32, 1, S) for S in contexts]
        for cache_dtype, B, S in runs:
            cases = {G: prepared(B, S, G, cache_dtype) for G in (0, 16)}
            tol = 5e-2 if cache_dtype == torch.bfloat16 else 1e-5
            for name, fn in forms.items():
                results[name, cache_dtype, B, S] = {G: measure(f"{name} B{B} S{S} G{G}", fn, case, tol) for G, case in cases.items()}
            del cases
            torch.cuda.empty_cache()
            print(f"torch forms {cache_dtype} B{B} S{S} done at {time.perf_counter():.0f}s", flush=True)
        for (name, cache_dtype, B, S), tm in sorted(results.items(), key=lambda kv: (str(kv[0][1]), kv[0][2], kv[0][3])):
            lat, g16 = tm[0], tm[16]
            bound = bound_ms(B, S, cache_dtype.itemsize)
            t.append(f"| {name} | {str(cache_dtype)[6:]} | {B} | {S // 1024}k | {lat or float('nan'):.4f} | {bound / lat if lat else float('nan'):.2f} | "
                     f"{g16 or float('nan'):.4f} | {g16 / lat if lat and g16 else float('nan'):.3f} |")
        tables.append("\n".join(t))
        # Where each form's time goes at the longest context, batch 1.
        S = contexts[-1]
        for G, name in itertools.product((0, 16), ("plain", "chunked 2048")):
            q, kv, rk, q_stat = problem(1, S, G, torch.bfloat16, 1)
            with torch.no_grad(), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
                for _ in range(5):
                    forms[name](q, kv, rk, DC, False, q_stat, 1e-6)
                torch.cuda.synchronize()
            tables.append(f"{name}, B 1, S {S}, G {G}, bf16:\n" + prof.key_averages().table(sort_by="cuda_time_total", row_limit=10, max_name_column_width=60))
    print("\n\n".join(tables))
    return 0


def whole_step(args, sms: int, bw: float, device) -> list:
    """
    The bf16 decode step of one DeepSeek-like layer (compiled query and output, fused attention), latent and
    latent+invrms at G 16, timed as bench_decode times it, under several fused-kernel plans. Random cache contents:
    this times the step; bench_decode checks it against float64.
    """
    import dataclasses
    import functools

    from mlactl_torch.bench_decode import make_layer
    from mlactl_torch.decode import DecodeLayer, LayerCache
    from mlactl_torch.model import ModelSpec, rope_tables

    spec = ModelSpec(variant="qk-norm", vocab=1, d=2048, L=1, H=H, dq=0, dc=DC, dn=DN, dr=DR, dv=DN, dff=1, G=16, scope="full",
                     qk_eps=1e-6, norm_eps=1e-6, rope_theta=10000.0, max_seq_len=1, tied=True, init_std=0.02)
    plain = dataclasses.replace(spec, variant="baseline")
    cases = [(int(b), contexts_of(s)[0]) for b, s in (c.split(":") for c in args.step.split(","))]
    attn = make_layer(spec, 1, device).to(torch.bfloat16)
    cos, sin = (t.to(device) for t in rope_tables(DR, max(S for _, S in cases), spec.rope_theta))
    layers = {"latent": DecodeLayer(attn, plain, cos, sin), "latent+invrms": DecodeLayer(attn, spec, cos, sin)}
    for layer in layers.values():
        layer.compile()
    weight_bytes = layers["latent"].step_weight_bytes("latent")

    def legacy_plan(splits, dc, cfg):  # the combine before combine_plan: 32 splits per load, 128 columns
        return max(16, dt.triton.next_power_of_2(splits)), 32, min(128, dt.triton.next_power_of_2(dc))

    def with_plan(plan, cfg):
        def run(*a):
            saved, dt.combine_plan = dt.combine_plan, plan
            try:
                return dt.fused_latent_attention(*a, config=cfg)
            finally:
                dt.combine_plan = saved
        return run

    base = dt.candidate_configs(torch.bfloat16, device)[0]
    default = functools.partial(dt.fused_latent_attention, config=base)
    # name -> (fused attention, whether the positional query is rotated by the kernel or by the query's own kernel)
    variants = {"default": (default, True), "rope before the kernel": (default, False),
                "old combine, rope before": (with_plan(legacy_plan, base), False)}
    for m in (int(p) for p in args.programs.split(",") if p):
        variants[f"{m}/SM"] = (functools.partial(dt.fused_latent_attention, config=dataclasses.replace(base, programs=m * sms, long_tokens=0)), True)
    variants["PyTorch path"] = (None, True)

    def step(layer, cache, xs, S, fused, kernel_rope):
        if kernel_rope or fused is None:
            return layer.attend(xs, cache, S, fused)
        # DecodeLayer.attend before the kernel took the rotation over: [qa ; qpr] from the compiled query function.
        q, q_stat = layer.query_fn(xs, S - 1, cache.rk is not None)
        kv, rk = cache.kv[:, :S], None if cache.rk is None else cache.rk[:, :S]
        u = fused(q[:, 0], kv, rk, DC, False, None if q_stat is None else q_stat[:, 0], 1e-6)
        return layer.output_fn(u[:, None])
    t = ["| B | S | plan | latent ms | of bound | latent+invrms ms | ratio |", "|---|---|---|---|---|---|---|"]
    out = []
    for B, S in cases:
        xs = torch.randn(B, 1, spec.d, device=device, dtype=torch.bfloat16)
        caches = {}
        for kind in layers:
            cache = LayerCache(kind, spec, B, S, device, torch.bfloat16)
            cache.kv.normal_()
            if cache.rk is not None:
                cache.rk.uniform_(0.5, 1.5)
            caches[kind] = cache
        steps = {(name, kind): (lambda layer=layers[kind], cache=caches[kind], v=v: step(layer, cache, xs, S, *v))
                 for name, v in variants.items() for kind in layers}
        with torch.no_grad():
            ms = {k: statistics.median(v) for k, v in time_cuda(steps, args.repeats, 2, 5, device).items()}
        bound = (B * S * (DC + DR) * 2 + weight_bytes) / bw * 1000
        for name in variants:
            lat, inv = ms[name, "latent"], ms[name, "latent+invrms"]
            t.append(f"| {B} | {S // 1024}k | {name} | {lat:.4f} | {bound / lat:.2f} | {inv:.4f} | {inv / lat:.3f} |")
        print(f"step B{B} S{S} done at {time.perf_counter():.0f}s", flush=True)
        if (B, S) == (1, max(S for _, S in cases)):
            for kind in layers:
                with torch.no_grad(), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
                    for _ in range(5):
                        steps["default", kind]()
                    torch.cuda.synchronize()
                out.append(f"whole step, default plan, {kind}, B 1, S {S}, bf16 (5 eager calls of the compiled step):\n"
                           + prof.key_averages().table(sort_by="cuda_time_total", row_limit=14, max_name_column_width=70))
        del caches, steps
        torch.cuda.empty_cache()
    return out + ["\n".join(t)]


if __name__ == "__main__":
    sys.exit(main())
