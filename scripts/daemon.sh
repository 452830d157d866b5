# Sourced by scripts/kafka.sh and scripts/hdfs-minicluster.sh: stop and status of the one Java daemon a
# script runs. The script defines say, running_pid (the daemon's pid if it is alive and ours) and the files
# PIDFILE, READY (written once the daemon is ready) and LOG.

stop() {
  local pid
  pid="$(running_pid)"
  if [ -z "$pid" ]; then
    say "not running"
    rm -f "$PIDFILE" "$READY"
    return 0
  fi
  kill -TERM "$pid"
  for _ in $(seq 1 150); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  if kill -0 "$pid" 2>/dev/null; then
    say "pid $pid did not stop within 30 s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$PIDFILE" "$READY"
  say "stopped (pid $pid)"
}

status() {
  local pid
  pid="$(running_pid)"
  if [ -n "$pid" ] && [ -f "$READY" ]; then
    echo "running (pid $pid): $(cat "$READY")"
  elif [ -n "$pid" ]; then
    echo "starting (pid $pid), not ready yet; log: $LOG"
    return 1
  else
    echo "not running"
    return 3
  fi
}
