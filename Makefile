# pystatsd: `make run` runs the daemon on etc/pystatsd.yaml, `make test` runs every test.
# Both install what is missing first; nothing needs installing by hand.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install install-test run test test-unit lint types check clean bench bench-quick docs

install: $(STAMP) run/log

# What the daemon needs, and nothing else (the test and lint tools come with `make test`). The build
# backend's notes on experimental pyproject keys and editable installs are for packagers: not shown.
$(STAMP): pyproject.toml stages/common/keytable.h stages/receiver/listeners/recv_many.c stages/receiver/listeners/drain.c \
		stages/receiver/listeners/datagram_slots.h \
		stages/receiver/window.c \
		stages/aggregator/bucket.c
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	PYTHONWARNINGS=ignore $(PY) -m pip install --quiet -e .
	touch $(STAMP)

# pyproject.toml's test extras, without building the project again.
TEST_STAMP := $(VENV)/.test-installed

$(TEST_STAMP): pyproject.toml | $(STAMP)
	$(PY) -m pip install --quiet $$($(PY) -c 'import tomllib; print(" ".join(\
		tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["test"]))')
	touch $(TEST_STAMP)

install-test: $(STAMP) $(TEST_STAMP)

run/log:
	mkdir -p -m 700 run run/log

# The daemon on the repo's config, as `pystatsd run` runs it: the config and every address checked
# first (every problem printed, nothing started), then each stage's log and the aggregates here.
# Not run/log first: pystatsd run makes its run directory itself, after checking that no other user
# could have planted a link there (mkdir -p would follow one).
run: $(STAMP)
	$(VENV)/bin/pystatsd run -c etc/pystatsd.yaml

# pytest-xdist workers of make test, in the lanes of tests/lanes.py (0: one process, about 25 minutes).
# Three a core: six take about 6 minutes on 2 cores. More workers than cores, since most tests wait
# on flush intervals, outages and restarts rather than compute; ten at most, as the longest lane
# (Kafka's, about 3 minutes) then sets the time (docs/development.md).
TEST_WORKERS ?= $(shell cores=$$(nproc); echo $$(( cores * 3 < 10 ? cores * 3 : 10 )))

# The set-up's time is printed apart from pytest's: the first run on a machine fetches and builds the
# test servers (cached outside the clone), a later one only checks the cache.
test: install-test
	@started=$$(date +%s) && bash tests/kafka/fetch_jars.sh && bash tests/sinks/install_servers.sh \
		&& bash tests/e2e/install_tmux.sh \
		&& echo "make test: test servers ready in $$(( $$(date +%s) - started )) s"
	$(PY) -m pytest --durations=30 -n $(TEST_WORKERS)

test-unit: install-test
	$(PY) -m pytest tests/unit

BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): pyproject.toml | $(STAMP) $(TEST_STAMP)
	$(PY) -m pip install --quiet -e '.[test,bench]'
	touch $(BENCH_STAMP)

# pystatsd vs Etsy statsd (as shipped and tuned), Telegraf's statsd input and statsd_exporter on the
# realistic mix (the headline) and on repeated counters, then the flush benchmark, then what a tap or a
# top costs: about 30 minutes on 2 cores, the last about 4 of them (1.5 more on the first run, which builds
# Telegraf and installs the other peers); writes bench/RESULTS.md (bench.run and bench.tap_cost each
# their own part) and bench/results.png. pystatsd-sinks writes to the sink tests' servers: installed or built
# (once, cached) as make test does.
bench: install-test $(BENCH_STAMP)
	sh bench/build.sh
	bash tests/sinks/install_servers.sh
	$(PY) -m bench.run --json bench/.build/results.json
	$(PY) -m bench.flush --json bench/.build/flush.json
	$(PY) -m bench.tap_cost --json bench/.build/tap_cost.json

# The two 20,000-series headline loads only, into bench/.build/ (RESULTS.md is left alone): about 10 minutes.
bench-quick: install-test $(BENCH_STAMP)
	sh bench/build.sh
	bash tests/sinks/install_servers.sh
	$(PY) -m bench.run --quick --json bench/.build/results-quick.json --out bench/.build/RESULTS-quick.md

lint: install-test
	$(VENV)/bin/ruff check stages tests pystatsd bench harness docs

# README.md's picture of the pipeline, drawn from docs/pipeline.txt (standard library only: no install).
docs:
	$(PYTHON) docs/draw_pipeline.py

# The type checker on the daemon and the client library (pyproject.toml's [tool.mypy]).
types: install-test
	$(VENV)/bin/mypy

# The fast loop: lint, types and every test that needs no server (none of the server markers:
# tests/conftest.py marks the rest `serverless`, and fails one that starts a pipeline or a server).
check: lint types
	$(PY) -m pytest -q -m serverless

clean:
	rm -rf $(VENV) run dist .pytest_cache

# Packages (docs/operations.md, "Install"): the project and its dependencies in a virtualenv under /opt/pystatsd,
# the config, the systemd unit and /usr/bin/pystatsd. The scripts install dpkg-deb or rpmbuild if missing.
DIST ?= dist
.PHONY: deb rpm

deb: install
	bash etc/packaging/build_deb.sh $(DIST)

rpm: install
	bash etc/packaging/build_rpm.sh $(DIST)
