# Quick start: `make run` (the main job) and `make test`. Both build the project's environment
# on first use (scripts/in-env: a venv, or a Debian 13 root filesystem on older-glibc hosts).
IN_ENV := scripts/in-env
ARGS ?=
PYTEST_ARGS ?=
IMAGE ?= tfx-image-transfer:local

.PHONY: run test test-fast lint env help image image-test kubeflow-test

help:
	@echo "make run [ARGS='--data-dir DIR ...']  train, evaluate and push (tfx-image-transfer, pipeline/run_local.py)"
	@echo "make test [PYTEST_ARGS=...]          the test suite (on ../shared, else data downloaded once)"
	@echo "make test-fast                       the unit tests only: no pipeline run, no model export"
	@echo "make lint                            ruff"
	@echo "make env                             build the environment only"
	@echo "make image [IMAGE=REGISTRY/NAME:TAG]  build the Kubeflow components' image (docker or podman)"
	@echo "make image-test [IMAGE=...]          run the built image as Kubeflow would (skipped without an engine)"
	@echo "make kubeflow-test [IMAGE=...]       run the compiled pipeline with kfp's local runner in the image"

env:
	$(IN_ENV) python -c "import tfx, tensorflow, keras; print('tfx', tfx.__version__, 'tf', tensorflow.__version__, 'keras', keras.__version__)"

run:
	$(IN_ENV) tfx-image-transfer $(ARGS)

test:
	$(IN_ENV) ruff check .
	$(IN_ENV) python -m pytest $(PYTEST_ARGS)

test-fast:
	$(IN_ENV) python -m pytest -m "not e2e and not slow" $(PYTEST_ARGS)

lint:
	$(IN_ENV) ruff check .

image:
	scripts/image build $(IMAGE)

image-test:
	scripts/image test $(IMAGE)

kubeflow-test:
	scripts/image kubeflow-test $(IMAGE)
