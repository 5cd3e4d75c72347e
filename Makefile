# Two entry points: `make run` (the default study) and `make test` (the test suite).
# Both create .venv on first use and install the project into it.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
STUDY ?= studies/mnist.yaml

.PHONY: run test lint clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

run: $(BIN)/.installed
	$(BIN)/search run $(STUDY)

test: $(BIN)/.installed
	bash scripts/system-deps.sh
	$(BIN)/python -m ruff check search tests benchmarks examples
	$(BIN)/python -m pytest -q

lint: $(BIN)/.installed
	$(BIN)/python -m ruff check search tests benchmarks examples

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
