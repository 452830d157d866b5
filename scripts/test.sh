#!/usr/bin/env bash
# Set up (scripts/setup.sh), then run the linters and the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# the Data Docs browser test drives Debian's Chromium (never a downloaded browser build)
if [ ! -x /usr/bin/chromium ]; then
  echo "test: installing Debian's chromium for the browser test"
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q chromium
fi
# tests/unit/test_docker_compose.py runs `docker compose config` (or Debian's docker-compose 1.29 where the
# Compose v2 plugin is absent) on docker/compose.yaml; no Docker daemon is needed
if ! docker compose version >/dev/null 2>&1 && ! command -v docker-compose >/dev/null 2>&1; then
  echo "test: installing Debian's docker-compose for the compose file test"
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends docker-compose
fi
. scripts/env.sh
echo "test: ruff"
ruff check .
echo "test: mypy"
mypy
echo "test: pytest"
mkdir -p test-artifacts
pytest --junitxml=test-artifacts/junit.xml --durations=10 "$@"
