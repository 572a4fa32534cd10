#!/usr/bin/env bash
# The torch engine's decode and scoring measurements for bench/NOTES.md, in one run on a CUDA machine: the fused
# Triton kernel's self-test, `mlactl bench decode --engine torch` (fp32 batch 1, bf16 batch 1 and 8, DeepSeek-like
# dims), and tools/bench_score.py (paper-400m, 4-choice items, bf16). Pack first (scripts/gpu-pack.sh), carry .gpu,
# then from the project root there:  OUT=/some/folder bash bench/gpu-decode.sh
# Each step has its own time limit (the defaults add up to under 10 minutes); the summary table is printed last.
set -uo pipefail
OUT=${OUT:?set OUT to a folder for the results}
CONTEXTS=${CONTEXTS:-1k,16k,64k,256k}
REPEATS=${REPEATS:-20}
mkdir -p "$OUT"
export MLACTL_PYTHON=${MLACTL_PYTHON:-python3}
mlactl=(bash .gpu/mlactl.sh)
source "$(dirname "$0")/steps.sh"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
$MLACTL_PYTHON -c 'import torch, triton; print("torch", torch.__version__, "cuda", torch.version.cuda, "triton", triton.__version__)' 2>&1 | tee -a "$OUT/gpu.txt"

[[ ${SELFTEST:-1} == 1 ]] && step selftest ${SELFTEST_LIMIT:-140} env PYTHONPATH=python "$MLACTL_PYTHON" -m mlactl_torch selftest-decode
decode() {
  local name=$1 dtype=$2 batch=$3 caches=$4 limit=$5; shift 5
  step "$name" "$limit" "${mlactl[@]}" bench decode --engine torch --dtype "$dtype" --batch "$batch" --contexts "$CONTEXTS" \
    --caches "$caches" --repeats "$REPEATS" --warmup 3 -o "$OUT/$name" "$@"
}
# BASE=0 skips these three (to run only the optional rows below in a call of their own).
if [[ ${BASE:-1} == 1 ]]; then
  decode decode-fp32-b1 fp32 1 latent,latent+invrms,full-key ${DECODE_LIMIT:-120}
  decode decode-bf16-b1 bf16 1 latent,latent+invrms,full-key ${DECODE_LIMIT:-120}
  decode decode-bf16-b8 bf16 8 latent,latent+invrms ${DECODE_LIMIT:-120}
fi
# KEYGROUPS=1: bf16 batch 1 and 8 again with G = 1 key group (OLMo 2 style, one rk number per token instead of 16),
# where the byte floor of latent+invrms / latent is 577/576 rather than 592/576.
if [[ ${KEYGROUPS:-0} == 1 ]]; then
  decode decode-bf16-b1-G1 bf16 1 latent,latent+invrms ${DECODE_LIMIT:-120} --key-groups 1
  decode decode-bf16-b8-G1 bf16 8 latent,latent+invrms ${DECODE_LIMIT:-120} --key-groups 1
fi
# PLAIN=1: bf16 batch 1 again with the PyTorch path compiled in its plain one-softmax form (MLACTL_DECODE_CHUNKED=0)
# instead of the chunked one, to see what the chunks buy.
if [[ ${PLAIN:-0} == 1 ]]; then
  export MLACTL_DECODE_CHUNKED=0
  decode decode-bf16-b1-plain bf16 1 latent,latent+invrms ${DECODE_LIMIT:-120}
  unset MLACTL_DECODE_CHUNKED
fi
# The scoring server's steady items/s (eager, shared contexts packed: what `eval --engine torch` does); bench/gpu-eval.sh
# times the whole evaluation and the other arms. SCORE=0 skips it.
[[ ${SCORE:-1} == 1 ]] && step score-paper-400m ${SCORE_LIMIT:-120} "$MLACTL_PYTHON" python/tools/bench_score.py --preset paper-400m --items ${SCORE_ITEMS:-2000} --precision bf16

echo "== summary (median ms per decode step of one layer; ratio: median per-round latent+invrms / latent; of bound: bandwidth bound / median)"
"$MLACTL_PYTHON" - "$OUT" <<'PY'
import json, os, sys
out = sys.argv[1]
print("| run | context | impl | latent ms | latent+invrms ms | full-key ms | ratio [95% CI] | latent of bound | latent+invrms of bound |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for run in ("decode-fp32-b1", "decode-bf16-b1", "decode-bf16-b8", "decode-bf16-b1-G1", "decode-bf16-b8-G1", "decode-bf16-b1-plain"):
    f = os.path.join(out, run, "decode.json")
    if not os.path.exists(f):
        if os.path.exists(os.path.join(out, run + ".log")):
            print(f"| {run} | (no decode.json: see {run}.log) | | | | | | | |")
        continue
    r = json.load(open(f))
    for impl in ("torch", "fused"):
        for ctx in sorted({row["context"] for row in r["rows"]}):
            rows = {row["cache"]: row for row in r["rows"] if row["context"] == ctx and row.get("impl") == impl}
            if not rows:
                continue
            ratio = next((q for q in r["ratios"] if q["context"] == ctx and q.get("impl") == impl), None)
            ms = lambda k: f"{rows[k]['median_ms']:.4f}" if k in rows else "-"
            frac = lambda k: f"{rows[k]['bandwidth_fraction']:.2f}" if k in rows else "-"
            rt = f"{ratio['invrms_over_latent']:.3f} [{ratio['invrms_over_latent_ci95'][0]:.3f}, {ratio['invrms_over_latent_ci95'][1]:.3f}]" if ratio else "-"
            print(f"| {run} | {ctx} | {impl} | {ms('latent')} | {ms('latent+invrms')} | {ms('full-key')} | {rt} | {frac('latent')} | {frac('latent+invrms')} |")
    print(f"|   {run}: {r.get('timing')}; {r.get('compile')}; copy {r.get('copy_bandwidth_gbs', 0):.0f} GB/s; fused: {r.get('fused', {}).get('note')} {r.get('fused', {}).get('config')} | | | | | | | | |")
for name in ("score-paper-400m", "score-paper-400m-eager"):
    log = os.path.join(out, name + ".log")
    lines = [l for l in open(log) if l.startswith("{")] if os.path.exists(log) else []
    print(f"{name}: " + (lines[-1].strip() if lines else f"no result (see {name}.log)"))
sel = os.path.join(out, "selftest.log")
print("selftest: " + ((open(sel).read().strip().splitlines() or ["empty"])[-1] if os.path.exists(sel) else "no log"))
PY
cat "$OUT/steps.txt"
