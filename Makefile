# Ferry — the two commands a newcomer needs: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: setup test unit bench lint demo clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

# Parallel test workers (pytest-xdist): each has its own emulator pair and stacks; a module stays on one
# worker (--dist loadscope), heaviest modules first (tests/conftest.py orders them). Two, one per core of the
# reference machine (the e2e modules mostly wait on their stacks; more workers add emulators and stacks to
# start and timing races on a loaded machine). TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2

## the whole suite: unit tests, contract suites against fakes and the emulators, end-to-end;
## the 20 slowest tests are listed at the end of every run
test: setup
	$(PY) -m pytest -q -p no:cacheprovider tests --ignore=tests/bench -n $(TEST_WORKERS) --dist loadscope \
	  --no-loadscope-reorder --durations=20

## fast unit tests only
unit: setup
	$(PY) -m pytest -q -p no:cacheprovider tests/unit

bench: setup
	$(PY) -m pytest -q -p no:cacheprovider -s tests/bench

## ruff, mypy, the import contracts of docs/architecture.md (pyproject.toml, [tool.importlinter]), no import cycle
lint: setup
	$(VENV)/bin/ruff check shared functions tests
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q -p no:cacheprovider tests/unit/architecture  # no import cycle, type-only imports too

demo: setup
	$(PY) examples/demo.py

clean:
	rm -rf $(VENV) .ferry build *.egg-info
