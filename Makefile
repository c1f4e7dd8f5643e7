# Keygate: `make run` starts the whole stack, `make test` runs the whole suite.
# Both create .venv on a fresh machine and install what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: run test lint bench install test-deps clean deploy-smoke

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e '.[embedded]'
	touch $@

$(TEST_STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e '.[embedded,test,dev]'
	touch $(STAMP) $@

install: $(STAMP)

run: $(STAMP)
	$(BIN)/gateway dev

test-deps:
	@bash scripts/install-test-deps.sh

test: $(TEST_STAMP) test-deps
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: $(TEST_STAMP)
	$(BIN)/ruff check gateway admin_ui sandbox tests bench
	$(BIN)/mypy

bench: $(TEST_STAMP)
	$(BIN)/python -m bench.run $(BENCH_ARGS)

# deploy/docker-compose.yml on a real Docker, brought up, exercised and torn down (minutes;
# not part of `make test` or CI). SMOKE_ARGS=--keep leaves the stack running.
deploy-smoke:
	$(PYTHON) deploy/smoke $(SMOKE_ARGS)

clean:
	rm -rf $(VENV) .keygate tests/artifacts
