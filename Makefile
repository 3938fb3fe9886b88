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
# Codegen and the report read your lake ($(LAKE)) once a sweep has written trials into
# it (or when it is a URI such as s3://...), else the example lake we ship.
EXAMPLE_LAKE ?= datasets/example-lake
READ_LAKE    ?= $(if $(findstring ://,$(LAKE)),$(LAKE),$(if $(wildcard $(LAKE)/trials),$(LAKE),$(EXAMPLE_LAKE)))
SAY_LAKE      = @echo "reading the lake $(READ_LAKE)$(if $(filter $(EXAMPLE_LAKE),$(READ_LAKE)), (the shipped example: run make sweep to fill $(LAKE)),)"

.PHONY: install test check lint sweep build codegen report clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q $(TORCH) -e ".[sweep,report,dev]"
	touch $@

install: $(VENV)/.installed

# The full suite, as CI runs it. pytest's exit 5 (no test collected) fails too, like any non-zero.
test: install
	$(BIN)/python -m pytest -q

# What to run while developing: lint and the fast tests. Measured: 283 tests, 71 s of CPU
# (user+sys), so about 1.5 min on an idle 2-core machine; 3 min wall on one shared by six.
check: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -m "not slow"

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
	$(SAY_LAKE)
	$(BIN)/diffaccel tasks --lake $(READ_LAKE) --out $(OUT)/tasks
	$(BIN)/diffaccel codegen --tasks $(OUT)/tasks/tasks.jsonl --out $(OUT)/tasks

report: install
	$(SAY_LAKE)
	$(BIN)/diffaccel report --lake $(READ_LAKE) --out $(OUT)/report

clean:
	rm -rf $(OUT) .pytest_cache
