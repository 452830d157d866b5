# Sourced by scripts/kafka.sh and scripts/hdfs-minicluster.sh: stop and status of the one Java daemon a
# script runs, joining or reporting its start, and the give-up test of that start. The script defines say,
# running_pid (the daemon's pid if it is alive and ours), wait_ready PID STARTED, TIMEOUT and the files
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

start_failed() {
  # true if daemon $1 ($3: what it is, for the message) exited during start-up or is not ready at $2
  # (epoch seconds; then it is stopped), with the log's tail; false while it may still get ready
  local pid="$1" deadline="$2" what="$3"
  if ! kill -0 "$pid" 2>/dev/null; then
    say "the $what exited during start-up; last lines of $LOG:"
    tail -n 40 "$LOG" >&2
    rm -f "$PIDFILE"
    return 0
  fi
  if [ "$(date +%s)" -ge "$deadline" ]; then
    say "not ready after ${TIMEOUT}s; stopping it. Last lines of $LOG:"
    tail -n 40 "$LOG" >&2
    stop
    return 0
  fi
  return 1
}

say_ready() {
  # $1: the daemon's pid, $2: when the start began (date +%s%N)
  say "ready in $(awk -v a="$2" -v b="$(date +%s%N)" 'BEGIN { printf "%.1f", (b - a) / 1e9 }') s (pid $1): $(cat "$READY")"
}

join_running() {
  # true if the daemon is already running (ready, or being started by someone else: then wait for it;
  # the script's wait_ready PID STARTED does that); false if the caller must start it. $1: as in say_ready
  local pid
  pid="$(running_pid)"
  if [ -n "$pid" ] && [ -f "$READY" ]; then
    say "already running (pid $pid): $(cat "$READY")"
    return 0
  fi
  if [ -n "$pid" ]; then
    say "pid $pid is starting (started by someone else); waiting for it"
    wait_ready "$pid" "$1" || exit 1
    return 0
  fi
  return 1
}
