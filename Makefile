# Two commands: `make run` and `make test`. Everything is installed from this file and pyproject.toml.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PROMTOOL := $(VENV)/promtool/usr/bin/promtool

.PHONY: install run test test-fast lint format bench chaos broker clean

$(STAMP): pyproject.toml constraints.txt build-constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c build-constraints.txt --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt --build-constraint build-constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# promtool, for the Prometheus rules' own tests (deploy/prometheus/rules_test.yml): taken from
# Debian's prometheus package where apt can download it (no root needed). Where it cannot,
# that test says it is skipped, and the rest of the suite runs as before.
$(PROMTOOL): | $(STAMP)
	-mkdir -p $(VENV)/promtool && cd $(VENV)/promtool \
	  && apt-get download prometheus >/dev/null 2>&1 \
	  && dpkg-deb -x prometheus_*.deb . && rm -f prometheus_*.deb

## make run: embedded broker + topics + generator + worker, printing each window as it closes.
run: $(STAMP)
	$(BIN)/kappa demo

## make test: the whole suite (unit, integration against the embedded broker, e2e).
## pytest exits 5 when it collected no test: that is a failure here, not a success.
## Two pytest processes (pytest-xdist), each with its own embedded broker: most of the suite's
## time is spent waiting on worker processes and the broker, so two halve it on two cores.
## worksteal: a process that runs out of tests takes queued ones from the other, so the few
## long integration tests do not end the run on one process (about 6 min against 7-8).
TEST_PROCESSES ?= 2
test: $(STAMP) $(PROMTOOL)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -n $(TEST_PROCESSES) --dist worksteal; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests ran"; exit 1; fi; exit $$rc

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q tests/tables tests/agents tests/app tests/replay -m "not integration and not e2e"

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run

chaos: $(STAMP)
	KAPPA_CHAOS_ROUNDS=50 $(BIN)/python -m pytest -q -m chaos

broker: $(STAMP)
	$(BIN)/kappa broker

clean:
	rm -rf $(VENV) .kappa build *.egg-info
