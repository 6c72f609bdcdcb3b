# One command to set up and run the tests (`make test`) or the offline demo (`make demo`).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The offline data next to a checkout (../shared/data) is used when present.
export WDRO_DATA_DIR ?= $(abspath ../shared/data)

.PHONY: install test demo clean

install: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(BIN)/.torch: | $(BIN)/python
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	touch $@

# visdom (needed by adv-lib's imports) builds only against the venv's own setuptools, and only one that still
# ships pkg_resources (removed in setuptools 81; torch pulls in the newest)
$(STAMP): pyproject.toml | $(BIN)/.torch
	$(BIN)/pip install --quiet 'setuptools<81'
	$(BIN)/pip install --quiet --no-build-isolation visdom==0.2.4
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

test: install
	$(BIN)/lint-imports
	$(BIN)/python -m pytest tests

demo: install
	$(BIN)/wdro-finetune demo

clean:
	rm -rf $(VENV) demo_output .pytest_cache
