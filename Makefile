# The two set-up commands of the README: `make demo` runs the main job, `make test` passes the tests.
# Each installs what it needs into ./.venv first, so both work on a fresh Debian/Ubuntu machine.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: install system-deps test-deps demo test bench clean dist

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || { echo "python3 -m venv failed: on Debian/Ubuntu run 'apt-get install python3-venv'"; exit 1; }
	$(BIN)/python -m pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test,kaggle]'

# The main job: the whole pipeline offline on a built-in sample (harvest, fetch, rasterize, pack, export).
demo: install system-deps
	$(BIN)/zenodo-hpc demo --out build/demo

# Debian packages the tests use: mksquashfs (pack). The SLURM ones are installed by the dev cluster.
system-deps:
	@command -v mksquashfs >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq squashfs-tools; \
	  else echo "mksquashfs missing: apt-get install squashfs-tools (pack tests will be skipped)"; fi; }

# What the tests use besides: squashfuse and fusermount3 (mounting an image as the docs and the dataset card
# show it, without root). Without them those tests skip, saying why.
test-deps: system-deps
	@command -v squashfuse >/dev/null 2>&1 && command -v fusermount3 >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq squashfuse fuse3; \
	  else echo "squashfuse missing: apt-get install squashfuse fuse3 (mount tests will be skipped)"; fi; }

# The tests, with a real multi-node SLURM cluster up for the SLURM tests (slurm/dev-cluster/).
test: install test-deps
	$(BIN)/ruff check zenodo_hpc tests benchmarks scripts
	$(BIN)/mypy
	PATH="$(CURDIR)/$(BIN):$$PATH" bash slurm/dev-cluster/with-cluster.sh $(BIN)/python -m pytest

# A wheel of the package in $(DIST)/, to install where there is no clone, e.g. on a cluster with the extras it
# needs: pip install "$$(ls dist/zenodo_hpc-*.whl)[image,report]" (docs/cluster-guide.md). Any Python >= 3.10 with
# venv: the wheel is built by the venv's pip, which fetches the build backend (setuptools) from PyPI.
DIST ?= dist
dist: $(BIN)/python
	$(BIN)/python -m pip wheel --quiet --no-deps --disable-pip-version-check -w $(DIST) .

bench: install
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	$(BIN)/python benchmarks/bench_raster.py
	$(BIN)/python benchmarks/bench_record.py
	$(BIN)/python benchmarks/bench_fetch.py
	$(BIN)/python benchmarks/bench_budget.py
	$(BIN)/python benchmarks/bench_harvest.py
	$(BIN)/python benchmarks/bench_orchestrate.py
	$(BIN)/python benchmarks/bench_pack.py
	$(BIN)/python benchmarks/bench_pipeline.py
	$(BIN)/python benchmarks/bench_export.py

clean:
	rm -rf build $(VENV)
