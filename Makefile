# Set-up and everyday commands. Every target creates/updates the virtual environment first.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: help install train test test-fast lint docs clean-logs

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/'

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, from the local CPU wheel: a bare `torch` requirement would pull a multi-GB CUDA build
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)  ## create or update the virtual environment

train: install  ## train LightGCN on the embedded default dataset
	$(PY) train.py $(ARGS)

test: install  ## import layers, docs build, then the whole test suite (slow tests included) on every core, as CI does
	$(VENV)/bin/lint-imports --no-logo
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet --site-dir site
	WANDB_MODE=disabled $(PY) -m pytest -n auto --dist loadscope $(ARGS)

test-fast: install  ## the quick loop: skip slow tests
	WANDB_MODE=disabled $(PY) -m pytest -m "not slow" $(ARGS)

lint: install  ## ruff check
	$(VENV)/bin/ruff check src tests scripts train.py eval.py

docs: install  ## build the documentation site into site/ (broken links fail); browse with .venv/bin/mkdocs serve
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

clean-logs:  ## delete run outputs
	rm -rf logs/*/ 
