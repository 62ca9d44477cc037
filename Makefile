# Build, test and demo tap-kustomer. Needs only GNU make and python3 (3.10-3.13).
#
#   make test    lint, then the whole test suite (unit, sandbox, Meltano + PostgreSQL end to end)
#   make demo    sandbox Kustomer org -> meltano run tap-kustomer target-postgres, twice
#   make lint    ruff + mypy
#   make clean   remove the environments and generated files

PYTHON ?= python3
UV_VERSION := 0.13.8
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
PY := $(VENV)/bin/python
MELTANO := $(TOOLS)/meltano/bin/meltano
export UV_PYTHON_DOWNLOADS := never

.PHONY: venv meltano test lint demo clean

# uv itself, bootstrapped into .tools/ from PyPI when it is missing.
$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

# The project environment (.venv: the tap plus the dev dependency group), from uv.lock.
venv: $(UV)
	@$(UV) sync --locked --quiet --python "$$(command -v $(PYTHON))"

# Meltano in its own environment (.tools/meltano), kept apart from the tap's dependencies.
meltano: venv
	@$(PY) -m scripts.meltano_env >/dev/null

lint: venv
	$(PY) -m ruff check tap_kustomer tests scripts benchmarks
	$(PY) -m mypy tap_kustomer

test: venv meltano
	$(MAKE) --no-print-directory lint
	$(PY) -m pytest

demo: venv meltano
	$(PY) -m scripts.demo

clean:
	@if [ -x $(PY) ] && [ -d .demo/pg ]; then $(PY) -m scripts.demo --stop || true; fi
	rm -rf $(VENV) $(TOOLS) .meltano .demo output .pytest_cache .ruff_cache .mypy_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
