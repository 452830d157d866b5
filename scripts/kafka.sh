#!/usr/bin/env bash
# A real single-node Apache Kafka on this machine for tests and development (not for production): one
# KRaft process that is both broker and controller, from the Maven Central artifacts in tools/kafka, on
# loopback on free ports chosen at the first start. Replication factor 1; no topic is created by itself.
#
#   scripts/kafka.sh start    # builds it if needed (Maven; jars cached in ~/.m2), formats the storage with a
#                             # generated cluster id on the first start, starts it, waits until it is ready
#                             # (prints the start time and the bootstrap address)
#   scripts/kafka.sh stop     # SIGTERM, clean shutdown (the data stays: the next start continues from it)
#   scripts/kafka.sh status   # exit 0 when running and ready; prints the ready file (bootstrap address)
#   scripts/kafka.sh build    # only build (CI does this before the tests)
#   scripts/kafka.sh wipe     # stop and delete the data: the next start is a new, empty cluster
#
# The ready file ($KAFKA_HOME/ready.json) holds {"bootstrap": "127.0.0.1:<port>", ...}; clients read it.
# A restart after `stop` (or after the broker was killed) keeps the cluster id, the ports and the topics.
#
# Environment: KAFKA_HOME (state: data, log, pid, ready file; default var/kafka), KAFKA_TIMEOUT (seconds to wait
# for ready, default 120), KAFKA_JAVA_HOME (default /usr/lib/jvm/java-17-openjdk-amd64; a JAVA_HOME of the
# environment is ignored on purpose, as in scripts/hdfs-minicluster.sh), KAFKA_HEAP (default 512m).
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOL="$REPO_ROOT/tools/kafka"
STATE="${KAFKA_HOME:-$REPO_ROOT/var/kafka}"
TIMEOUT="${KAFKA_TIMEOUT:-120}"
JAVA_HOME="${KAFKA_JAVA_HOME:-/usr/lib/jvm/java-17-openjdk-amd64}"
HEAP="${KAFKA_HEAP:-512m}"
PIDFILE="$STATE/broker.pid"
READY="$STATE/ready.json"
LOG="$STATE/kafka.log"
CONFIG="$STATE/server.properties"
DATA="$STATE/data"
MAIN_CLASS="kafka.Kafka"

say() { echo "kafka: $*" >&2; }

running_pid() {
  # the pid of our broker if it is alive (and really is our java process), else nothing
  local pid
  pid="$(cat "$PIDFILE" 2>/dev/null || true)"
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && grep -q "$MAIN_CLASS" "/proc/$pid/cmdline" 2>/dev/null \
      && grep -qF "$CONFIG" "/proc/$pid/cmdline" 2>/dev/null; then
    echo "$pid"
  fi
}

check_java() {
  if [ ! -x "$JAVA_HOME/bin/java" ]; then
    say "no Java at $JAVA_HOME (Kafka 4 needs Java 17 or newer: apt-get install openjdk-17-jdk-headless)"
    exit 1
  fi
}

build() {
  check_java
  local stamp="$TOOL/target/.built" sum
  sum="$(cat "$TOOL/pom.xml" | sha256sum | cut -d' ' -f1)"
  if [ "$(cat "$stamp" 2>/dev/null)" = "$sum" ] && [ -s "$TOOL/target/classpath.txt" ]; then
    return 0
  fi
  command -v mvn >/dev/null || { say "Maven (mvn) is needed to build tools/kafka"; exit 1; }
  say "building tools/kafka (the first build downloads about 30 MB of jars into ~/.m2)"
  mkdir -p "$STATE"
  if ! (cd "$TOOL" && JAVA_HOME="$JAVA_HOME" mvn -B package) >"$STATE/build.log" 2>&1; then
    say "the Maven build failed; last lines of $STATE/build.log:"
    tail -n 40 "$STATE/build.log" >&2
    exit 1
  fi
  echo "$sum" > "$stamp"
  say "built"
}

java_args() {
  # java with the broker's class path and logging, up to the main class
  JAVA_ARGS=("$JAVA_HOME/bin/java" "-Xmx$HEAP" -Xms128m -XX:+UseG1GC -Djava.awt.headless=true
    "-Dlog4j2.configurationFile=$TOOL/log4j2.properties" -cp "$(cat "$TOOL/target/classpath.txt")")
}

free_port() {
  # a TCP port on 127.0.0.1 that nothing listens on now (the kernel's choice)
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

config_value() { sed -n "s/^$1=//p" "$CONFIG"; }

new_cluster() {
  # ports, configuration and a formatted storage directory with a fresh cluster id
  local port cport cluster_id
  port="$(free_port)"
  cport="$(free_port)"
  while [ "$cport" = "$port" ]; do cport="$(free_port)"; done
  # a Kafka Uuid: 16 random bytes, URL-safe base64 without padding, never starting with '-'
  cluster_id="-"
  while [ "${cluster_id:0:1}" = "-" ]; do
    cluster_id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')"
  done
  rm -rf "$DATA"
  mkdir -p "$DATA"
  cat > "$CONFIG" <<EOF
# written by scripts/kafka.sh for the test broker in $STATE (cluster id $cluster_id)
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$DATA
num.partitions=3
default.replication.factor=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=2
num.recovery.threads.per.data.dir=1
log.retention.hours=168
EOF
  java_args
  if ! "${JAVA_ARGS[@]}" kafka.tools.StorageTool format -t "$cluster_id" -c "$CONFIG" >"$STATE/format.log" 2>&1; then
    say "formatting the storage failed; $STATE/format.log:"
    cat "$STATE/format.log" >&2
    exit 1
  fi
  echo "$cluster_id" > "$STATE/cluster-id"
  say "new cluster $cluster_id in $DATA"
}

write_ready() {
  local pid="$1" started="$2" port seconds
  port="$(config_value listeners | sed -n 's/^PLAINTEXT:\/\/127.0.0.1:\([0-9]*\),.*/\1/p')"
  seconds="$(awk -v a="$started" -v b="$(date +%s%N)" 'BEGIN { printf "%.1f", (b - a) / 1e9 }')"
  printf '{"bootstrap": "127.0.0.1:%s", "cluster_id": "%s", "pid": %s, "start_seconds": %s, "kafka_version": "%s"}\n' \
    "$port" "$(cat "$STATE/cluster-id")" "$pid" "$seconds" \
    "$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$TOOL/pom.xml")" > "$READY.tmp"
  mv "$READY.tmp" "$READY"
}

wait_ready() {
  # wait until broker $1 logged that it started and its listener accepts connections
  local pid="$1" started="$2" port
  local deadline=$(( $(date +%s) + TIMEOUT ))
  port="$(config_value listeners | sed -n 's/^PLAINTEXT:\/\/127.0.0.1:\([0-9]*\),.*/\1/p')"
  until grep -q "Kafka Server started" "$LOG" 2>/dev/null && port_open "$port"; do
    start_failed "$pid" "$deadline" broker && return 1
    sleep 0.2
  done
  write_ready "$pid" "$started"
  say_ready "$pid" "$started"
}

start() {
  local pid started port cport
  started="$(date +%s%N)"
  join_running "$started" && return 0
  build
  mkdir -p "$STATE"
  rm -f "$READY" "$STATE/started-by-tests"
  if [ ! -f "$DATA/meta.properties" ] || [ ! -f "$CONFIG" ] || [ ! -s "$STATE/cluster-id" ]; then
    new_cluster
  fi
  port="$(config_value listeners | sed -n 's/^PLAINTEXT:\/\/127.0.0.1:\([0-9]*\),.*/\1/p')"
  cport="$(config_value listeners | sed -n 's/.*CONTROLLER:\/\/127.0.0.1:\([0-9]*\)$/\1/p')"
  for p in "$port" "$cport"; do
    if port_open "$p"; then
      say "port $p of the existing cluster in $STATE is taken by another process; stop it, or run" \
          "'$0 wipe' for a new cluster on new ports"
      exit 1
    fi
  done
  : > "$LOG"
  # setsid: the broker outlives this script and the shell that ran it, until `stop`
  java_args
  setsid "${JAVA_ARGS[@]}" "$MAIN_CLASS" "$CONFIG" >"$LOG" 2>&1 </dev/null &
  pid=$!
  echo "$pid" > "$PIDFILE"
  wait_ready "$pid" "$started" || exit 1
}

# stop and status
source "$REPO_ROOT/scripts/daemon.sh"

wipe() {
  stop
  rm -rf "$DATA" "$CONFIG" "$STATE/cluster-id"
  say "wiped $STATE: the next start is a new cluster"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  build) build ;;
  wipe) wipe ;;
  *) echo "usage: $0 start|stop|status|build|wipe" >&2; exit 2 ;;
esac
