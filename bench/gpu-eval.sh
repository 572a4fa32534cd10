#!/usr/bin/env bash
# `mlactl eval --engine torch` end to end on a CUDA machine, for bench/NOTES.md: a checkpoint of the preset's shape
# (one optimizer step: the weights' values do not change the throughput), a file of ITEMS four-choice items in
# HellaSwag's format (bench/eval_items.py), then the CLI's own evaluation in bf16 and fp32: items/s from its --json
# result, scoring alone and overall (opening the scorer: the Python process, model load and compilation included).
#
#   scripts/gpu-pack.sh
#   mlactl data prepare --source brown --tokenizer gpt2 --out .gpu-data/brown-gpt2 --config configs/models/paper-400m.yaml
#   (carry .gpu and .gpu-data to the GPU machine; there, from the project root:)
#   OUT=/some/folder bash bench/gpu-eval.sh            # MODEL=paper-400m ITEMS=10000 PRECISIONS="bf16 fp32" UNPACKED=1 STEADY=1
set -uo pipefail
OUT=${OUT:?set OUT to a folder for the results}
MODEL=${MODEL:-paper-400m}
ITEMS=${ITEMS:-10000}
DATA=${DATA:-.gpu-data/brown-gpt2}
mlactl=(bash .gpu/mlactl.sh)
run=/tmp/eval-$MODEL
mkdir -p "$OUT"
source "$(dirname "$0")/steps.sh"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"

# A checkpoint of the preset's shape: validation and the max-logit pass off, the final checkpoint kept.
tokens=32768 # one step of paper-400m (16 x 2048); a few of a shorter-window preset
step train ${TRAIN_LIMIT:-200} "${mlactl[@]}" train -c "configs/models/$MODEL.yaml" --engine torch --run-dir "$run" --force \
  --set data.source="$DATA" --set train.tokens=$tokens --set train.batch_size=16 --set train.grad_accum=1 --set train.warmup_tokens=0 \
  --set train.eval_every_tokens=0 --set train.ckpt_every_tokens=0 --set train.maxlogit_every_steps=1000
step items 60 python3 bench/eval_items.py --items "$ITEMS" --out /tmp/items.jsonl
# The scoring process reports where its time went (MLACTL_SCORE_TIMING: loading, each request's computing, reading
# requests, writing answers).
export MLACTL_SCORE_TIMING=1
evaluate() {
  local name=$1 precision=$2; shift 2
  echo "== $name ($(date +%T))"
  timeout ${EVAL_LIMIT:-150} env "$@" "${mlactl[@]}" eval --run "$run" --engine torch --precision "$precision" \
    --task hellaswag=/tmp/items.jsonl --limit 0 --json > "$OUT/$name.json" 2> "$OUT/$name.log"
  echo "$name rc=$? at ${SECONDS}s" | tee -a "$OUT/steps.txt"
}
for precision in ${PRECISIONS:-bf16 fp32}; do evaluate "eval-$precision" "$precision"; done
# UNPACKED=1: bf16 again with every sequence in its own row (no shared contexts), side by side. REPEAT=1: the
# default bf16 arm once more at the end, when the machine's files and kernels are warm (a fresh machine's first
# scoring process pays for reading them on its first requests).
[[ ${UNPACKED:-0} == 1 ]] && evaluate eval-bf16-unpacked bf16 MLACTL_SCORE_PACK=0
[[ ${REPEAT:-0} == 1 ]] && evaluate eval-bf16-again bf16
# STEADY=1: the scoring code alone on random items of the same shape, warm (tools/bench_score.py): packed, unpacked,
# and packed with compiled blocks, whose compilation the warm-up requests absorb.
if [[ ${STEADY:-0} == 1 ]]; then
  for arm in "packed" "unpacked --no-pack" "compiled --compile"; do
    set -- $arm
    name=$1; shift
    step steady-$name ${STEADY_LIMIT:-120} python3 python/tools/bench_score.py --preset "$MODEL" --items "$ITEMS" --precision bf16 "$@"
  done
fi

echo "== summary: mlactl eval --engine torch, $MODEL, $ITEMS four-choice items ($(head -n 1 "$OUT/gpu.txt"))"
python3 - "$OUT" <<'PY'
import glob, json, os, sys
out = sys.argv[1]
for path in sorted(glob.glob(os.path.join(out, "eval-*.log"))):
    name = os.path.basename(path)[:-4]
    timing = [l.strip() for l in open(path) if l.startswith("score timing:")]
    try:
        r = json.load(open(os.path.join(out, name + ".json")))
        t = r["evaluations"][0]["tasks"][0]
        print(f"{name}: {r['scoringItemsPerSecond']:.0f} items/s scoring, {r['itemsPerSecond']:.0f} items/s overall "
              f"(after {r['openSeconds']:.1f} s opening the scorer: Python, model load), n = {t['n']}, "
              f"metrics {json.dumps({k: round(v['value'], 4) for k, v in t['metrics'].items()})}")
    except Exception as e:
        print(f"{name}: no result ({type(e).__name__}: {e}; see {name}.log)")
    print("  " + (timing[-1] if timing else "(no score timing line)"))
PY
for f in "$OUT"/steady-*.log; do [[ -f $f ]] && echo "$(basename "$f" .log): $(grep '"bench"' "$f" | tail -n 1)"; done
cat "$OUT/steps.txt"
