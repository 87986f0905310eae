# VidSteal: `make range` sets everything up and runs the range; `make test` runs the tests.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
APT_PACKAGES := redis-server prometheus

.PHONY: setup system-packages range test lint clean-runs

setup: system-packages $(STAMP)

system-packages:
	@missing=""; for bin in redis-server prometheus; do command -v $$bin >/dev/null || missing=1; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing $(APT_PACKAGES) with apt-get"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] && echo "" || echo sudo ); \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(APT_PACKAGES) >/dev/null; \
	fi

$(STAMP):
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) is required"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	@rm -f $(VENV)/.installed-*; touch $(STAMP)

range: setup
	$(PY) -m victim_server evaluate --model embedded --seed 12345 --n 1000
	$(PY) -m vidsteal range

test: setup
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/mypy

clean-runs:
	rm -rf runs .range
