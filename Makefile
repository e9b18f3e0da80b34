# Two commands on a fresh machine: `make run` and `make test`. Both create and reuse .venv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: install run test lint format typecheck pytest bench schemas kafka-jars clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools
	$(BIN)/python -m pip install -q -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $@

install: $(STAMP)

run: install                   ## the service: embedded Kafka unless FIRESALE_KAFKA_BOOTSTRAP is set
	$(BIN)/firesale run

test: install lint typecheck pytest   ## every quality gate; what .ci/run calls

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: install
	$(BIN)/mypy

pytest: install kafka-jars tools   ## everything but the fault suite
	$(BIN)/pytest -m "not fault"

.PHONY: faults audit soak
faults: install kafka-jars tools   ## the fault suite: real broker and processes, injected faults
	$(BIN)/pytest -m fault tests/faults

audit: install                 ## known vulnerabilities of the installed packages (PyPI advisories)
	@# exit 1 (a vulnerable package) fails; exit 3 (index unreachable: could not run) is reported
	$(BIN)/python -m deploy.tools.audit --json $(VENV)/audit.json || test $$? -eq 3

.PHONY: tools
tools: $(VENV)/.tools-prometheus   ## promtool, prometheus, alertmanager, amtool (Debian packages)

$(VENV)/.tools-prometheus: deploy/tools/install-prometheus.sh | install
	bash deploy/tools/install-prometheus.sh
	@touch $@

.PHONY: fuzz
fuzz: install                  ## 100,000 hostile frames per venue through each parser and the frame router
	$(BIN)/python -m tests.connectors.fuzz --examples 100000

kafka-jars: install            ## fetch the Kafka broker jars once (cached in ~/.cache/firesale)
	$(BIN)/python -c "from deploy.kafka.broker import resolve_jars; print('kafka jars:', resolve_jars())"

bench: install                 ## benchmarks with their baselines measured in the same run
	$(BIN)/python -m bench.correlation
	$(BIN)/python -m bench.connectors
	$(BIN)/python -m bench.pipeline

soak: install kafka-jars       ## 32 min of the scenario at 10x through the real service: RSS and lag
	$(BIN)/python -m bench.soak --minutes 32 --speed 10 --out soak-results

schemas: install               ## regenerate streams/schemas/*.json from the event types
	$(BIN)/python -m streams.events_schemas

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
