"""First-use and repeated cost of building a model for loading, each way in a fresh process (bench/NOTES.md).

    python tools/bench_build.py --preset paper-400m

Ways: on the CPU with its initialisation, then moved to the GPU; on the meta device, then `to_empty` on the GPU;
built on the GPU under `torch.device` (what build_for_loading does). Each child process imports torch, initialises
CUDA, then builds twice: the first build pays whatever a way loads or compiles on first use. Prints a table.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
import torch
from mlactl_torch.model import MLAForCausalLM, build_for_loading
sys.path.insert(0, sys.argv[1] + "/tools")
from bench_score import preset_spec
spec = preset_spec(sys.argv[2])
torch.zeros(1, device="cuda")
def cpu_then_move():
    return MLAForCausalLM(spec).to("cuda")
def meta_then_empty():
    with torch.device("meta"):
        m = MLAForCausalLM(spec)
    return m.to_empty(device="cuda")
way = {"cpu": cpu_then_move, "meta": meta_then_empty, "gpu": lambda: build_for_loading(spec, "cuda")}[sys.argv[3]]
times = []
for _ in range(2):
    before = set(sys.modules)
    t = time.perf_counter(); m = way(); torch.cuda.synchronize(); times.append(time.perf_counter() - t)
    new = len(set(sys.modules) - before)
    del m; torch.cuda.empty_cache()
    if len(times) == 1: first_new = new
print(json.dumps({"times": times, "modules_imported_by_first": first_new}))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="paper-400m")
    args = ap.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    names = {"cpu": "CPU init, then .to(cuda)", "meta": "meta device, then to_empty(cuda)", "gpu": "built on the GPU (build_for_loading)"}
    print(f"| {args.preset}: way (fresh process each) | first build | second build | modules imported by the first |\n| --- | ---: | ---: | ---: |")
    for way, name in names.items():
        out = subprocess.run([sys.executable, "-c", CHILD, root, args.preset, way], capture_output=True, text=True)
        if out.returncode != 0:
            print(f"| {name} | failed: {out.stderr.strip().splitlines()[-1] if out.stderr.strip() else out.returncode} | | |")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"| {name} | {r['times'][0]:.2f} s | {r['times'][1]:.2f} s | {r['modules_imported_by_first']} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
