# The two commands a newcomer needs: `make demo` and `make test`. Both set up
# everything on a fresh machine first (scripts/bootstrap), then run.
.PHONY: demo test setup lint typecheck check services-up services-down clean lock

PULSE := .venv/bin/pulse
PYTEST_ARGS ?=
# Test files run on 2 workers (pytest-xdist), one file per worker at a time, so a
# module's shared fixtures start once: much of the suite waits on Kafka, Redis
# and child processes, and the other worker uses that time. PYTEST_WORKERS=0
# runs everything in one process.
PYTEST_WORKERS ?= 2

setup:
	@scripts/bootstrap

demo: setup
	$(PULSE) demo

# Exit code 5 (no tests collected) counts as a failure: a suite that ran
# nothing proves nothing.
test: setup
	@.venv/bin/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: no tests were collected" >&2; exit 1; fi; exit $$rc

lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

typecheck: setup
	.venv/bin/mypy

check: lint typecheck test

services-up: setup
	$(PULSE) services up

services-down:
	$(PULSE) services down

clean:
	rm -rf .venv .mypy_cache .pytest_cache .ruff_cache .hypothesis

# Re-pin constraints.txt from a fresh resolution of pyproject.toml.
lock:
	rm -rf .lock-venv && python3 -m venv .lock-venv
	.lock-venv/bin/pip install -q -U pip && .lock-venv/bin/pip install -q -e '.[dev,eval]'
	( head -2 constraints.txt; .lock-venv/bin/pip freeze --exclude-editable | grep -v '^pulse' ) > constraints.new
	mv constraints.new constraints.txt && rm -rf .lock-venv
