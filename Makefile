# pystatsd: `make run` runs the daemon on etc/pystatsd.yaml, `make test` runs every test.
# Both install what is missing first; nothing needs installing by hand.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run test test-unit lint types check clean bench bench-quick

install: $(STAMP) run/log

$(STAMP): pyproject.toml stages/keytable.h stages/listeners/recv_many.c stages/listeners/drain.c stages/receiver/window.c \
		stages/aggregator/bucket.c
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run/log:
	mkdir -p -m 700 run run/log

run: install
	umask 077 && $(VENV)/bin/supervisord -n -c supervisord.conf

test: install
	bash tests/kafka/fetch_jars.sh
	bash tests/sinks/install_servers.sh
	$(PY) -m pytest

test-unit: install
	$(PY) -m pytest tests/unit

BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): pyproject.toml | $(STAMP)
	$(PY) -m pip install --quiet -e '.[test,bench]'
	touch $(BENCH_STAMP)

# pystatsd vs Etsy statsd (as shipped and tuned), Telegraf's statsd input and statsd_exporter on the
# realistic mix (the headline) and on repeated counters, then the flush benchmark: about 30 minutes on
# 2 cores (1.5 more on the first run, which builds Telegraf and installs the other peers); writes
# bench/RESULTS.md and bench/results.png.
bench: install $(BENCH_STAMP)
	sh bench/build.sh
	$(PY) -m bench.run --json bench/.build/results.json
	$(PY) -m bench.flush --json bench/.build/flush.json

# The two 20,000-series headline loads only, into bench/.build/ (RESULTS.md is left alone): about 10 minutes.
bench-quick: install $(BENCH_STAMP)
	sh bench/build.sh
	$(PY) -m bench.run --quick --json bench/.build/results-quick.json --out bench/.build/RESULTS-quick.md

lint: install
	$(VENV)/bin/ruff check stages tests pystatsd bench harness

# The type checker on the daemon and the client library (pyproject.toml's [tool.mypy]).
types: install
	$(VENV)/bin/mypy

# The fast loop: lint, types and the unit tests, in under a minute.
check: lint types
	$(PY) -m pytest -q tests/unit

clean:
	rm -rf $(VENV) run dist .pytest_cache

# Packages (README "Install"): the project and its dependencies in a virtualenv under /opt/pystatsd,
# the config, the systemd unit and /usr/bin/pystatsd. The scripts install dpkg-deb or rpmbuild if missing.
DIST ?= dist
.PHONY: deb rpm

deb: install
	bash etc/packaging/build_deb.sh $(DIST)

rpm: install
	bash etc/packaging/build_rpm.sh $(DIST)
