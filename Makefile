# Two commands on a fresh machine with only python3 and make:
#   make demo   -- create .venv, install klest, run the main job
#   make test   -- create .venv with the dev extra, lint, run the whole suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint format clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml setup.py $(wildcard klest/csrc/*)
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: $(BIN)/python pyproject.toml setup.py $(wildcard klest/csrc/*)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@ $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/klest demo

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check klest tests benchmarks setup.py
	$(BIN)/ruff format --check klest tests benchmarks setup.py

test: lint
	$(BIN)/python -m pytest

# re-execute notebooks/NN_*.ipynb in place with the full sample sizes (stores their outputs)
.PHONY: notebooks
notebooks: $(VENV)/.installed-dev
	$(BIN)/python notebooks/run_notebooks.py

format: $(VENV)/.installed-dev
	$(BIN)/ruff format klest tests benchmarks setup.py
	$(BIN)/ruff check --fix klest tests benchmarks setup.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
