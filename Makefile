# mfexp: `make sweep` and `make test` each do all the set-up on a fresh clone.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
GPU ?= 0
ifeq ($(GPU),1)
MXNET := mxnet-cu112==1.9.1
OTHER_MXNET := mxnet
else
MXNET := mxnet==1.9.1
OTHER_MXNET := mxnet-cu112
endif
STAMP := $(VENV)/.installed-$(if $(filter 1,$(GPU)),gpu,cpu)
HOST ?= 127.0.0.1
PORT ?= 5000
PORT_SERVE ?= 5001
PORT_SERVER ?= 5002
# make server: for several machines pass MLFLOW_BACKEND=postgresql://user@dbhost/mlflow (a database of
# its own, not the Optuna one) and HOST=0.0.0.0; SERVER_ARGS="--allowed-hosts mlflow.example" for DNS names.
MLFLOW_BACKEND ?= sqlite:///mlflow-server.db
ARTIFACTS ?= ./mlartifacts
SERVER_ARGS ?=
SWEEP ?= default
PYTEST_ARGS ?=
# MLflow 3's server imports starlette's deprecated WSGI middleware (a warning per worker, nothing to
# act on); a served model's artifacts need no progress bars; pkg_resources' "Module mfexp was already
# imported" concerns the editable install, not the model.
QUIET_SERVER := PYTHONWARNINGS="ignore:starlette.middleware.wsgi is deprecated,ignore:Module mfexp was already imported" \
  MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=false

.DEFAULT_GOAL := help
.PHONY: help install sweep run test test-fast ui serve server data bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'
	@echo "  options: GPU=1 (mxnet-cu112), HOST=, PORT= (make ui), SWEEP=, PORT_SERVE= (make serve), MLFLOW_BACKEND=, ARTIFACTS=, PORT_SERVER= (make server)"

install: $(STAMP) ## create .venv and install mfexp (editable) with mxnet 1.9.1 (GPU=1: mxnet-cu112)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "mfexp needs Python 3.11 ($(PYTHON) not found; make PYTHON=/path/to/python3.11)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip uninstall --quiet --yes $(OTHER_MXNET) >/dev/null 2>&1 || true
	$(PY) -m pip install --quiet "$(MXNET)" -e ".[dev,postgres]"
	rm -f $(VENV)/.installed-*
	touch $@

sweep: $(STAMP) ## the default sweep: plain, mlp, dropout and biased compared on u1 (sweeps/default/)
	$(PY) -m mfexp.sweep $(ARGS)

run: $(STAMP) ## one training run: make run ARGS="model=mlp"
	$(PY) -m mfexp.run $(ARGS)

data: $(STAMP) ## fetch ML-100K into the cache and print its summary
	$(PY) -m mfexp.data fetch
	$(PY) -m mfexp.data info

test: $(STAMP) ## the whole test suite (slow tests included), as CI runs it
	@bash tests/ensure_postgres.sh
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP) ## the fast tests only
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

ui: $(STAMP) ## the MLflow UI on http://127.0.0.1:5000 (HOST=, PORT= to change)
	@echo "MLflow UI: http://$(HOST):$(PORT)  (store: $${MLFLOW_TRACKING_URI:-sqlite:///mlflow.db})"
	$(QUIET_SERVER) $(VENV)/bin/mlflow ui --backend-store-uri "$${MLFLOW_TRACKING_URI:-sqlite:///mlflow.db}" --host $(HOST) --port $(PORT)

serve: $(STAMP) ## serve a sweep's champion: POST http://127.0.0.1:5001/invocations (SWEEP=, HOST=, PORT_SERVE=)
	@echo "serving models:/mfexp-$(SWEEP)-champion@champion on http://$(HOST):$(PORT_SERVE)/invocations  (store: $${MLFLOW_TRACKING_URI:-sqlite:///mlflow.db})"
	$(QUIET_SERVER) PATH="$(abspath $(VENV))/bin:$$PATH" MLFLOW_TRACKING_URI="$${MLFLOW_TRACKING_URI:-sqlite:///mlflow.db}" \
	  $(VENV)/bin/mlflow models serve -m "models:/mfexp-$(SWEEP)-champion@champion" --env-manager local \
	  --host $(HOST) --port $(PORT_SERVE)

server: $(STAMP) ## MLflow tracking server for workers on several machines, on http://127.0.0.1:5002 (MLFLOW_BACKEND=postgresql://..., ARTIFACTS=, HOST=, PORT_SERVER=)
	@echo "MLflow tracking server: workers set MLFLOW_TRACKING_URI=http://$(if $(filter 0.0.0.0,$(HOST)),<this machine>,$(HOST)):$(PORT_SERVER)  (backend: $(MLFLOW_BACKEND), artifacts: $(ARTIFACTS))"
	$(QUIET_SERVER) $(VENV)/bin/mlflow server --backend-store-uri "$(MLFLOW_BACKEND)" --artifacts-destination "$(ARTIFACTS)" \
	  --host $(HOST) --port $(PORT_SERVER) $(SERVER_ARGS)

bench: $(STAMP) ## speed benchmarks -> bench/results/, BENCHMARKS.md
	$(PY) -m bench $(ARGS)

clean: ## remove the venv and caches (not mlflow.db, not sweeps/)
	rm -rf $(VENV) .pytest_cache *.egg-info
