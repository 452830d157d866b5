#!/usr/bin/env bash
# A real Spark standalone cluster on this machine for tests and development (not for production): one
# master and one worker from the installed pyspark distribution (SPARK_HOME = the pyspark package of .venv;
# its sbin has no start-master.sh, so the daemons are started with bin/spark-class), on loopback, on free
# ports chosen at each start. The master's REST submission server is on, so `--deploy-mode cluster` works.
#
#   scripts/spark.sh start    # starts master and worker, waits until the worker registered with the master
#                             # (prints the start time and the master URL)
#   scripts/spark.sh stop     # SIGTERM to worker and master (applications still running are killed)
#   scripts/spark.sh status   # exit 0 when both run and the cluster is ready; prints the ready file
#
# The ready file ($SPARK_STANDALONE_HOME/ready.json) holds {"master": "spark://127.0.0.1:<port>", "rest":
# "http://127.0.0.1:<port>", "webui": ..., "cores": C, "memory": M, ...}; clients (tests, the Airflow
# connection spark_default) read the master URL from it.
#
# Environment: SPARK_STANDALONE_HOME (state: logs, pids, ready file, the worker's work and local dirs; default
# var/spark-standalone), SPARK_STANDALONE_TIMEOUT (seconds to wait for ready, default 120),
# SPARK_STANDALONE_CORES (the worker's cores, default 2), SPARK_STANDALONE_MEMORY (the memory the worker offers
# executors, default 2g), SPARK_STANDALONE_JAVA_HOME (default /usr/lib/jvm/java-17-openjdk-amd64; a JAVA_HOME
# of the environment is ignored on purpose, as in scripts/hdfs-minicluster.sh), SPARK_STANDALONE_DAEMON_MEMORY
# (heap of each daemon, default 256m), SPARK_STANDALONE_PYTHON (the Python whose pyspark is used, default
# .venv/bin/python).
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="${SPARK_STANDALONE_HOME:-$REPO_ROOT/var/spark-standalone}"
TIMEOUT="${SPARK_STANDALONE_TIMEOUT:-120}"
CORES="${SPARK_STANDALONE_CORES:-2}"
MEMORY="${SPARK_STANDALONE_MEMORY:-2g}"
JAVA_HOME="${SPARK_STANDALONE_JAVA_HOME:-/usr/lib/jvm/java-17-openjdk-amd64}"
DAEMON_MEMORY="${SPARK_STANDALONE_DAEMON_MEMORY:-256m}"
PYTHON="${SPARK_STANDALONE_PYTHON:-$REPO_ROOT/.venv/bin/python}"
READY="$STATE/ready.json"
CONF="$STATE/spark-daemons.conf"
MASTER_CLASS=org.apache.spark.deploy.master.Master
WORKER_CLASS=org.apache.spark.deploy.worker.Worker

say() { echo "spark: $*" >&2; }

pid_of() {
  # the pid of our daemon $1 (master | worker) if it is alive and really is that Spark class of this state dir
  local role="$1" class pid
  class="$MASTER_CLASS"
  [ "$role" = worker ] && class="$WORKER_CLASS"
  pid="$(cat "$STATE/$role.pid" 2>/dev/null || true)"
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && grep -q "$class" "/proc/$pid/cmdline" 2>/dev/null \
      && grep -qF "$CONF" "/proc/$pid/cmdline" 2>/dev/null; then
    echo "$pid"
  fi
}

check_java() {
  if [ ! -x "$JAVA_HOME/bin/java" ]; then
    say "no Java at $JAVA_HOME (Spark 4 needs Java 17 or newer: apt-get install openjdk-17-jdk-headless)"
    exit 1
  fi
}

find_spark_home() {
  # the pyspark package directory: the wheel ships bin/spark-class and the jars
  if [ ! -x "$PYTHON" ]; then
    say "no Python at $PYTHON (run scripts/setup.sh, or set SPARK_STANDALONE_PYTHON)"
    exit 1
  fi
  SPARK_HOME="$("$PYTHON" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))' 2>/dev/null || true)"
  if [ -z "$SPARK_HOME" ] || [ ! -x "$SPARK_HOME/bin/spark-class" ]; then
    say "pyspark is not installed in $PYTHON's environment (it is in requirements.txt: run scripts/setup.sh)"
    exit 1
  fi
  export SPARK_HOME
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

conf_value() { sed -n "s/^$1 //p" "$CONF"; }

write_conf() {
  # ports for this start; the file is also how pid_of recognises our daemons
  local ports=() p
  while [ "${#ports[@]}" -lt 4 ]; do
    p="$(free_port)"
    [[ " ${ports[*]-} " == *" $p "* ]] || ports+=("$p")
  done
  cat > "$CONF" <<EOF
# written by scripts/spark.sh for the test cluster in $STATE
spark.master.port ${ports[0]}
spark.master.ui.port ${ports[1]}
spark.master.rest.enabled true
spark.master.rest.port ${ports[2]}
spark.worker.ui.port ${ports[3]}
spark.ui.showConsoleProgress false
EOF
}

daemon_env() {
  # the daemons' environment: loopback only, our Java, a small heap, the worker's dirs under $STATE
  export JAVA_HOME SPARK_LOCAL_IP=127.0.0.1 SPARK_DAEMON_MEMORY="$DAEMON_MEMORY" SPARK_LOCAL_DIRS="$STATE/local"
  export SPARK_LOG_DIR="$STATE" SPARK_PID_DIR="$STATE" PYSPARK_PYTHON="$PYTHON"
  unset SPARK_CONF_DIR
}

write_ready() {
  local master_pid="$1" worker_pid="$2" started="$3" seconds
  seconds="$(awk -v a="$started" -v b="$(date +%s%N)" 'BEGIN { printf "%.1f", (b - a) / 1e9 }')"
  printf '{"master": "spark://127.0.0.1:%s", "rest": "http://127.0.0.1:%s", "webui": "http://127.0.0.1:%s", "cores": %s, "memory": "%s", "master_pid": %s, "worker_pid": %s, "start_seconds": %s, "spark_home": "%s", "spark_version": "%s"}\n' \
    "$(conf_value spark.master.port)" "$(conf_value spark.master.rest.port)" "$(conf_value spark.master.ui.port)" \
    "$CORES" "$MEMORY" "$master_pid" "$worker_pid" "$seconds" "$SPARK_HOME" \
    "$("$PYTHON" -c 'import pyspark; print(pyspark.__version__)')" > "$READY.tmp"
  mv "$READY.tmp" "$READY"
}

failed() {
  # true if daemon $1 (pid $2) exited, or nothing is ready at $3 (epoch seconds); then everything is stopped
  local role="$1" pid="$2" deadline="$3"
  if ! kill -0 "$pid" 2>/dev/null; then
    say "the $role exited during start-up; last lines of $STATE/$role.log:"
    tail -n 40 "$STATE/$role.log" >&2
  elif [ "$(date +%s)" -ge "$deadline" ]; then
    say "not ready after ${TIMEOUT}s; stopping it. Last lines of $STATE/$role.log:"
    tail -n 40 "$STATE/$role.log" >&2
  else
    return 1
  fi
  stop >/dev/null 2>&1
  return 0
}

wait_for() {
  # wait until daemon $1 (pid $2) logged $3 (a fixed string), or give up at $4
  until grep -qF "$3" "$STATE/$1.log" 2>/dev/null; do
    failed "$1" "$2" "$4" && return 1
    sleep 0.2
  done
}

start_daemon() {
  # $1: role, then the class and its arguments; setsid: it outlives this script, until `stop`
  local role="$1"
  shift
  setsid "$SPARK_HOME/bin/spark-class" "$@" >"$STATE/$role.log" 2>&1 </dev/null &
  echo "$!" > "$STATE/$role.pid"
}

start() {
  local started master_pid worker_pid deadline p
  started="$(date +%s%N)"
  if [ -n "$(pid_of master)" ] && [ -n "$(pid_of worker)" ] && [ -f "$READY" ]; then
    say "already running: $(cat "$READY")"
    return 0
  fi
  check_java
  find_spark_home
  stop >/dev/null 2>&1  # a half-started or half-dead cluster: start again from nothing
  mkdir -p "$STATE"
  rm -rf "$STATE/work" "$STATE/local" "$READY" "$STATE/started-by-tests"
  mkdir -p "$STATE/work" "$STATE/local"
  write_conf
  for p in $(conf_value spark.master.port) $(conf_value spark.master.rest.port); do
    if port_open "$p"; then say "port $p is taken by another process; try again"; exit 1; fi
  done
  daemon_env
  deadline=$(( $(date +%s) + TIMEOUT ))
  start_daemon master "$MASTER_CLASS" --host 127.0.0.1 --port "$(conf_value spark.master.port)" \
    --webui-port "$(conf_value spark.master.ui.port)" --properties-file "$CONF"
  master_pid="$(cat "$STATE/master.pid")"
  wait_for master "$master_pid" "I have been elected leader" "$deadline" || exit 1
  start_daemon worker "$WORKER_CLASS" "spark://127.0.0.1:$(conf_value spark.master.port)" --host 127.0.0.1 \
    --cores "$CORES" --memory "$MEMORY" --webui-port "$(conf_value spark.worker.ui.port)" \
    --work-dir "$STATE/work" --properties-file "$CONF"
  worker_pid="$(cat "$STATE/worker.pid")"
  wait_for worker "$worker_pid" "Successfully registered with master" "$deadline" || exit 1
  write_ready "$master_pid" "$worker_pid" "$started"
  say "ready in $(awk -v a="$started" -v b="$(date +%s%N)" 'BEGIN { printf "%.1f", (b - a) / 1e9 }') s: $(cat "$READY")"
}

stop_daemon() {
  local role="$1" pid
  pid="$(pid_of "$role")"
  rm -f "$STATE/$role.pid"
  [ -n "$pid" ] || return 0
  kill -TERM "$pid"
  for _ in $(seq 1 150); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  if kill -0 "$pid" 2>/dev/null; then
    say "$role pid $pid did not stop within 30 s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  say "$role stopped (pid $pid)"
}

stop() {
  # the worker first: it kills the executors it launched
  stop_daemon worker
  stop_daemon master
  rm -f "$READY"
}

status() {
  local master worker
  master="$(pid_of master)"
  worker="$(pid_of worker)"
  if [ -n "$master" ] && [ -n "$worker" ] && [ -f "$READY" ]; then
    echo "running (master pid $master, worker pid $worker): $(cat "$READY")"
  elif [ -n "$master" ] || [ -n "$worker" ]; then
    echo "not ready (master pid ${master:-none}, worker pid ${worker:-none}); logs in $STATE"
    return 1
  else
    echo "not running"
    return 3
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
