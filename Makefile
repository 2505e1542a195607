# `make demo`: train pix2pix on the embedded synthetic dataset (CPU is fine).
# `make test`: the whole test suite, parity tests against PyTorch included.
# Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
WORKDIR ?= runs/synthetic_pix2pix
CONFIG ?= configs/synthetic_pix2pix.py

.PHONY: demo test venv clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,parity]'
	touch $@

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m jaxl2i.main --config=$(CONFIG) --workdir=$(WORKDIR)

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 tests

clean:
	rm -rf $(VENV) runs
