#!/usr/bin/env bash
# Set up everything the product needs in ./.venv: checks (and as root installs) the Debian packages,
# creates the virtual environment, installs the pinned dependencies and the recsys package.
# Idempotent and quick when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"

# Debian packages: a C toolchain and libkrb5-dev (the HDFS provider's gssapi builds from source),
# python3.11 with venv support; postgresql (Airflow's production metadata database; its integration test
# starts a throwaway cluster of it).
need=()
for pkg in libkrb5-dev gcc pkg-config postgresql; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if ! command -v "$PYTHON" >/dev/null 2>&1; then need+=(python3.11 python3.11-venv); fi
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${need[*]}"
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${need[@]}"
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $("$PYTHON" --version)"
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.recsys-installed
# the stamp covers the install's recipe too ("bytecode": a venv installed before the step below is redone)
hash="$( (cat requirements.txt constraints.txt pyproject.toml; echo bytecode) | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$hash" ]; then
  echo "setup: installing pinned dependencies (first time: a few minutes, about 2 GB)"
  .venv/bin/python -m pip install -q "$(grep -E '^uv==' constraints.txt)"
  .venv/bin/uv pip install --python .venv/bin/python -q -r requirements.txt -c constraints.txt
  .venv/bin/uv pip install --python .venv/bin/python -q --no-deps -e .
  # every installed module compiled once, here (uv leaves it to the first import): where PYTHONDONTWRITEBYTECODE
  # is set, as on some CI machines, nothing would ever be cached, and every process (each Airflow task, each
  # Spark step) would compile TensorFlow, Airflow, Great Expectations and pandas from source, doubling its time
  echo "setup: compiling the installed modules (about a minute)"
  .venv/bin/python -m compileall -q -j 0 "$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" >/dev/null
  echo "$hash" > "$stamp"
fi
echo "setup: ready ($(.venv/bin/python --version), $(.venv/bin/airflow version 2>/dev/null | tail -1 | sed 's/^/airflow /'))"
