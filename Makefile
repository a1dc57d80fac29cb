PY ?= .venv/bin/python
# the offline JPEG copy of CIFAR-10 as an archive (cifar10-jpeg.tar.xz), when there is one
CIFAR10_JPEG ?=

help:  ## list the targets
	@grep -E '^[a-z0-9/.-]+:.*## ' Makefile | sed 's/:.*## /\t/'

install:  ## create .venv and install the project with its dev tools
	python3 -m venv .venv
	.venv/bin/pip install -e '.[dev]'

test:  ## the default test run (CPU, two processes, about three minutes)
	$(PY) -m pytest -n 2

test-slow:  ## every test but the SLURM ones (make test-slurm): the slower ones too
	$(PY) -m pytest -n 2 -m 'not slurm'

test-slurm:  ## sweeps through a real SLURM scheduler (bash .ci/slurm-up starts a one-node one)
	$(PY) -m pytest -m slurm

lint:  ## ruff lint and format check
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format:  ## apply ruff's formatting and fixes
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

data/cifar10-jpeg:  ## unpack the offline JPEG copy of CIFAR-10 that CIFAR10_JPEG=<archive> names
	@[ -n "$(CIFAR10_JPEG)" ] || { echo "error: CIFAR10_JPEG is not set: make $@ CIFAR10_JPEG=<path to cifar10-jpeg.tar.xz>" >&2; exit 1; }
	mkdir -p $@.partial && tar -xJf "$(CIFAR10_JPEG)" -C $@.partial && mv $@.partial $@

quickstart:  ## the quickstart study on data/cifar10-jpeg, else the archive CIFAR10_JPEG names, else the official download
	@if [ -d data/cifar10-jpeg/train ]; then data=""; \
	elif [ -n "$(CIFAR10_JPEG)" ]; then $(MAKE) --no-print-directory data/cifar10-jpeg && data=""; \
	else data="dataset=cifar10"; \
	fi && $(PY) -m cifar_sweep +experiment=quickstart $$data -m

train:  ## ResNet-18 on CIFAR-10 with the defaults
	$(PY) -m cifar_sweep

train-offline: data/cifar10-jpeg  ## the same on the offline JPEG copy
	$(PY) -m cifar_sweep dataset=cifar10_folder

sweep:  ## an Optuna study over the default search space
	$(PY) -m cifar_sweep -m

bench:  ## runner vs bare PyTorch loop throughput (CPU figures with a small model)
	$(PY) -m benchmarks.throughput

bench-sweep:  ## hyperband vs no pruning on the NAS space; sweeper overhead per trial; what MLflow costs a trial
	$(PY) -m benchmarks.sweep_pruning

WORKERS ?= 1,2
bench-workers:  ## sweep wall time with 1 and 2 worker processes (WORKERS=1,2,4 on a GPU)
	$(PY) -m benchmarks.sweep_workers --workers $(WORKERS)

campaign:  ## the GPU campaign's stages not yet measured (PROFILE=cpu: the CPU reproduction, hours; STAGES=a,b to rerun; SMOKE=1: toy scale; ARGS="--out DIR ...")
	$(PY) -m benchmarks.campaign $(if $(PROFILE),--profile $(PROFILE)) $(if $(STAGES),--stages $(STAGES)) $(if $(SMOKE),--smoke) $(ARGS)

bench-peers:  ## our sweeper against the stock sweeper, an Optuna script and Ray Tune (pip install -e '.[peers]'; about 75 minutes; SMOKE=1: minutes; ARGS="--seeds 1 ...")
	$(if $(SMOKE),,@[ -d data/cifar10-jpeg ] || $(MAKE) --no-print-directory data/cifar10-jpeg)
	$(PY) -m benchmarks.peers $(if $(SMOKE),--smoke) $(ARGS)

bench-startup: data/cifar10-jpeg  ## cached load of the JPEG copy, time to a bad value's error and to the first step
	$(PY) -m benchmarks.startup

tensorboard:  ## TensorBoard on every run and sweep
	$(PY) -m tensorboard.main --logdir outputs

clean:  ## remove outputs, caches and build files (not data/)
	rm -rf outputs .pytest_cache .ruff_cache build dist *.egg-info

.PHONY: help install quickstart test test-slow test-slurm lint format train train-offline sweep bench bench-sweep bench-workers bench-peers bench-startup campaign tensorboard clean
