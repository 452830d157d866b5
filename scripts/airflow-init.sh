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
# - with event-driven runs (RECSYS_DAYS_CLOSED_TOPIC set), the Kafka connection RECSYS_KAFKA_CONN_ID (default
#   kafka_default) if absent: the consumer configuration of the daily DAG's watcher of the closed-days topic
#   (plugins/recsys_airflow/assets.py), on the broker of RECSYS_KAFKA_BOOTSTRAP or the embedded one of
#   scripts/kafka.sh. Plaintext and no credentials: a production cluster's connection (SASL, TLS) belongs in the
#   secrets backend or AIRFLOW_CONN_KAFKA_DEFAULT (which wins); nothing here prints its configuration.
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
if [ -n "${RECSYS_DAYS_CLOSED_TOPIC:-}" ]; then
  KAFKA_CONN="${RECSYS_KAFKA_CONN_ID:-kafka_default}"
  if ! "$AIRFLOW" connections get "$KAFKA_CONN" >/dev/null 2>&1; then
    PYTHON="${PYTHON:-$(dirname "$(command -v "$AIRFLOW")")/python}"
    BOOTSTRAP="$("$PYTHON" -c 'from recsys.streaming.topics import default_bootstrap; print(default_bootstrap())')"
    # the offset is committed by the trigger itself once it accepted a message; earliest: an announcement made
    # while the triggerer was down is still read
    EXTRA="{\"bootstrap.servers\": \"$BOOTSTRAP\", \"group.id\": \"recsys-airflow-days-closed\", \
\"auto.offset.reset\": \"earliest\", \"enable.auto.commit\": false}"
    "$AIRFLOW" connections add "$KAFKA_CONN" --conn-type kafka --conn-extra "$EXTRA" \
      --conn-description "recsys: the closed-days topic's consumer (event-driven runs of the daily DAG)" >/dev/null
  fi
fi
