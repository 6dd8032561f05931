#!/usr/bin/env bash
# The GPU paths in one prepared run (issue 12, item 5): the CUDA encode and the FAISS GPU
# build beside their CPU counterparts, a CUDA build and eval of SciFact's dense index, and
# one dense fine-tuning run on CUDA. Results: JSON files in $OUT (default bench/results),
# then `python bench/report.py` and BENCHMARKS.md "GPU".
#
# Needs a machine set up as BENCHMARKS.md "GPU" says: `make install`, then faiss-gpu-cu12
# in place of faiss-cpu (requirements-gpu.txt), and the BEIR data beside the repo:
#   bash bench/gpu.sh [DATASETS_DIR]          # default ../shared/datasets
# Without a GPU it stops at once with exit status 2 and says so: nothing is written.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
TWOFOLD=${TWOFOLD:-.venv/bin/twofold}
DATASETS=${1:-../shared/datasets}
RESULTS=${OUT:-bench/results}
WORK=${WORK:-build/gpu}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "bench/gpu.sh: torch sees no CUDA GPU here; run it on a machine with one" >&2
  exit 2
fi
mkdir -p "$RESULTS" "$WORK"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$RESULTS/gpu-device.csv"

step() { echo; echo "== $1 ($(date -u +%H:%M:%S))"; }

step "1-2. minilm-l6 encoding, CPU vs CUDA; IVF-PQ build, CPU vs GPU FAISS"
"$PY" bench/bench_dense_gpu.py --corpus "$DATASETS/scifact" --out "$RESULTS/gpu-dense.json"

step "3. SciFact dense index built on CUDA, then evaluated (expected nDCG@10 0.6451 +- 0.001)"
start=$(date +%s)
"$TWOFOLD" index build "$DATASETS/scifact" --out "$WORK/scifact" --retrievers dense \
  --device cuda --quiet
echo "build seconds: $(( $(date +%s) - start ))" | tee "$RESULTS/gpu-build-seconds.txt"
"$TWOFOLD" eval "$WORK/scifact" --dataset "$DATASETS/scifact" --pipeline dense --quiet \
  --out "$RESULTS/gpu-eval-scifact-dense.json"

step "4. dense fine-tuning on SciFact train, on CUDA (bf16 where supported)"
start=$(date +%s)
"$TWOFOLD" train dense "$WORK/scifact" --queries split --dataset "$DATASETS/scifact" \
  --split train --out "$WORK/dense-ft" --device cuda --precision auto --seed 0 --quiet
echo "train seconds: $(( $(date +%s) - start ))" | tee "$RESULTS/gpu-train-seconds.txt"
cp "$WORK/dense-ft/training_args.json" "$RESULTS/gpu-train-dense-args.json"
cp "$WORK/dense-ft/MODEL_CARD.md" "$RESULTS/gpu-train-dense-card.md"
echo; echo "bench/gpu.sh: done; results in $RESULTS/gpu-*"
