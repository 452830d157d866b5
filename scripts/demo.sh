#!/usr/bin/env bash
# The demo: set up, initialise Airflow (SQLite), land DEMO_DAYS days of Online Retail starting at
# DEMO_START, run the incremental DAG through Airflow for each date, print what happened.
# Safe to rerun: landed partitions and processed dates are left as they are (every step is idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
. scripts/env.sh
START="${DEMO_START:-2010-12-01}"
DAYS="${DEMO_DAYS:-5}"
DAG_ID=recsys_incremental_update
LOGS="$REPO_ROOT/var/logs"
mkdir -p "$LOGS"

echo "demo: Airflow home $AIRFLOW_HOME, partition store $RECSYS_STORAGE_ROOT"
# the schema, and the pool of the tasks that write the model registry
scripts/airflow-init.sh > "$LOGS/airflow-db-migrate.log" 2>&1 || { tail -20 "$LOGS/airflow-db-migrate.log"; exit 1; }

echo "demo: landing $DAYS days of Online Retail from $START (data files first, _SUCCESS last)"
recsys land --from "$START" --days "$DAYS" > "$LOGS/land.json" 2> "$LOGS/land.log"
mapfile -t DATES < <(python -c 'import json,sys; [print(x["date"]) for x in json.load(open(sys.argv[1]))]' "$LOGS/land.json")

for day in "${DATES[@]}"; do
  echo
  echo "demo: running $DAG_ID for $day through Airflow (log: var/logs/dag-$day.log)"
  started=$SECONDS
  airflow dags test "$DAG_ID" "$day" > "$LOGS/dag-$day.log" 2>&1 || true
  state="$(airflow dags state "$DAG_ID" "$day" 2>/dev/null | tail -1)"
  echo "   run state  : $state ($((SECONDS - started)) s)"
  recsys summary --date "$day"
  if [ "$state" != "success" ]; then
    echo "demo: the run for $day did not succeed; the last lines of its log:" >&2
    grep -E "ERROR|Error|failed" "$LOGS/dag-$day.log" | tail -5 >&2
    exit 1
  fi
done

echo
recsys showcase 2>/dev/null
cat <<TXT

demo: done. To look at the runs in the Airflow UI:
    . scripts/env.sh && airflow standalone
then open http://localhost:8080 (user "admin"; the password is printed by standalone and stored in
$AIRFLOW_HOME/simple_auth_manager_passwords.json.generated). The registry is at
$RECSYS_STORAGE_ROOT/registry/two_tower.json; "recsys --help" lists the other commands.
To serve recommendations over HTTP (follows deploys and rollbacks without a restart):
    . scripts/env.sh && recsys serve --host 127.0.0.1 --port 8000
then open http://127.0.0.1:8000/docs or curl http://127.0.0.1:8000/recommendations/<customer id>?k=10
TXT
