# Two commands on a fresh machine with only python3 and make:
#   make demo   -- create .venv, install klest, run the main job
#   make test   -- create .venv with the dev extra, lint (ruff, and lint-imports: the layer
#                  contract of pyproject.toml), run the whole suite; then again in
#                  .venv-min at the lowest versions pyproject.toml declares (test-lowest)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# the lowest lane: every >= bound of pyproject.toml pinned exactly (checked by a test)
VENV_MIN        := .venv-min
BIN_MIN         := $(VENV_MIN)/bin
MIN_CONSTRAINTS := ci/constraints-min.txt
# pytest-xdist processes per lane (the lanes run one after the other)
WORKERS ?= 2

# Python's bytecode caches are written (git-ignored __pycache__/) even where the environment
# sets PYTHONDONTWRITEBYTECODE: without them every test process and every CLI, notebook or
# worker subprocess compiles klest again, and pytest rewrites the tests' assertions again
# (collecting the suite took 24 s per xdist worker instead of 10 on a 2-core AMD EPYC).
# For the same reason pip need not compile every module it installs (--no-compile: torch,
# transformers, scipy, ... in two venvs; the two installs took 74 s instead of 39): under
# make each module is compiled once, when something first imports it (a shell that sets
# PYTHONDONTWRITEBYTECODE compiles, at each import, what no make command has imported yet).
unexport PYTHONDONTWRITEBYTECODE
PIP_INSTALL = -m pip install --quiet --no-compile

.PHONY: demo test test-newest test-lowest lint format clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml setup.py $(wildcard klest/native/csrc/*)
	$(BIN)/python $(PIP_INSTALL) -e .
	touch $@

$(VENV)/.installed-dev: $(BIN)/python pyproject.toml setup.py $(wildcard klest/native/csrc/*)
	$(BIN)/python $(PIP_INSTALL) -e ".[dev]"
	touch $@ $(VENV)/.installed

$(BIN_MIN)/python:
	$(PYTHON) -m venv $(VENV_MIN)
	$(BIN_MIN)/python -m pip install --quiet --upgrade pip

$(VENV_MIN)/.installed-dev: $(BIN_MIN)/python pyproject.toml setup.py $(MIN_CONSTRAINTS) \
		$(wildcard klest/native/csrc/*)
	$(BIN_MIN)/python $(PIP_INSTALL) --constraint $(MIN_CONSTRAINTS) -e ".[dev]"
	touch $@

demo: $(VENV)/.installed
	$(BIN)/klest demo

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check klest tests benchmarks examples setup.py
	$(BIN)/ruff format --check klest tests benchmarks examples setup.py
	$(BIN)/lint-imports --no-cache --no-logo

# both lanes, in this order (one .venv is enough for lint; the README test's `make demo` uses it).
# The lowest lane leaves out the process-level modules (tests/conftest.py: CLI subprocesses,
# README, notebooks, figure set, killed pools, real Dask cluster), which the newest lane runs.
# The two venvs install side by side first (pip is mostly one core and waiting on files:
# together they take about as long as one alone), then the lanes run one after the other.
test:
	$(MAKE) -j2 $(VENV)/.installed-dev $(VENV_MIN)/.installed-dev
	$(MAKE) test-newest
	$(MAKE) test-lowest

test-newest: lint
	$(BIN)/python -m pytest -n $(WORKERS) --dist loadgroup

# The engine, sampler and statistics tests (FALLBACK_TESTS) run in both modes: compiled in
# the newest lane, on klest's pure-NumPy fallback (KLEST_NATIVE=0: the compiled library is
# not even loaded) in the lowest lane, where the fallback's NumPy code meets the oldest
# NumPy. The lowest lane's other tests use the compiled kernels (the native fuzz among them:
# it guards the compiled layer, which the fallback does not load). `make test-fallback` runs
# the fallback at the newest versions too (not part of `test`: ~40 s on 2 workers).
FALLBACK_TESTS := tests/test_engine.py tests/test_engine_statistics.py tests/test_engine_layers.py \
	tests/test_engine_arguments.py tests/test_compiled_samplers.py tests/test_golden_stream.py \
	tests/test_moment_kernels.py tests/test_special.py \
	tests/test_native_fallback.py tests/test_estimators.py tests/test_multivariate_normal.py \
	tests/test_block_stats.py tests/test_drawn_block_stats.py tests/test_stream_contract.py \
	tests/test_mixture_kernel.py tests/test_mixture_pass.py tests/test_mvn_kernel.py tests/test_seeding.py \
	klest/native

# The native fuzz searches 200 examples per entry point in the newest lane and 50 here (the
# same compiled code; here its argument checks meet the oldest NumPy's array conversions).
test-lowest: $(VENV_MIN)/.installed-dev
	KLEST_TEST_LANE=lowest KLEST_FUZZ_EXAMPLES=50 $(BIN_MIN)/python -m pytest -n $(WORKERS) \
		--dist loadgroup \
		$(addprefix --ignore=,$(FALLBACK_TESTS))
	KLEST_TEST_LANE=lowest KLEST_NATIVE=0 $(BIN_MIN)/python -m pytest -n $(WORKERS) \
		--dist loadgroup $(FALLBACK_TESTS)

.PHONY: test-fallback
test-fallback: $(VENV)/.installed-dev
	KLEST_NATIVE=0 $(BIN)/python -m pytest -n $(WORKERS) --dist loadgroup $(FALLBACK_TESTS)

# re-execute notebooks/NN_*.ipynb in place with the full sample sizes (stores their outputs)
.PHONY: notebooks
notebooks: $(VENV)/.installed-dev
	$(BIN)/python notebooks/run_notebooks.py

format: $(VENV)/.installed-dev
	$(BIN)/ruff format klest tests benchmarks examples setup.py
	$(BIN)/ruff check --fix klest tests benchmarks setup.py

clean:
	rm -rf $(VENV) $(VENV_MIN) .pytest_cache .hypothesis
	find klest tests benchmarks examples notebooks -name __pycache__ -prune -exec rm -rf {} +
