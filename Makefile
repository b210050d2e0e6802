# mfexp: `make sweep` and `make test` each do all the set-up on a fresh clone.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
GPU ?= 0
ifeq ($(GPU),1)
MXNET := mxnet-cu112==1.9.1
OTHER_MXNET := mxnet
EXTRAS := dev,postgres,redis,auth,gpu
else
MXNET := mxnet==1.9.1
OTHER_MXNET := mxnet-cu112
EXTRAS := dev,postgres,redis,auth
endif
STAMP := $(VENV)/.installed-$(if $(filter 1,$(GPU)),gpu,cpu)
HOST ?= 127.0.0.1
PORT ?= 5000
PORT_SERVE ?= 5001
PORT_SERVER ?= 5002
PORT_DASHBOARD ?= 8080
# make dashboard: STORAGE=<Optuna RDB URL> for a sweep run with sweep.storage=<URL>
STORAGE ?=
# make server: for several machines pass MLFLOW_BACKEND=postgresql://user@dbhost/mlflow (a database of
# its own, not the Optuna one) and HOST=0.0.0.0; SERVER_ARGS="--allowed-hosts mlflow.example" for DNS names.
MLFLOW_BACKEND ?= sqlite:///mlflow-server.db
ARTIFACTS ?= ./mlartifacts
SERVER_ARGS ?=
AUTH ?= 0
AUTH_DB ?= sqlite:///basic_auth.db
# make test / test-fast: pytest-xdist workers (tests pin MXNet to one thread each); 0 runs them in-process
TEST_WORKERS ?= auto
SWEEP ?= default
PYTEST_ARGS ?=
# MLflow 3's server imports starlette's deprecated WSGI middleware (a warning per worker, nothing to
# act on); a served model's artifacts need no progress bars; pkg_resources' "Module mfexp was already
# imported" concerns the editable install, not the model.
QUIET_SERVER := PYTHONWARNINGS="ignore:starlette.middleware.wsgi is deprecated,ignore:Module mfexp was already imported" \
  MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=false

.DEFAULT_GOAL := help
.PHONY: help install sweep run test test-fast ui dashboard serve server data bench gpu-check clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'
	@echo "  options: GPU=1 (mxnet-cu112), HOST=, PORT= (make ui), SWEEP=, STORAGE=, PORT_DASHBOARD= (make dashboard), PORT_SERVE= (make serve), MLFLOW_BACKEND=, ARTIFACTS=, PORT_SERVER=, AUTH=1 (make server)"

install: $(STAMP) ## create .venv and install mfexp (editable) with mxnet 1.9.1 (GPU=1: mxnet-cu112)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "mfexp needs Python 3.11 ($(PYTHON) not found; make PYTHON=/path/to/python3.11)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip uninstall --quiet --yes $(OTHER_MXNET) >/dev/null 2>&1 || true
	$(PY) -m pip install --quiet "$(MXNET)" -e ".[$(EXTRAS)]"
	rm -f $(VENV)/.installed-*
	touch $@

sweep: $(STAMP) ## the default sweep: the seven models compared on u1, then blended (7-12 min on 2 cores; sweeps/default/)
	$(PY) -m mfexp.sweep $(ARGS)

run: $(STAMP) ## one training run: make run ARGS="model=mlp"
	$(PY) -m mfexp.run $(ARGS)

data: $(STAMP) ## fetch ML-100K into the cache and print its summary
	$(PY) -m mfexp.data fetch
	$(PY) -m mfexp.data info

test: $(STAMP) ## the whole test suite (slow tests included), as CI runs it, one pytest worker per core
	@bash tests/ensure_servers.sh
	$(PY) -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

test-fast: $(STAMP) ## the fast tests only: no end-to-end sweeps, no servers, no download (offline)
	$(PY) -m pytest -n $(TEST_WORKERS) -m "not slow and not ml100k" $(PYTEST_ARGS)

ui: $(STAMP) ## the MLflow UI on http://127.0.0.1:5000, with a direct link to each experiment's runs (HOST=, PORT=)
	@MLFLOW_TRACKING_URI="$${MLFLOW_TRACKING_URI:-sqlite:///mlflow.db}" $(PY) -m mfexp.track links http://$(HOST):$(PORT) \
	  || echo "MLflow UI: http://$(HOST):$(PORT)  (store: $${MLFLOW_TRACKING_URI:-sqlite:///mlflow.db})"
	$(QUIET_SERVER) $(VENV)/bin/mlflow ui --backend-store-uri "$${MLFLOW_TRACKING_URI:-sqlite:///mlflow.db}" --host $(HOST) --port $(PORT)

dashboard: $(STAMP) ## optuna-dashboard over a sweep's Optuna storage on http://127.0.0.1:8080 (SWEEP=, STORAGE=<rdb-url>, HOST=, PORT_DASHBOARD=)
	$(PY) -m mfexp.sweep.dashboard --sweep $(SWEEP) $(if $(STORAGE),--storage "$(STORAGE)") --host $(HOST) --port $(PORT_DASHBOARD)

serve: $(STAMP) ## serve a sweep's champion: POST http://127.0.0.1:5001/invocations (SWEEP=, HOST=, PORT_SERVE=)
	@echo "serving models:/mfexp-$(SWEEP)-champion@champion on http://$(HOST):$(PORT_SERVE)/invocations  (store: $${MLFLOW_TRACKING_URI:-sqlite:///mlflow.db})"
	$(QUIET_SERVER) PATH="$(abspath $(VENV))/bin:$$PATH" MLFLOW_TRACKING_URI="$${MLFLOW_TRACKING_URI:-sqlite:///mlflow.db}" \
	  $(VENV)/bin/mlflow models serve -m "models:/mfexp-$(SWEEP)-champion@champion" --env-manager local \
	  --host $(HOST) --port $(PORT_SERVE)

server: $(STAMP) ## MLflow tracking server for workers on several machines, on http://127.0.0.1:5002 (MLFLOW_BACKEND=postgresql://..., ARTIFACTS=, HOST=, PORT_SERVER=, AUTH=1)
	+@case "$(HOST)" in 127.*|localhost|::1) ;; *) [ "$(AUTH)" = 1 ] || echo "make server: warning: HOST=$(HOST)" \
	  "without AUTH=1 lets anyone who can reach this machine read and change every run and model. Use AUTH=1" \
	  "(MLflow's basic-auth app, docs/scaling.md), or a firewall." >&2 ;; esac
	@echo "MLflow tracking server: workers set MLFLOW_TRACKING_URI=http://$(if $(filter 0.0.0.0,$(HOST)),<this machine>,$(HOST)):$(PORT_SERVER)$(if $(filter 1,$(AUTH)), and MLFLOW_TRACKING_USERNAME/PASSWORD,)  (backend: $(MLFLOW_BACKEND), artifacts: $(ARTIFACTS))"
	@# AUTH=1: the admin's credentials come from the environment only (never this command line nor
	@# the repo): MLFLOW_AUTH_ADMIN_USERNAME/PASSWORD, else MLFLOW_TRACKING_USERNAME/PASSWORD, or an
	@# ini of your own in MLFLOW_AUTH_CONFIG_PATH. MLflow creates the admin on the first start (users
	@# in AUTH_DB) and ignores them afterwards. Without an ini of yours, one without secrets is
	@# written into the venv: it caches a checked password for a minute, since MLflow hashes it
	@# (PBKDF2, ~0.5 s of CPU) on every request otherwise.
	@app=; if [ "$(AUTH)" = 1 ]; then \
	  user="$${MLFLOW_AUTH_ADMIN_USERNAME:-$${MLFLOW_TRACKING_USERNAME:-}}"; \
	  pass="$${MLFLOW_AUTH_ADMIN_PASSWORD:-$${MLFLOW_TRACKING_PASSWORD:-}}"; \
	  if [ -z "$$pass" ] && [ -z "$${MLFLOW_AUTH_CONFIG_PATH:-}" ]; then \
	    echo "make server AUTH=1: set the admin's credentials in the environment, e.g. export" \
	      "MLFLOW_TRACKING_USERNAME=admin MLFLOW_TRACKING_PASSWORD=... (or MLFLOW_AUTH_CONFIG_PATH=<an ini" \
	      "outside the repo>); never on the command line." >&2; exit 2; fi; \
	  if [ -n "$$user" ]; then export MLFLOW_AUTH_ADMIN_USERNAME="$$user"; fi; \
	  if [ -n "$$pass" ]; then export MLFLOW_AUTH_ADMIN_PASSWORD="$$pass"; fi; \
	  if [ -z "$${MLFLOW_AUTH_CONFIG_PATH:-}" ]; then \
	    export MLFLOW_AUTH_CONFIG_PATH="$(abspath $(VENV))/mfexp-auth.ini"; \
	    printf '%s\n' "[mlflow]" "default_permission = READ" "database_uri = $(AUTH_DB)" "admin_username = admin" \
	      "authorization_function = mlflow.server.auth:authenticate_request_basic_auth" \
	      "auth_cache_ttl_seconds = 60" > "$$MLFLOW_AUTH_CONFIG_PATH"; fi; \
	  export MLFLOW_FLASK_SERVER_SECRET_KEY="$${MLFLOW_FLASK_SERVER_SECRET_KEY:-$$($(PY) -c 'import secrets; print(secrets.token_hex(32))')}"; \
	  app="--app-name basic-auth"; \
	fi; \
	exec env $(QUIET_SERVER) $(VENV)/bin/mlflow server $$app --backend-store-uri "$(MLFLOW_BACKEND)" --artifacts-destination "$(ARTIFACTS)" \
	  --host $(HOST) --port $(PORT_SERVER) $(SERVER_ARGS)

bench: $(STAMP) ## speed benchmarks -> bench/results/, BENCHMARKS.md
	$(PY) -m bench $(ARGS)

gpu-check: $(STAMP) ## on a GPU host (make install GPU=1): each model on GPU vs CPU, serving on CPU, a 2-GPU sweep; exit 2 without a GPU
	$(PY) -m ops.gpu_check $(ARGS)

clean: ## remove the venv and caches (not mlflow.db, not sweeps/)
	rm -rf $(VENV) .pytest_cache *.egg-info
