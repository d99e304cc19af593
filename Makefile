# The two commands of README.md: `make book` and `make test`. Both set everything up on a
# fresh machine: a virtual environment in .venv, torch first, then the package with extras.

PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install book test data clean

install: $(STAMP)

# Re-runs only when the package's requirements change; otherwise make skips it.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check "$(TORCH)"
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[book,dev,bench]"
	touch $(STAMP)

data: $(STAMP)
	$(VENV)/bin/xscene fetch ml-100k

book: data
	$(VENV)/bin/jupyter-book build --warningiserror --keep-going .
	@echo "Open _build/html/index.html"

test: $(STAMP)
	$(PY) -m pytest

clean:
	rm -rf _build
