# The two commands the README opens with: `make run` and `make test`.
# Both create .venv when needed and install what they use into it, so a
# fresh machine needs only Python 3.11 (or newer) with pip.

PYTHON ?= $(shell command -v python3.11 || command -v python3 || command -v python)
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 5000
TRIAL_ARGS ?= echotwist

.PHONY: run test lint typecheck trial bench bench-quick faults cluster clean

$(BIN)/python:
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	  echo "python -m venv is unavailable; using virtualenv instead" >&2; \
	  rm -rf $(VENV); \
	  $(PYTHON) -m pip install --quiet --user virtualenv && \
	  $(PYTHON) -m virtualenv --quiet $(VENV); }

run: $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check .
	$(BIN)/twistd -n --pidfile= echo --port $(PORT)

# A real (non-editable) install, so the tests see the plugin where twistd
# finds it on a user's machine.
# The tests import the source tree, so its C speedups are built there too
# (optional, as in the package: without a compiler the Python path runs).
install-test: $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check ".[test]"
	$(BIN)/python setup.py --quiet build_ext --inplace

lint: install-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install-test
	$(BIN)/mypy --strict

trial: install-test
	$(BIN)/python tools/trialsummary.py -- $(BIN)/python -b -m twisted.trial --random=0 $(TRIAL_ARGS)

test: lint typecheck trial

# The side-by-side benchmark (benchmarks/README.md): builds the C load
# generator, installs echotwist with the peer servers (uvloop) and the
# chart's matplotlib, then runs every server interleaved and repeated.
# `make bench BENCH_ARGS=--quick` (or `make bench-quick`) is one short round.
BENCH_ARGS ?=
LOADGEN := build/loadgen

$(LOADGEN): benchmarks/loadgen.c
	@mkdir -p build
	gcc -O2 -Wall -Wextra -o $@ $<

bench-install: $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check ".[bench-servers]"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check ".[bench-chart]" \
	  || echo "matplotlib did not install: the benchmark runs without its chart" >&2

bench: bench-install $(LOADGEN)
	$(BIN)/python benchmarks/run.py --loadgen $(LOADGEN) $(BENCH_ARGS)

bench-quick: BENCH_ARGS = --quick
bench-quick: bench

# Fault injection under load (docs/faults.md): kill -9 and SIGHUP of
# --workers, a memory soak, and packet loss, a blackout and a bandwidth
# limit between network namespaces.  Linux and root only; about 14
# minutes, or `make faults FAULTS_ARGS=--quick` for a short run.
FAULTS_ARGS ?=

faults: $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check ".[bench]"
	$(BIN)/python benchmarks/faults.py $(FAULTS_ARGS)

# Three echotwist hosts behind HAProxy and two load hosts, as network
# namespaces on one bridge; one host is killed mid-run, the load hosts'
# interval logs are merged (docs/deploying.md).  Linux and root only; it
# installs haproxy and iproute2 with apt-get when missing.  About a
# minute; `make cluster CLUSTER_ARGS="--duration 20"` runs longer.
CLUSTER_ARGS ?=

cluster: $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check ".[bench]"
	$(BIN)/python benchmarks/cluster.py $(CLUSTER_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info _trial_temp*
