# soraflow: two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export PREFECT_HOME ?= $(CURDIR)/.prefect
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 180
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export MLFLOW_TRACKING_URI ?= sqlite:///$(CURDIR)/mlflow.db
# The demo's networks are tiny: one intra-op thread per process is the fastest on a small shared
# CPU (measured: demo VAE 0.14 s/step with 1 thread vs 5 s/step with 2 while other jobs ran);
# parallelism comes from processes (curation workers, torchrun ranks). A stage that runs alone sets
# its own count (vae.demo_train.threads: 2, 0.080 s/step vs 0.110 on 1). Override for big models.
export OMP_NUM_THREADS ?= 1

.PHONY: help install demo exp-save exp test test-fast test-slow ui plots readme-grid

# --no-cache-dir: the venv alone is 7.3 GB (torch's CUDA wheels), and a CI machine once ran out
# of disk during this install; pip's wheel cache would only add to it.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --no-cache-dir --upgrade pip
	$(BIN)/python -m pip install -q --no-cache-dir -e '.[dev]'
	touch $(STAMP)

## Create .venv and install soraflow with its test tools (torch from the pinned local wheels).
install: $(STAMP)

## The main job: the whole DVC pipeline on the embedded demo corpus.
demo: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH scripts/with-prefect-server $(BIN)/dvc repro

## Record the last run (dvc.lock, params.yaml, metrics/) as a DVC experiment: make exp-save NAME=demo.
exp-save:
	$(BIN)/dvc exp save --name $(or $(NAME),demo) --include-untracked metrics

## Run the pipeline as a DVC experiment with params changed: make exp NAME=steps400 SET="train.steps=400".
exp: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH scripts/with-prefect-server $(BIN)/dvc exp run $(if $(NAME),--name $(NAME)) $(addprefix --set-param ,$(SET))

## The whole test suite: fast tests, then the slow end-to-end ones.
test: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"
	$(BIN)/python -m pytest -m slow

## The fast tests only (the first half of `make test`).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

## The slow end-to-end tests only (the second half of `make test`).
test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow

## MLflow UI on http://127.0.0.1:5000 over the local tracking database.
ui: $(STAMP)
	$(BIN)/mlflow ui --host 127.0.0.1 --port 5000 --backend-store-uri $(MLFLOW_TRACKING_URI) --default-artifact-root $(CURDIR)/mlartifacts

## DVC's plots of the last run (training loss, prompt checks, held-out loss, confusions) in dvc_plots/index.html.
plots: $(STAMP)
	$(BIN)/dvc plots show

## Refresh the README's sample grid from the last `make demo` (data/samples/grid.gif, captioned).
readme-grid:
	test -f data/samples/grid.gif || { echo "no data/samples/grid.gif: run make demo first"; exit 1; }
	mkdir -p docs && cp data/samples/grid.gif docs/demo-samples.gif

## This list: every target and what it does.
help:
	@awk '/^## /{doc=substr($$0,4); next} /^[a-z-]+:/{if (doc != "") printf "  make %-12s %s\n", substr($$0,1,index($$0,":")-1), doc} {doc=""}' $(firstword $(MAKEFILE_LIST))
