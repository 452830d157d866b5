#!/usr/bin/env bash
# A real single-node HDFS on this machine for tests and development (not for production):
# Hadoop's MiniDFSCluster (NameNode + one DataNode) from the Maven Central artifacts in
# tools/hdfs-minicluster, on loopback: NameNode RPC hdfs://127.0.0.1:8020, WebHDFS http://127.0.0.1:9870.
# Permissions are off, replication is 1, and the file system is formatted fresh on every start.
#
#   scripts/hdfs-minicluster.sh start    # builds it if needed (Maven; jars cached in ~/.m2), starts it,
#                                        # waits until it is ready (prints the start time)
#   scripts/hdfs-minicluster.sh stop     # SIGTERM, clean shutdown
#   scripts/hdfs-minicluster.sh status   # exit 0 when running and ready
#   scripts/hdfs-minicluster.sh build    # only build (CI does this before the tests)
#   scripts/hdfs-minicluster.sh start kerberos   # (also stop/status kerberos) a second, Kerberized cluster:
#       an in-process KDC (Hadoop's MiniKdc), Kerberos RPC, SPNEGO on WebHDFS http://localhost:9871, NameNode
#       RPC 127.0.0.1:8021, block access tokens, SASL data transfer; state in var/hdfs-minicluster-kerberos,
#       client krb5.conf and keytab under its kerberos/ (their paths, the realm and principal in ready.json)
#
# Environment: HDFS_MINICLUSTER_HOME (state: data, log, pid, ready file; default var/hdfs-minicluster),
# HDFS_MINICLUSTER_TIMEOUT (seconds to wait for ready, default 180), HDFS_MINICLUSTER_JAVA_HOME (default
# /usr/lib/jvm/java-17-openjdk-amd64; a JAVA_HOME of the environment is ignored on purpose: Hadoop 3.4
# breaks on Java 23+, and other tools here may point JAVA_HOME at a newer JDK).
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOL="$REPO_ROOT/tools/hdfs-minicluster"
MODE="${2:-simple}"
case "$MODE" in
  simple) STATE="${HDFS_MINICLUSTER_HOME:-$REPO_ROOT/var/hdfs-minicluster}"; RPC_PORT=8020; HTTP_PORT=9870; EXTRA_ARGS=() ;;
  kerberos)
    STATE="${HDFS_MINICLUSTER_KERBEROS_HOME:-$REPO_ROOT/var/hdfs-minicluster-kerberos}"; RPC_PORT=8021; HTTP_PORT=9871
    EXTRA_ARGS=(--kerberos "$STATE/kerberos") ;;
  *) echo "usage: $0 start|stop|status|build [simple|kerberos]" >&2; exit 2 ;;
esac
TIMEOUT="${HDFS_MINICLUSTER_TIMEOUT:-180}"
JAVA_HOME="${HDFS_MINICLUSTER_JAVA_HOME:-/usr/lib/jvm/java-17-openjdk-amd64}"
PIDFILE="$STATE/cluster.pid"
READY="$STATE/ready.json"
LOG="$STATE/cluster.log"

# The JDK internals Hadoop reaches into (the list Hadoop's own build passes to its tests on Java 17).
JAVA_OPTS=(
  -Xmx768m -XX:+IgnoreUnrecognizedVMOptions
  --add-opens=java.base/java.io=ALL-UNNAMED
  --add-opens=java.base/java.lang=ALL-UNNAMED
  --add-opens=java.base/java.lang.reflect=ALL-UNNAMED
  --add-opens=java.base/java.math=ALL-UNNAMED
  --add-opens=java.base/java.net=ALL-UNNAMED
  --add-opens=java.base/java.text=ALL-UNNAMED
  --add-opens=java.base/java.util=ALL-UNNAMED
  --add-opens=java.base/java.util.concurrent=ALL-UNNAMED
  --add-opens=java.base/java.util.concurrent.atomic=ALL-UNNAMED
  --add-opens=java.base/java.util.zip=ALL-UNNAMED
  --add-opens=java.base/sun.nio.ch=ALL-UNNAMED
  --add-opens=java.base/sun.nio.cs=ALL-UNNAMED
  --add-opens=java.base/sun.security.util=ALL-UNNAMED
  --add-opens=java.base/sun.security.x509=ALL-UNNAMED
  --add-exports=java.base/sun.net.dns=ALL-UNNAMED
  --add-exports=java.base/sun.net.util=ALL-UNNAMED
  --add-exports=java.security.jgss/sun.security.krb5=ALL-UNNAMED
  --add-opens=java.security.jgss/sun.security.krb5=ALL-UNNAMED
)

say() { echo "hdfs-minicluster: $*" >&2; }

running_pid() {
  # the pid of our cluster if it is alive (and really is our java process), else nothing
  local pid
  pid="$(cat "$PIDFILE" 2>/dev/null || true)"
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && grep -q "recsys.hdfs.MiniHdfs" "/proc/$pid/cmdline" 2>/dev/null; then
    echo "$pid"
  fi
}

check_java() {
  if [ ! -x "$JAVA_HOME/bin/java" ]; then
    say "no Java at $JAVA_HOME (Hadoop needs OpenJDK 17 here: apt-get install openjdk-17-jdk-headless)"
    exit 1
  fi
}

check_hostname() {
  # Hadoop resolves the machine's own name at start-up; without it the NameNode fails with UnknownHost
  local name
  name="$(hostname)"
  if ! getent hosts "$name" >/dev/null; then
    say "this machine's host name '$name' does not resolve: add '127.0.0.1 $name' to /etc/hosts"
    exit 1
  fi
}

build() {
  check_java
  local stamp="$TOOL/target/.built" sum
  sum="$(cat "$TOOL/pom.xml" "$TOOL"/src/main/java/recsys/hdfs/*.java "$TOOL"/src/main/resources/* | sha256sum | cut -d' ' -f1)"
  if [ "$(cat "$stamp" 2>/dev/null)" = "$sum" ] && [ -s "$TOOL/target/classpath.txt" ]; then
    return 0
  fi
  command -v mvn >/dev/null || { say "Maven (mvn) is needed to build tools/hdfs-minicluster"; exit 1; }
  say "building tools/hdfs-minicluster (the first build downloads about 90 MB of jars into ~/.m2)"
  mkdir -p "$STATE"
  if ! (cd "$TOOL" && JAVA_HOME="$JAVA_HOME" mvn -B -DskipTests package) >"$STATE/build.log" 2>&1; then
    say "the Maven build failed; last lines of $STATE/build.log:"
    tail -n 40 "$STATE/build.log" >&2
    exit 1
  fi
  echo "$sum" > "$stamp"
  say "built"
}

wait_ready() {
  # wait until cluster $1 wrote the ready file; on exit or time-out show the log (and stop a stuck one)
  local pid="$1" started="$2"
  local deadline=$(( $(date +%s) + TIMEOUT ))
  until [ -f "$READY" ]; do
    start_failed "$pid" "$deadline" cluster && return 1
    sleep 0.2
  done
  say_ready "$pid" "$started"
}

start() {
  local pid started
  started="$(date +%s%N)"
  join_running "$started" && return 0
  build
  check_hostname
  for port in $RPC_PORT $HTTP_PORT; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      say "port $port is taken by another process (another HDFS?); stop it first"
      exit 1
    fi
  done
  mkdir -p "$STATE"
  # a fresh cluster: formatted anew; started-by-tests is set again by the pytest fixture if it started it
  rm -rf "$STATE/data" "$STATE/kerberos" "$READY" "$STATE/started-by-tests"
  started="$(date +%s%N)"
  # setsid: the cluster outlives this script and the shell that ran it, until `stop`
  setsid "$JAVA_HOME/bin/java" "${JAVA_OPTS[@]}" \
    -cp "$TOOL/target/classes:$(cat "$TOOL/target/classpath.txt")" recsys.hdfs.MiniHdfs \
    --base-dir "$STATE/data" --ready-file "$READY" --rpc-port "$RPC_PORT" --http-port "$HTTP_PORT" \
    ${EXTRA_ARGS[@]+"${EXTRA_ARGS[@]}"} >"$LOG" 2>&1 </dev/null &
  pid=$!
  echo "$pid" > "$PIDFILE"
  wait_ready "$pid" "$started" || exit 1
}

# stop and status
source "$REPO_ROOT/scripts/daemon.sh"

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  build) build ;;
  *) echo "usage: $0 start|stop|status|build [simple|kerberos]" >&2; exit 2 ;;
esac
