# Tide: `make demo` runs it, `make test` tests it, `make check` lints and tests.
VENV ?= .venv
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: venv gen demo test check lint typecheck layers clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

# containerd's gRPC stubs are generated at build time from Debian's protos
# (golang-github-containerd-containerd-dev); nothing generated is committed.
gen: venv
	$(PY) -m noded.runtime.containerd.gen_protos

demo: venv
	$(PY) examples/demo.py

test: venv gen
	$(PY) -m pytest -q -p no:cacheprovider tests

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: venv
	$(VENV)/bin/mypy

layers: venv
	$(VENV)/bin/lint-imports

check: lint typecheck layers test

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache
