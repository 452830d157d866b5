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
# The LocalExecutor with pandas, pyarrow, Great Expectations and TensorFlow imported once in the scheduler
# before its workers fork, so no task process imports them again (plugins/recsys_airflow/executor.py;
# bench/freshness/README.md). `airflow standalone` keeps it (a local executor).
export AIRFLOW__CORE__EXECUTOR="${AIRFLOW__CORE__EXECUTOR:-recsys_airflow.executor.PreloadingLocalExecutor}"
export RECSYS_STORAGE_ROOT="${RECSYS_STORAGE_ROOT:-$REPO_ROOT/var/store}"
# The partition sensor looks every 15 s here instead of the DAG's 60 s default: a day that lands while its run
# waits is found within ~16 s instead of ~61 s (bench/freshness/README.md: landing to served 148 s -> 83 s).
# The price: each look is a short task process (reschedule mode), ~3.5 CPU-s on this machine, so a waiting run
# costs ~0.2 of a core. Read by the DAG processor: set it before `airflow standalone`.
export RECSYS_SENSOR_POKE_SECONDS="${RECSYS_SENSOR_POKE_SECONDS:-15}"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
