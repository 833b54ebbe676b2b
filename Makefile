# Two entry points for a fresh machine: `make demo` and `make test`. Both set up .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python
export VENV

.PHONY: setup demo test lint clean-venv

setup:
	bash scripts/setup.sh

demo: setup
	$(VENV)/bin/clip2scene demo --out demo_output

test: setup
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check .

clean-venv:
	rm -rf $(VENV)
