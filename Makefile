# The two commands of README.md: `make book` and `make test`. Both set everything up on a
# fresh machine: a virtual environment in .venv, torch first, then the package with extras.

PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

# torch threads sleep instead of spinning while they wait: much faster on a busy 2-core machine
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: install book test lint data clean lab serve

install: $(STAMP)

# Re-runs only when the package's requirements change; otherwise make skips it.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check $(TORCH)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[book,dev,bench]"
	touch $(STAMP)

# the book's three datasets (food-kitchen from its origin, or from a folder in $$XSCENE_MIRROR)
data: $(STAMP)
	$(VENV)/bin/xscene fetch ml-100k
	$(VENV)/bin/xscene fetch ml-1m
	$(VENV)/bin/xscene fetch food-kitchen

# papermill executes notebooks/*.ipynb (full mode) into book/executed/, one per processor at a time (JOBS=N
# for another number), then jupyter-book builds the site with warnings as errors; per-notebook wall times go to
# book/executed/timings.json.
JOBS ?=
book: data
	$(VENV)/bin/xscene book $(if $(JOBS),--jobs $(JOBS))

# Chapter 8's ml-1m and food-kitchen top-k grids (sequential models included) and ml-100k's sequential models, too slow for the book's
# 25 minutes: fitted here with the book's kernel settings (xscene_lib.execution.KERNEL_ENVIRONMENT) into
# bench/results/recorded/, which the book reads
KERNEL_SETTINGS := ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 MKL_CBWR=AVX2 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
.PHONY: recorded
recorded: data
	$(KERNEL_SETTINGS) $(VENV)/bin/xscene run --dataset ml-1m --scenarios age --seeds 3 --output bench/results/recorded \
		--models popularity itemknn bpr text-zero-shot joint sasrec seq-joint-no-text seq-joint
	$(KERNEL_SETTINGS) $(VENV)/bin/xscene run --dataset food-kitchen --scenarios domain --seeds 3 \
		--output bench/results/recorded --models popularity itemknn bpr text-zero-shot sasrec seq-joint-no-text seq-joint
	$(KERNEL_SETTINGS) $(VENV)/bin/xscene run --dataset ml-100k --scenarios age --seeds 3 --output bench/results/recorded \
		--models sasrec seq-joint-no-text seq-joint text-zero-shot

# JupyterLab on notebooks/ with this environment's kernel (as root, in a container, with --allow-root);
# LAB_OPTIONS adds flags (e.g. LAB_OPTIONS="--no-browser --port=8890")
LAB_OPTIONS ?=
lab: $(STAMP)
	$(VENV)/bin/jupyter lab --ServerApp.root_dir=notebooks $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_OPTIONS)

# the built site on http://127.0.0.1:8000 (loopback only); PORT=... picks another port
PORT ?= 8000
serve:
	@test -f _build/html/index.html || { echo "no site in _build/html: run make book first"; exit 1; }
	$(PYTHON) -m http.server $(PORT) --bind 127.0.0.1 --directory _build/html

# style, then the layering contract: each pipeline stage imports only the stages below it (pyproject.toml)
lint: $(STAMP)
	$(VENV)/bin/ruff check xscene_lib tests bench
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/actionlint .github/workflows/*.yml

# The smoke execution of the notebooks and the site build run inside pytest (tests/test_book.py).
test: lint
	$(PY) -m pytest

# the crash tests (SIGKILL at seeded random moments) and the property-based tests alone; `make test` runs them too
.PHONY: test-faults
test-faults: $(STAMP)
	$(PY) -m pytest -q tests/test_crash.py tests/test_fuzz.py

clean:
	rm -rf _build book/executed

# `make peers`: RecBole's models on our split, for comparison. RecBole lives in its own virtual
# environment (.venv-peers) with the pins it needs; the main .venv never gets it. bench/README.md
# says why each pin is there.
PEERS_VENV  ?= .venv-peers
PEERS_PY    := $(PEERS_VENV)/bin/python
PEERS_STAMP := $(PEERS_VENV)/.installed
RECBOLE     ?= recbole==1.2.1
PEERS_PINS  ?= "pandas<2.3" "setuptools<81" "scipy<1.12"
PEERS_ARGS  ?= --dataset ml-100k --scenarios age --models BPR ItemKNN LightGCN
# `make peer-tune`: the same number of trials for RecBole's models as `xscene tune` gives ours, on
# validation only; writes configs/peers/<dataset>-<view>.toml, which `make peers` then reads
PEER_TUNE_ARGS ?= --dataset ml-100k --scenarios age --models ItemKNN BPR --trials 4

.PHONY: peers peer-tune

peers: $(STAMP) $(PEERS_STAMP)
	$(PY) bench/peer_recbole.py --peer-python $(PEERS_PY) $(PEERS_ARGS)

peer-tune: $(STAMP) $(PEERS_STAMP)
	$(PY) bench/peer_tune.py --peer-python $(PEERS_PY) $(PEER_TUNE_ARGS)

$(PEERS_STAMP):
	test -x $(PEERS_PY) || $(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_PY) -m pip install --quiet --disable-pip-version-check $(TORCH)
	$(PEERS_PY) -m pip install --quiet --disable-pip-version-check "$(RECBOLE)" "numpy<2"
	$(PEERS_PY) -m pip install --quiet --disable-pip-version-check $(PEERS_PINS)
	touch $(PEERS_STAMP)
