# Code Runner: `make up` runs the whole stack locally, `make test` runs every test.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
SRC    := gateway consumers runner sandbox schemas bus config telemetry cli local curriculum grading progress flags tests bench load chaos examples

.PHONY: install up test lint format bench load chaos clean web

# Exact versions from requirements.lock; the project itself is installed editable on top. Not
# byte-compiled up front (a third of the install's time): Python compiles what it imports, once.
$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-compile -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

up: install
	$(BIN)/coderunner up

lint: install
	$(BIN)/ruff check $(SRC)
	$(BIN)/ruff format --check $(SRC)
	$(BIN)/mypy

format: install
	$(BIN)/ruff format $(SRC)
	$(BIN)/ruff check --fix $(SRC)

# pytest exits 5 when it collected no test: make treats that as a failure, as it should.
# The podman service that system-deps.sh started is stopped again: nothing outlives the run.
# One process until the load-sensitive tests hold up in parallel: two and three workers (16 min,
# tests/conftest.py keeps modules whole) each failed a timing-sensitive test on a fresh clone.
TEST_WORKERS ?= 1
test: install lint
	bash .ci/system-deps.sh
	$(BIN)/python -m pytest -n $(TEST_WORKERS); rc=$$?; [ -n "$$DOCKER_HOST" ] || bash .ci/podman.sh stop; exit $$rc

# The browser app (web/) bundled into gateway/static, which is committed: only this target needs Node.
web:
	cd web && npm ci && node build.mjs

bench: install
	bash .ci/system-deps.sh
	$(BIN)/python bench/e2e_latency.py
	$(BIN)/python bench/sandbox_latency.py
	$(BIN)/python bench/grading.py
	$(BIN)/python bench/progress.py
	$(BIN)/python bench/observability.py
	$(BIN)/python bench/throughput.py
	$(BIN)/python bench/sse_capacity.py

# One load scenario (load/scenarios.py) against a stack started for it; results in .data/load/.
SCENARIO ?= normal
load: install
	$(BIN)/python -m load.run $(SCENARIO)

# The long chaos run (tests/test_chaos.py runs a bounded one): a three-node JetStream cluster, nodes,
# a runner and consumers SIGKILLed under load, then the history checker's counts.
JOBS ?= 1000
chaos: install
	$(BIN)/python -m chaos --jobs $(JOBS)

clean:
	rm -rf $(VENV) .data .pytest_cache .mypy_cache .ruff_cache
