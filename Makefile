# rdd: every target creates the virtual environment it needs (.venv, git-ignored).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install run test test-full lint format bench clean

help: ## show this help
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP) ## create .venv and install rdd with its dev tools

run: $(STAMP) ## distil + evaluate the embedded default (digits, DC, IPC 10) on CPU; extra overrides via ARGS="..."
	$(PY) -m rdd.run $(ARGS)

test: $(STAMP) ## fast test suite (what CI runs)
	$(PY) -m pytest -m "not slow" -q -n auto

test-full: $(STAMP) ## every test, slow end-to-end ones included
	$(PY) -m pytest -q -n auto

lint: $(STAMP) ## ruff lint + format check
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m ruff format --check src tests benchmarks

format: $(STAMP) ## ruff format + autofix
	$(PY) -m ruff format src tests benchmarks
	$(PY) -m ruff check --fix src tests benchmarks

bench: $(STAMP) ## DC outer-iteration time and peak memory on CIFAR-10-shaped data
	$(PY) benchmarks/bench_dc_iteration.py

clean: ## remove run outputs and caches (keeps .venv and the dataset cache)
	rm -rf logs outputs multirun .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
