# make run: start the example API under Gunicorn behind the shield.
# make test: run the whole test suite (both commands set up a fresh machine).
# make bench: run the benchmarks in bench/ (not part of the test suite),
#   both the pytest-benchmark tables and the interleaved ratio tests.

VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: bootstrap run test bench lint clean

bootstrap:
	./scripts/bootstrap.sh

run: bootstrap
	$(PY) -m gunicorn --config deploy/gunicorn.conf.py

test: bootstrap
	./scripts/test.sh

bench: bootstrap
	$(PY) -m pytest bench -q -s --benchmark-columns=min,median,mean,ops

lint: bootstrap
	$(VENV)/bin/ruff check wsgishield tests bench app_example
	$(VENV)/bin/mypy

clean:
	rm -rf build $(VENV) wsgishield/_fast/*.so wsgishield/_fast/*.c
