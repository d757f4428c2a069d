# Everything needs only python3 (3.11, 3.12 or 3.13) on PATH: no Docker, no
# system Postgres. `make run` starts an embedded PostgreSQL and moto's SQS
# server itself (the local stack in devstack/, installed beside the runtime).
# PYTHON=/path/to/python3.13 VENV=.venv-313 builds another virtualenv.

PYTHON ?= python3
VENV ?= .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
FAUXQS_VERSION := 1.9.2
FAUXQS_DIR := .tools/fauxqs
FAUXQS_PKG := $(FAUXQS_DIR)/node_modules/fauxqs/package.json

PYTEST_ARGS ?=
# `make test` runs the suite in this many processes (pytest-xdist; whole files per process,
# so a module's fixtures stay together). PYTEST_WORKERS=0 runs it in this process alone.
PYTEST_WORKERS ?= 2
RUN_ARGS ?=
BENCH_ARGS ?=
CHAOS_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help venv run test test-fast lint bench-orders bench-pipeline bench-checkout bench-auth bench-consumer bench-scaleout chaos elasticmq-conf infra-check k8s \
	config-docs openapi fauxqs promtool chromium lock clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

venv: $(STAMP) ## create .venv and install the project (only when pyproject/lock changed)

# Reinstalls only when a pyproject.toml or requirements.lock is newer than the stamp.
# The runtime and the local stack (devstack/) both editable, every version from the lock.
$(STAMP): pyproject.toml devstack/pyproject.toml requirements.lock
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "Python 3.11+ is required as '$(PYTHON)'"; exit 1; }
	@test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --disable-pip-version-check -q -c requirements.lock -e '.[dev]' -e ./devstack
	@touch $@

run: venv ## run every service and worker locally (Ctrl-C stops everything)
	$(VPY) scripts/run.py $(RUN_ARGS)

test: venv ## run the test suite (PYTEST_ARGS="-k foo -x" to narrow it)
	@if command -v npm >/dev/null 2>&1; then \
		$(MAKE) --no-print-directory fauxqs || echo "fauxqs could not be installed: its tests will be skipped"; \
	fi
	@$(MAKE) --no-print-directory promtool || echo "promtool could not be installed: its rule tests will be skipped"
	@$(MAKE) --no-print-directory chromium
	$(VPY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

test-fast: venv ## the suite without the process-spawning tests (marked slow)
	$(VPY) -m pytest -m "not slow" $(PYTEST_ARGS)

lint: venv ## ruff
	$(VENV)/bin/ruff check .

bench-orders: venv ## HTTP order-placement benchmark (BENCH_ARGS=...)
	$(VPY) scripts/bench_orders.py $(BENCH_ARGS)

bench-pipeline: venv ## messaging pipeline benchmark (BENCH_ARGS=...)
	$(VPY) scripts/bench_pipeline.py $(BENCH_ARGS)

bench-checkout: venv ## checkout (inventory + payment hops) at peak and half load, CPU per process; breaker fail-fast (BENCH_ARGS=...)
	$(VPY) scripts/bench_checkout.py $(BENCH_ARGS)

bench-auth: venv ## token issuance rate and token verification overhead (BENCH_ARGS=...)
	$(VPY) scripts/bench_auth.py $(BENCH_ARGS)

bench-consumer: venv fauxqs ## consumer runtime vs raw boto3 loops, sqs-workers, kombu (BENCH_ARGS=--quick ...)
	$(VPY) scripts/bench_consumer.py $(BENCH_ARGS)

bench-scaleout: venv fauxqs ## one backlog drained by 1, 2, 4 delivery and 1, 2 order workers (BENCH_ARGS=--quick ...)
	$(VPY) scripts/bench_scaleout.py $(BENCH_ARGS)

chaos: venv ## the chaos run: faults + invariants, report in RELIABILITY.md (CHAOS_ARGS=...)
	@$(MAKE) --no-print-directory fauxqs
	$(VPY) scripts/chaos.py $(CHAOS_ARGS)

elasticmq-conf: venv ## regenerate elasticmq.conf, infra/sqs-queues.cfn.yaml and infra/k8s/ from the topology
	$(VPY) scripts/gen_elasticmq_conf.py
	$(VPY) scripts/gen_k8s.py

infra-check: venv ## fail if the generated queue files or Kubernetes manifests are out of date
	$(VPY) scripts/gen_infra.py --check
	$(VPY) scripts/gen_k8s.py --check

k8s: venv ## regenerate infra/k8s/ (kustomize base, overlays, rendered manifests)
	$(VPY) scripts/gen_k8s.py

config-docs: venv ## regenerate README.md's configuration tables from the settings classes
	$(VPY) scripts/gen_config_docs.py

openapi: venv ## write every service's OpenAPI document to docs/openapi/<service>.json
	$(VPY) scripts/gen_openapi.py

fauxqs: $(FAUXQS_PKG) ## install the fauxqs SQS emulator (needs node >= 20 and npm)

# promtool checks infra/monitoring/ (tests/unit/test_monitoring.py); Debian ships it
# in the prometheus package. Installed only as root with apt-get, else the test skips.
promtool: ## install promtool (Debian package prometheus) when root on a Debian-like machine
	@command -v promtool >/dev/null 2>&1 || { \
		command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends prometheus >/dev/null; }

$(FAUXQS_PKG):
	npm install --no-audit --no-fund --prefix $(FAUXQS_DIR) fauxqs@$(FAUXQS_VERSION)

# The browser tests (tests/browser) drive the system's Chromium: installed here where the
# machine allows it (root with apt-get), quietly; never an error (the tests then skip, saying why).
chromium: ## install Debian's chromium for the browser tests if missing (root + apt-get only)
	@if [ -n "$$CHROMIUM_PATH" ] || command -v chromium >/dev/null 2>&1 || \
		command -v chromium-browser >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing chromium for the browser tests (apt-get)"; \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends chromium; } >/dev/null 2>&1 || \
			echo "chromium could not be installed: the browser tests will be skipped"; \
	else echo "no chromium (and no root apt-get to install it): the browser tests will be skipped"; fi

lock: venv ## re-pin requirements.lock from the current .venv
	@{ echo "# Every installed package pinned: pip constraints for"; \
	   echo "#   pip install -c requirements.lock -e '.[dev]' -e ./devstack"; \
	   echo "# (the runtime, its dev extra and the local stack; the image installs the runtime only)."; \
	   echo "# Regenerate after changing pyproject.toml: make lock"; \
	   $(VENV)/bin/pip freeze --exclude-editable --disable-pip-version-check; } > requirements.lock.tmp
	@mv requirements.lock.tmp requirements.lock
	@touch $(STAMP)

clean: ## delete local data (.data: embedded Postgres, emulator logs)
	rm -rf .data
