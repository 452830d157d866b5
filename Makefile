# The two commands of the README, plus helpers. Everything installs into ./.venv (scripts/setup.sh).
.PHONY: setup demo test lint clean

setup:
	scripts/setup.sh

demo:
	scripts/demo.sh

test:
	scripts/test.sh

lint:
	scripts/setup.sh && .venv/bin/ruff check . && .venv/bin/mypy

clean:
	rm -rf var test-artifacts
