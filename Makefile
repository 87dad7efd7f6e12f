# One entry point for humans and CI (.ci/run calls `make test`).
#   make run   install the node into .venv, create a home on first use, start the node
#   make test  install the test tools, then ruff, mypy --strict on src/, and the whole pytest suite

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q
PYTEST_ARGS ?=
RUN_ARGS ?=

.PHONY: run test install install-test lint typecheck pytest bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed-run: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) install -c constraints.txt -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) install -c constraints.txt -e '.[test]'
	touch $(VENV)/.installed-run $@

install: $(VENV)/.installed-run
install-test: $(VENV)/.installed-test

# `init --if-missing` creates the home ($$CIS_HOME or ~/.cis) with a node name derived from the
# host name, and does nothing when the home already holds a node.
run: install
	$(BIN)/cis-node init --if-missing
	exec $(BIN)/cis-node run $(RUN_ARGS)

lint: install-test
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: install-test
	$(BIN)/mypy

pytest: install-test
	$(BIN)/pytest $(PYTEST_ARGS)

test: lint typecheck pytest

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis
