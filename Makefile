# Two commands for a fresh machine:
#   make serve   build the default model repository and serve it (embedded onnxruntime, 127.0.0.1:3000)
#   make test    run the whole test suite
# and one for several instances behind nginx on one local Triton and one local PostgreSQL (Ctrl-C stops all of it):
#   make cluster [INSTANCES=3] [CLUSTER_PORT=8080] [CLUSTER_ARGS=--embedded]
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 3000
INSTANCES ?= 2
CLUSTER_PORT ?= 8080
CLUSTER_ARGS ?=
IMAGE ?= faceserve:latest

.PHONY: serve test cluster env system repository image bench bench-quick build-bentos clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: requirements/serve.txt requirements/convert.txt requirements/bench.txt requirements/bot.txt requirements/dev.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements/dev.txt
	touch $@

env: $(VENV)/.installed

# Debian packages of the servers the tests start (PostgreSQL, nginx, Chromium): requirements/debian.txt
system:
	.ci/system-packages

repository: env
	TF_CPP_MIN_LOG_LEVEL=3 $(BIN)/python -m convert build

serve: repository
	MALLOC_ARENA_MAX=2 BENTOML_DO_NOT_TRACK=True $(BIN)/bentoml serve service:FaceAnalysis --host $(HOST) --port $(PORT)

cluster: repository system
	BENTOML_DO_NOT_TRACK=True $(BIN)/python -m faceserve.dev.cluster --instances $(INSTANCES) --port $(CLUSTER_PORT) $(CLUSTER_ARGS)

# The CPU bento as an OCI image (faceserve:latest), built with podman onto a Debian base made here (docs/deploy.md)
image: repository system
	bentos/image/build.sh $(IMAGE)

test: repository system
	BENTOML_DO_NOT_TRACK=True $(BIN)/python -m pytest -q tests

bench: repository
	BENTOML_DO_NOT_TRACK=True $(BIN)/python -m benchmarks

bench-quick: repository
	BENTOML_DO_NOT_TRACK=True $(BIN)/python -m benchmarks --quick

clean:
	rm -rf $(VENV) model_repository/*/1
