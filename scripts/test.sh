#!/usr/bin/env bash
# Set up (scripts/setup.sh), then run the linters and the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
. scripts/env.sh
echo "test: ruff"
ruff check .
echo "test: mypy"
mypy
echo "test: pytest"
mkdir -p test-artifacts
pytest --junitxml=test-artifacts/junit.xml --durations=10 "$@"
