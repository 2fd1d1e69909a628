# carbonbench: `make demo` measures the default scenario and writes a report;
# `make test` runs the test suite. Both create .venv and install what they need.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Pinned so that a fresh machine gets a known build; override, e.g. `make demo TORCH=torch`.
TORCH  ?= torch==2.13.0
SCENARIO ?= scenarios/opt-125m.yaml
OUT    ?= results

.PHONY: demo test lint check install install-test report clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

demo: install
	$(BIN)/carbonbench run $(SCENARIO) --out $(OUT)
	$(BIN)/carbonbench report $(OUT) -o reports/$(notdir $(basename $(SCENARIO))).html

test: install-test
	$(BIN)/python -m pytest -q

# The layer contract (pyproject.toml [tool.importlinter]) and ruff's lint and format.
lint: install-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

check: lint test

clean:
	rm -rf $(VENV) results .pytest_cache
