# Alles-klar retention: `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
VENV_STAMP := $(VENV)/.requirements-installed

.PHONY: help system-deps venv test test-long test-faults validate ropa lint demo demo-stop bench

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-12s %s\n", $$1, $$2}'

system-deps: ## Install PostgreSQL, OpenSSH server and Chromium (Debian, as root) unless already there
	@missing=""; \
	[ -x /usr/sbin/sshd ] || missing="$$missing openssh-server"; \
	compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing="$$missing postgresql"; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing; \
	fi

venv: $(VENV_STAMP) ## Create .venv and install the pinned requirements (again only when they change)

$(VENV_STAMP): requirements.txt requirements-dev.txt constraints.txt
	[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -r requirements-dev.txt -c constraints.txt
	touch $@

test: system-deps venv lint ## Lint (ruff, strict mypy), then the whole test suite against real local services
	$(PY) -m pytest

test-long: system-deps venv ## The slow end-to-end variants and the property tests on many more generated worlds
	HYPOTHESIS_PROFILE=long $(PY) -m pytest -m "long or property"

test-faults: system-deps venv ## The whole fault-injection suite on the real services
	$(PY) -m pytest tests/integration/faults -m ""

validate: venv ## Validate the policies (DATABASE_URL=... also checks tables and columns; COVERAGE=1 lists personal-looking data no policy covers)
	PYTHONPATH=plugins $(PY) -m retention.cli validate include/retention_policies $(if $(DATABASE_URL),--database-url "$(DATABASE_URL)") $(if $(filter-out 0,$(COVERAGE)),--coverage)

ropa: venv ## Write the record of processing activities (GDPR Art. 30) to build/: ropa.da.md, ropa.en.md, ropa.json
	mkdir -p build
	at=$$(date -u +%Y-%m-%dT%H:%M:%S+00:00); \
	for out in da.md:"--lang da" en.md:"--lang en" json:"--format json"; do \
		PYTHONPATH=plugins $(PY) -m retention.cli ropa $${out#*:} --generated-at "$$at" include/retention_policies \
			> build/ropa.$${out%%:*}.tmp || { rm -f build/ropa.$${out%%:*}.tmp; exit 2; }; \
		mv build/ropa.$${out%%:*}.tmp build/ropa.$${out%%:*}; \
	done
	@echo "wrote build/ropa.da.md, build/ropa.en.md, build/ropa.json"

lint: venv ## ruff over the repository, strict mypy over both packages under plugins/
	$(PY) -m ruff check .
	$(PY) -m mypy -p retention -p retention_airflow

demo: system-deps venv ## Run the demo: services, a small world, Airflow on localhost, both DAGs, a summary (Ctrl-C or make demo-stop ends it)
	$(PY) -m harness.demo start $(DEMO_ARGS)

demo-stop: venv ## Stop everything the demo started
	$(PY) -m harness.demo stop

bench: system-deps venv ## Run the erasure benchmark (about 16 min; SCALE=0.1 quick, SCALE=5 FILES_SCALE=1 large; see bench/README.md)
	$(PY) -m bench.run $(if $(SCALE),--scale $(SCALE)) $(if $(FILES_SCALE),--files-scale $(FILES_SCALE))
