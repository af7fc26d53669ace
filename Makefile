# Two entry points for a fresh machine: `make demo` (install, then fine-tune on the bundled data) and `make test`.
PYTHON ?= python

.PHONY: install demo test lint bench

install:
	$(PYTHON) -m pip install "torch==2.13.0"
	$(PYTHON) -m pip install -e ".[dev]"

demo: install
	raycad finetune

test:
	bash .ci/run

lint:
	ruff check raycad jobs tests bench

bench:
	$(PYTHON) bench/scan.py
	$(PYTHON) bench/data.py
	$(PYTHON) bench/train.py
	$(PYTHON) bench/tune.py
