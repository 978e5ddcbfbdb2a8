# watchstore developer tasks. Needs only GNU make and python3 (>= 3.11).
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# Dependency groups (PEP 735) installed into the dev venv. `pip install --group`
# needs pip >= 25.1; the pip bundled by `python3 -m venv` (23.x) lacks it, so the
# install step upgrades pip first (pinned to a floor so --group is guaranteed).
GROUPS := test lint bench
# Extras to install with the package, comma-separated: etcd (h11) is needed by the etcd tests,
# encryption (cryptography) by those of encrypted stores, metrics (prometheus-client) by
# tests/test_metrics.py, cli (rich, shtab) by the command's tables, progress bars and completion.
EXTRAS ?= etcd,encryption,metrics,cli

.PHONY: help install demo test lint typecheck contracts fmt pytest bench apiref deps deps-etcd clean

help:
	@echo "make demo       the scheduler demo on a durable store in demo-state/ (run it twice)"
	@echo "make test       ruff check + ruff format --check + mypy --strict + layer contracts + pytest"
	@echo "make fmt        apply ruff format and ruff's safe fixes"
	@echo "make bench      run the core benchmarks"
	@echo "make apiref     write docs/api.md again from the docstrings (python -m tools.apiref)"
	@echo "make deps       apt-get install what the tests run: etcd, etcdctl, strace, gcc (make test does it)"
	@echo "make clean      remove the venv and caches"

# The venv is (re)installed whenever pyproject.toml changes.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade "pip>=25.1"
	$(PIP) install --quiet -e ".$(if $(EXTRAS),[$(EXTRAS)])" $(addprefix --group ,$(GROUPS))
	@touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(PY) examples/scheduler.py --path demo-state

lint: $(VENV)/.installed
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

typecheck: $(VENV)/.installed
	$(PY) -m mypy

# The layer contracts of pyproject.toml ([tool.importlinter]; docs/architecture.md).
contracts: $(VENV)/.installed
	$(VENV)/bin/lint-imports --no-cache

pytest: $(VENV)/.installed deps
	$(PY) -m pytest

# Sequential on purpose: cheapest checks first, stop at the first failure.
test: $(VENV)/.installed deps
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest

fmt: $(VENV)/.installed
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

bench: $(VENV)/.installed
	$(PY) -m benchmarks core

# docs/api.md, the API reference, is made from the docstrings (tests/test_docs_api.py checks it).
apiref: $(VENV)/.installed
	$(PY) -m tools.apiref

# --- programs the tests run, from Debian's packages ---------------------------------
# etcd (Debian's etcd-server, 3.4 on bookworm) for tests/test_etcd.py and the etcd benchmark:
# the tests start their own members on free loopback ports, so the package's own service is
# never used. etcdctl (Debian's etcd-client) is etcd's own Go client: the etcd benchmark runs
# its `check perf` beside the store. strace records a run's file operations for the
# power-loss test; gcc builds the fault-injection shim of tests/test_faults.py.
DEPS := etcd:etcd-server etcdctl:etcd-client strace:strace gcc:gcc
deps:
	@missing=""; for dep in $(DEPS); do \
		command -v $${dep%%:*} >/dev/null 2>&1 || missing="$$missing $${dep#*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	else \
		echo "test programs present: $(foreach d,$(DEPS),$(firstword $(subst :, ,$(d))))"; \
	fi

deps-etcd: deps

clean:
	rm -rf $(VENV) build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache .hypothesis demo-state
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
