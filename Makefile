# Two commands on a fresh machine: `make run` (a real CPU-sized search) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
# torch and torchvision first, pinned to builds that pip finds on these machines' own disk.
TORCH ?= torch==2.14.1 torchvision==0.29.1
# A copy of CIFAR-10 (train/<class>/, test/<class>/); override with `make run DATA=/path`.
DATA ?= $(firstword $(wildcard data/cifar10 ../shared/datasets/cifar10))
STAMP := $(VENV)/.installed

.PHONY: run test test-fast lint

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

# Where no copy is found: the 12,000-image CIFAR-10 sample this repository ships, as an ImageFolder.
SAMPLE := data/cifar10-sample

run: $(STAMP)
ifeq ($(DATA),)
	@echo "make run: no CIFAR-10 copy in data/cifar10 or ../shared/datasets/cifar10;" \
		"searching the sample shipped in benchmarks/data/cifar10-subset.npz ($(SAMPLE))"
	$(PY) -m benchmarks.unpack_sample $(SAMPLE)
endif
	$(VENV)/bin/tune-run spaces/resnet18.py --quick --data-dir $(or $(DATA),$(SAMPLE)) \
		--name resnet18-quick-$$(date +%Y%m%d-%H%M%S)

test: $(STAMP)
	$(PY) -m pytest

# The edit loop: everything but the end-to-end searches (marked slow), in about two minutes.
test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow" -q

lint: $(STAMP)
	$(PY) -m pip install -q ruff && $(VENV)/bin/ruff check .
