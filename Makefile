# forecast — `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

# Which torch build `make install` puts in the venv (the one documented switch):
#   TORCH_BUILD=cpu    (default) CPU-only build; no CUDA libraries are downloaded.
#   TORCH_BUILD=cu128  CUDA 12.8 build for GPU machines (any tag PyTorch publishes: cu126, cu129, ...).
TORCH_VERSION ?= 2.13.0
TORCH_BUILD   ?= cpu
TORCH_INDEX   := https://download.pytorch.org/whl/$(TORCH_BUILD)

# Every other package comes from requirements.lock: exact versions with sha256 hashes, checked by
# pip (--require-hashes), resolved for Python 3.11 with torch's CPU build. `make lock` refreshes it
# from pyproject.toml; torch itself is pinned above (version + build) and is the one unhashed package.
LOCK      := requirements.lock
PIP_TOOLS := pip-tools==7.6.2
# Where `make lock` finds torch's CPU build; empty where a local wheel is on pip's find-links.
LOCK_TORCH_INDEX ?= https://download.pytorch.org/whl/cpu

DATA_DIR ?= data
STAMP    := $(VENV)/.installed-$(TORCH_BUILD)

# Optional extras of pyproject.toml that `make install` adds when named (EXTRAS="dashboard"): each from its own
# hashed lock, requirements-<extra>.lock (only the packages the extra adds to requirements.lock; `make lock`
# writes both). `make test` installs the dashboard extra, so CI runs the `forecast dashboard` tests.
EXTRAS ?=

.PHONY: help install lock docs demo test test-slow fuzz verify lint bench gpu-wheels gpu-check gpu-rehearsal postgres postgres-stop clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk -F':.*?## ' '{printf "  make %-10s %s\n", $$1, $$2}'
	@echo "  variables: TORCH_BUILD=$(TORCH_BUILD) (cpu | cu128 | ...), DATA_DIR=$(DATA_DIR), EXTRAS=$(EXTRAS) (dashboard)"

install: $(STAMP) ## create .venv/ with torch ($(TORCH_BUILD) build) and the forecast command (EXTRAS=dashboard adds optuna-dashboard)
	@for extra in $(EXTRAS); do \
	  lock=requirements-$$extra.lock; stamp=$(VENV)/.extra-$$extra; \
	  test -f $$lock || { echo "$$lock is missing: make lock writes it (extras: dashboard)" >&2; exit 2; }; \
	  test $$stamp -nt $$lock -a $$stamp -nt $(STAMP) && continue; \
	  echo "$(BIN)/python -m pip install -q --require-hashes --no-deps -r $$lock"; \
	  $(BIN)/python -m pip install -q --require-hashes --no-deps -r $$lock && $(BIN)/python -m pip check \
	    && touch $$stamp || exit 1; \
	done

$(STAMP): pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@# The lock first, hash-checked and without resolving (setuptools too, for the editable build below).
	$(BIN)/python -m pip install -q --require-hashes --no-deps -r $(LOCK)
	@# A local/PyPI wheel of the exact build first (instant where one lies on disk), else PyTorch's own index.
	@# Its CPU dependencies are already in place from the lock; a CUDA build adds its nvidia-* packages.
	$(BIN)/python -m pip install -q "torch==$(TORCH_VERSION)+$(TORCH_BUILD)" 2>/dev/null \
	  || $(BIN)/python -m pip install -q --index-url $(TORCH_INDEX) "torch==$(TORCH_VERSION)+$(TORCH_BUILD)"
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip check  # a lock that misses a dependency of pyproject.toml fails here
	@rm -f $(VENV)/.installed-*
	@touch $@

lock: ## refresh requirements.lock (exact versions + hashes) after changing pyproject.toml's dependencies
	test -x $(VENV)/lock-tools/bin/pip-compile || \
	  ($(PYTHON) -m venv $(VENV)/lock-tools && $(VENV)/lock-tools/bin/pip install -q "$(PIP_TOOLS)")
	echo "torch==$(TORCH_VERSION)+cpu" > $(VENV)/lock-torch.txt
	@# torch's CPU build is resolved (so its CPU dependencies are locked), then left out of the file.
	@# Existing pins are kept unless pyproject.toml needs others (delete the file to take the newest).
	$(VENV)/lock-tools/bin/pip-compile -q --extra dev --generate-hashes --allow-unsafe --strip-extras \
	  --no-emit-index-url --no-emit-find-links $(if $(LOCK_TORCH_INDEX),--extra-index-url $(LOCK_TORCH_INDEX)) \
	  -c $(VENV)/lock-torch.txt -o $(LOCK) pyproject.toml
	{ echo "# torch is not in this file: make install pins it (TORCH_VERSION + TORCH_BUILD)"; \
	  awk '/^torch==/ {skip=1; next} skip && /^[ \t]/ {next} {skip=0; print}' $(LOCK); } > $(LOCK).tmp
	mv $(LOCK).tmp $(LOCK)
	@echo "$(LOCK): $$(grep -c '^[a-z0-9]' $(LOCK)) packages pinned with hashes (torch: TORCH_BUILD)"
	@# The dashboard extra: resolved with everything above (seeded with $(LOCK), whose pins it keeps),
	@# then only the packages $(LOCK) lacks are written to its own lock (torch left out as above).
	cp $(LOCK) $(VENV)/lock-dashboard.txt
	$(VENV)/lock-tools/bin/pip-compile -q --extra dev --extra dashboard --generate-hashes --allow-unsafe --strip-extras \
	  --no-emit-index-url --no-emit-find-links $(if $(LOCK_TORCH_INDEX),--extra-index-url $(LOCK_TORCH_INDEX)) \
	  -c $(VENV)/lock-torch.txt -o $(VENV)/lock-dashboard.txt pyproject.toml
	{ echo "# the dashboard extra: the packages it adds to $(LOCK) (make install EXTRAS=dashboard; make lock)"; \
	  awk 'NR == FNR { if (match($$0, /^[A-Za-z0-9][A-Za-z0-9._-]*==/)) seen[tolower(substr($$0, 1, RLENGTH - 2))] = 1; next } \
	       /^[A-Za-z0-9]/ { name = tolower($$0); sub(/==.*/, "", name); skip = (name in seen) || name == "torch" } \
	       /^[ \t]/ && skip { next } /^[A-Za-z0-9]/ && skip { next } /^#/ { next } { print }' \
	    $(LOCK) $(VENV)/lock-dashboard.txt; } > requirements-dashboard.lock
	@echo "requirements-dashboard.lock: $$(grep -c '^[a-z0-9]' requirements-dashboard.lock) packages pinned with hashes"

LOG_DIR ?= logs

demo: install ## the main job on the offline sample: data, a25 tier, fit, test (~3 min on 2 cores)
	$(BIN)/forecast data sample --data-dir $(DATA_DIR)
	$(BIN)/forecast data build --data-dir $(DATA_DIR) --symbol SP500 --tier a25
	FORECAST_DATA_DIR=$(DATA_DIR) $(BIN)/forecast fit --config configs/demo.yaml \
	  --trainer.logger.init_args.save_dir=$(LOG_DIR) --trainer.enable_progress_bar=false
	FORECAST_DATA_DIR=$(DATA_DIR) $(BIN)/forecast test --config configs/demo.yaml \
	  --trainer.logger.init_args.save_dir=$(LOG_DIR) --trainer.enable_progress_bar=false

# Tests train tiny models: one thread each is as fast, and two OpenMP threads spin badly
# whenever the other core is busy (a test's subprocess, or a shared machine). TEST_JOBS pytest-xdist
# workers share the cores (1.8x faster than one process on 2 cores); tests on PostgreSQL share one worker.
TEST_JOBS ?= 2
PYTEST    := OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n $(TEST_JOBS) --dist loadgroup

# The tests of `forecast dashboard` need its extra: make test and test-slow install it (CI runs make test).
test test-slow: EXTRAS += dashboard

test: install ## fast test suite (< 5 min on 2 cores); also parses every command of README.md and docs/
	$(PYTEST)

test-slow: install ## the slow tests too (real data end to end; every unmarked shell block of the manual, run)
	$(PYTEST) -m "not gpu"

docs: install ## the manual (docs/, mkdocs.yml) built with mkdocs --strict into site/
	$(BIN)/mkdocs build --strict --quiet --site-dir site

# The fuzzer (tests/test_fuzz_cli.py): `make test` runs 100 derandomized examples (FUZZ_EXAMPLES);
# this runs FUZZ_N random ones across every subcommand, records each in FUZZ_LOG (its command line
# and its violation, or null), never stops at the first, and fails if any example broke the contract.
FUZZ_N ?= 2000
FUZZ_LOG ?= fuzz.jsonl

fuzz: install ## the command-line fuzzer: FUZZ_N (2000) random examples, an equal share per command (~5 min), log in FUZZ_LOG
	rm -f $(FUZZ_LOG)
	OMP_NUM_THREADS=1 FUZZ_EXAMPLES=$(FUZZ_N) FUZZ_RANDOM=1 FORECAST_FUZZ_SURVEY=$(abspath $(FUZZ_LOG)) \
	  $(BIN)/python -m pytest -q -n $(TEST_JOBS) tests/test_fuzz_cli.py -k fuzzed
	$(BIN)/python tests/test_fuzz_cli.py --summary $(FUZZ_LOG)

verify: install ## check every manifest entry's file, md5 and columns
	$(BIN)/forecast data verify --data-dir $(DATA_DIR)

lint: install ## ruff, and the import layers (import-linter contracts in pyproject.toml)
	$(BIN)/ruff check forecast tests
	$(BIN)/lint-imports

bench: install ## benchmarks: figures and ratios measured in one run (bench.json)
	$(BIN)/python -m forecast.bench --out bench.json

# The device image (python3.12, torch 2.11 + CUDA 13.0, numpy 2.5, lightning 2.6.6; no make) lacks these:
# forecast's dependencies less the image's packages (scripts/gpu-image-packages.txt, from the device tool's
# KINDS.md), at the lock's versions. `python3 scripts/gpu_wheels.py` computes the list (--why: who needs
# each); tests/test_gpu_lease.py fails when this copy differs. ~31 MiB, under the device's 64 MiB carry.
# `make gpu-wheels` here (with network), then on the device, as one call: `bash scripts/gpu-lease.sh`
# with carry [".whl"] (docs/gpus.md).
GPU_PYTHON ?= python3
WHEEL_DIR  ?= .whl
GPU_WHEELS ?= Mako==1.4.3 SQLAlchemy==2.1.9 TA-Lib==0.8.2 alembic==1.20.1 arch==8.0.0 beautifulsoup4==4.15.0 \
              cffi==2.1.1 colorlog==6.12.0 curl_cffi==0.17.0 docstring_parser==0.18.0 jsonargparse==4.53.0 \
              multitasking==0.0.13 optuna-integration==5.0.0 optuna==5.0.0 peewee==4.5.3 platformdirs==4.14.9 \
              psycopg-binary==3.3.9 psycopg==3.3.9 pycparser==3.12 pytz==2026.6 soupsieve==4.1.3 \
              typeshed_client==2.15.0 tzdata==2026.6 websockets==17.4 yfinance==1.7.0

gpu-wheels: ## download the wheels the GPU image lacks into .whl/ (cp312, manylinux x86_64; docs/gpus.md)
	$(PYTHON) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
	  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d $(WHEEL_DIR) $(GPU_WHEELS)
	@du -sh $(WHEEL_DIR)

# Where gpu-check and gpu-rehearsal write gpu_check.json (a remote GPU machine may return only one folder).
OUT ?= .

gpu-check: ## on one GPU: 200M/2B build, memory, MFU; a 2B search; 2M trials/hour; 200M compiled -> $(OUT)/gpu_check.json
	$(GPU_PYTHON) -m forecast.bench.gpu_check --out $(OUT)/gpu_check.json

gpu-rehearsal: install ## gpu-check's own script on this CPU at tiny sizes, CUDA defaults forced -> $(OUT)/gpu_check.json (~1 min)
	$(BIN)/python -m forecast.bench.gpu_check --rehearse --out $(OUT)/gpu_check.json

postgres: ## start a local PostgreSQL in .pg/ (installs the Debian server if needed); prints its URL last
	@.ci/postgres start

postgres-stop: ## stop the local PostgreSQL (its data stays in .pg/)
	@.ci/postgres stop

clean: ## remove caches and build leftovers (keeps .venv, data and logs)
	rm -rf .pytest_cache .ruff_cache *.egg-info bench.json
	find . -name __pycache__ -type d -prune -not -path './.venv/*' -exec rm -rf {} +
