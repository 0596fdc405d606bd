# Everyday tasks. The README's two set-up commands stay the reference; these are shortcuts.
PY ?= .venv/bin/python

.PHONY: install test test-fast test-slow lint format wheel-check

install:  ## the tested dependency set, editable, with the dev tools
	python3 -m venv .venv && .venv/bin/pip install -c constraints.txt -e ".[dev]"

test:  ## everything (README command 2)
	$(PY) -m pytest

test-fast:  ## the unit layer: no CLI subprocesses, no full training runs
	$(PY) -m pytest -m "not slow"

test-slow:  ## the end-to-end layer
	$(PY) -m pytest -m slow

lint:  ## ruff lint and format check
	$(PY) -m ruff check src tests bench
	$(PY) -m ruff format --check src tests bench

format:
	$(PY) -m ruff check --fix src tests bench
	$(PY) -m ruff format src tests bench

wheel-check:  ## build the wheel, install it alone in a fresh venv over .venv's dependencies, run the default job from another dir (as CI does)
	.ci/wheel_check
