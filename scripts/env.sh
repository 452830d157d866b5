# Environment of the embedded default (local storage, SQLite Airflow). Sourced by the scripts in this
# directory; source it yourself to use `airflow` or `recsys` by hand:  . scripts/env.sh
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export REPO_ROOT
export PATH="$REPO_ROOT/.venv/bin:$PATH"
export AIRFLOW_HOME="${AIRFLOW_HOME:-$REPO_ROOT/var/airflow}"
export AIRFLOW__CORE__DAGS_FOLDER="$REPO_ROOT/dags"
export AIRFLOW__CORE__PLUGINS_FOLDER="$REPO_ROOT/plugins"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION=True
export RECSYS_STORAGE_ROOT="${RECSYS_STORAGE_ROOT:-$REPO_ROOT/var/store}"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
