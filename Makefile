# diffaccel: one entry point per job. Every target creates .venv when missing.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
# The CPU wheel on machines without a GPU keeps installs small; on a CUDA host set
# TORCH=torch (or leave the host's torch in place with TORCH=).
TORCH  ?= torch==2.13.0
SPEC   ?= datasets/sweeps/default.yaml
LAKE   ?= lake
OUT    ?= out
# Codegen and the report read this lake; it defaults to the example lake we ship.
EXAMPLE_LAKE ?= datasets/example-lake
READ_LAKE    ?= $(if $(wildcard $(EXAMPLE_LAKE)),$(EXAMPLE_LAKE),$(LAKE))

.PHONY: install test lint sweep build codegen report clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q $(TORCH) -e ".[sweep,report,dev]"
	touch $@

install: $(VENV)/.installed

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check .

sweep: install
	$(BIN)/diffaccel sweep $(SPEC) --lake $(LAKE)

# The search loop: sweep SPEC into LAKE, then sweep what keeps its tasks from being met
# (missing configs, unconfirmed points, refinement past the frontier), then write tasks
# and scripts into OUT/build. ROUNDS and GPU_MINUTES bound it.
ROUNDS      ?= 3
GPU_MINUTES ?=
build: install
	$(BIN)/diffaccel build $(SPEC) --lake $(LAKE) --out $(OUT)/build --rounds $(ROUNDS) \
		$(if $(GPU_MINUTES),--max-gpu-minutes $(GPU_MINUTES))

codegen: install
	$(BIN)/diffaccel tasks --lake $(READ_LAKE) --out $(OUT)/tasks
	$(BIN)/diffaccel codegen --tasks $(OUT)/tasks/tasks.jsonl --out $(OUT)/tasks

report: install
	$(BIN)/diffaccel report --lake $(READ_LAKE) --out $(OUT)/report

clean:
	rm -rf $(OUT) .pytest_cache
