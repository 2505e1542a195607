# `make demo`: train LAMA (layout -> masks -> image) on the embedded synthetic
# dataset (CPU is fine).
# `make test`: the whole test suite, parity tests against PyTorch included.
# Both create .venv on first use; `make test` adds the test extras to it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
BASE := $(VENV)/.installed-base
TEST := $(VENV)/.installed-test
WORKDIR ?= runs/synthetic_lama
CONFIG ?= configs/synthetic_lama.py

.PHONY: demo test venv clean

$(BASE): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e .
	touch $@

$(TEST): $(BASE)
	$(BIN)/python -m pip install -q -e '.[test,parity]'
	touch $@

venv: $(TEST)

demo: $(BASE)
	$(BIN)/python -m jaxl2i.main --config=$(CONFIG) --workdir=$(WORKDIR)

test: $(TEST)
	$(BIN)/python -m pytest -n 2 --dist loadfile tests

clean:
	rm -rf $(VENV) runs
