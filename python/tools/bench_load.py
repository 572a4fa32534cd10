"""Time ways of getting a checkpoint's weights onto a GPU: where the scoring process's "loading" time goes.

    python tools/bench_load.py --model DIR [--repeats 2]          (DIR: a model folder, e.g. a run's ckpt/step-N)

Each way builds the model and fills its parameters from DIR/model.safetensors, then synchronises; CUDA is
initialised first so no way pays for it. Ways: the CPU-initialised model moved afterwards (the code before
build_for_loading); the model built on the device (build_for_loading) and filled from the safetensors package's
memory-mapped tensors (the loader before read_into); what scoring runs now (build_for_loading +
load_model_weights: the file read through two pinned chunks); the file read into one device buffer that the
parameters are copied from. First-use costs show in the first repeat; tools/bench_build.py times those apart. Also
the file's plain read alone (page-cache speed). Every way's weights must equal the first's. Prints one JSON line
per way, then a table.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from mlactl_torch.checkpoint import load_model_weights, read_config, spec_from_checkpoint_config  # noqa: E402
from mlactl_torch.model import MLAForCausalLM, build_for_loading  # noqa: E402
from mlactl_torch.safetensors_io import read_header  # noqa: E402

CHUNK = 64 << 20


def moved_after_cpu_init(folder, spec, device):
    model = MLAForCausalLM(spec)
    load_model_weights(folder, model)
    return model.to(device)


def package_stream(folder, spec, device):
    """The previous loader: the safetensors package's memory-mapped tensors, each copied into its parameter."""
    from safetensors import safe_open

    model = build_for_loading(spec, device)
    params = dict(model.named_parameters())
    with torch.no_grad(), safe_open(os.path.join(folder, "model.safetensors"), framework="pt") as f:
        for name in f.keys():
            params[name].copy_(f.get_tensor(name))
    return model


def product(folder, spec, device):
    """What scoring and decoding run: build_for_loading + load_model_weights (safetensors_io.read_into)."""
    model = build_for_loading(spec, device)
    load_model_weights(folder, model)
    return model


@torch.no_grad()
def staged(folder, spec, device):
    """The data region read into two pinned chunks in turn, each copied asynchronously into one device buffer."""
    model = build_for_loading(spec, device)
    path = os.path.join(folder, "model.safetensors")
    entries, _, start = read_header(path)
    size = os.path.getsize(path) - start
    flat = torch.empty(size, dtype=torch.uint8, device=device)
    pinned = [torch.empty(CHUNK, dtype=torch.uint8).pin_memory() for _ in range(2)]
    done = [None, None]
    with open(path, "rb", buffering=0) as f:
        f.seek(start)
        for k, at in enumerate(range(0, size, CHUNK)):
            buf = pinned[k % 2]
            if done[k % 2] is not None:
                done[k % 2].synchronize()  # its last copy has left the buffer
            n = min(CHUNK, size - at)
            view = memoryview(buf.numpy())[:n]
            got = 0
            while got < n:
                got += f.readinto(view[got:])
            flat[at : at + n].copy_(buf[:n], non_blocking=True)
            done[k % 2] = torch.cuda.Event()
            done[k % 2].record()
    params = dict(model.named_parameters())
    for name, e in entries.items():
        a, b = e["data_offsets"]
        params[name].copy_(flat[a:b].view(torch.float32).view(e["shape"]))
    return model


def plain_read(folder, spec, device):
    with open(os.path.join(folder, "model.safetensors"), "rb", buffering=0) as f:
        buf = bytearray(CHUNK)
        while f.readinto(buf):
            pass
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--device", default="cuda", help="cpu: a dry run of the ways that need no GPU")
    args = ap.parse_args()
    device = args.device
    cuda = device.startswith("cuda")
    t = time.perf_counter()
    torch.zeros(1, device=device)
    print(json.dumps({"cuda_init_s": round(time.perf_counter() - t, 3)}), flush=True)
    spec = spec_from_checkpoint_config(read_config(args.model))
    size = os.path.getsize(os.path.join(args.model, "model.safetensors"))
    ways = {"file read alone": plain_read, "CPU init, load, .to(device)": moved_after_cpu_init, "built there + package's mmap tensors": package_stream,
            "built there + read_into (pinned chunks on CUDA)": product}
    if cuda:
        ways["built there + one device buffer, then copies"] = staged
    try:
        import safetensors  # noqa: F401
    except ImportError:
        del ways["built there + package's mmap tensors"]
    reference = None
    rows = []
    for name, way in ways.items():
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            model = way(args.model, spec, device)
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
            if model is not None:
                state = {k: v.float() for k, v in model.state_dict().items()}
                if reference is None:
                    reference = {k: v.cpu() for k, v in state.items()}
                same = all(torch.equal(state[k].cpu(), reference[k]) for k in reference)
                if not same:
                    print(json.dumps({"way": name, "error": "weights differ from the first way's"}), flush=True)
                    return 1
                del model, state
                if cuda:
                    torch.cuda.empty_cache()
        rows.append((name, times))
        print(json.dumps({"way": name, "seconds": [round(x, 3) for x in times], "GB/s": round(size / min(times) / 1e9, 2)}), flush=True)
    print(f"\n{size / 1e9:.2f} GB, {torch.cuda.get_device_name() if cuda else 'CPU'}, torch {torch.__version__}")
    print("| way | seconds (each repeat) | GB/s (best) |\n| --- | --- | ---: |")
    for name, times in rows:
        print(f"| {name} | {' '.join(f'{x:.2f}' for x in times)} | {size / min(times) / 1e9:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
