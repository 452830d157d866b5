#!/usr/bin/env bash
# Initialise an Airflow metadata database for the recsys DAGs (run it wherever `airflow db migrate` runs:
# scripts/demo.sh, the test fixtures, a deployment's init job). Idempotent.
# - `airflow db migrate`: create or upgrade the schema;
# - the pool `recsys_registry` (1 slot): every task that writes the model registry takes its slot, so one such
#   task runs at a time across the three DAGs (plugins/recsys_airflow/dag_support.py: REGISTRY_POOL). An
#   existing pool keeps the slots an operator gave it.
# - the connection `spark_default` (Spark in the worker, local[*]) if absent: RECSYS_COMPUTE=spark submits the
#   validate and features steps through it (plugins/recsys_airflow/spark.py); point it at a cluster by editing it
#   (or with AIRFLOW_CONN_SPARK_DEFAULT, which wins).
# Uses the `airflow` on PATH (or $AIRFLOW) and the AIRFLOW_* environment of the caller.
set -euo pipefail
AIRFLOW="${AIRFLOW:-airflow}"
POOL=recsys_registry
"$AIRFLOW" db migrate
if ! "$AIRFLOW" pools get "$POOL" >/dev/null 2>&1; then
  "$AIRFLOW" pools set "$POOL" 1 "recsys: one task at a time writes the model registry (registry/two_tower.json)"
fi
if ! "$AIRFLOW" connections get spark_default >/dev/null 2>&1; then
  "$AIRFLOW" connections add spark_default --conn-type spark --conn-host 'local[*]' \
    --conn-description "recsys: the Spark master of RECSYS_COMPUTE=spark (local[*]: in the worker)" >/dev/null
fi
