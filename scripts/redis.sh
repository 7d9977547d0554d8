#!/usr/bin/env bash
# Local Redis for development and tests.
#
#   scripts/redis.sh install            redis-server from Debian (apt) when it is missing
#   scripts/redis.sh start [--port N]   a loopback Redis without persistence, data in
#                                       $TANDEM_HOME/infra/redis (default port 6379;
#                                       TANDEM_HOME as `tandem` resolves it: scripts/_home.sh)
#   scripts/redis.sh stop               shut it down
#   scripts/redis.sh status
#
# Tests do not use `start`: their fixtures (tandem_testing.infra.RedisServer) run private
# servers on free ports.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$ROOT/scripts/_home.sh"
DATA="$(tandem_home)/infra/redis"
PIDFILE="$DATA/redis.pid"

die() { echo "redis: $*" >&2; exit 1; }

cmd_install() {
  if command -v redis-server >/dev/null; then
    echo "redis: $(redis-server --version | awk '{print $1, $2, $3}') already installed"
    return
  fi
  command -v apt-get >/dev/null || die "redis-server is missing and this is not a Debian/Ubuntu system: install Redis >= 6 yourself"
  local sudo=()
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || die "redis-server is missing; install it as root: apt-get install -y redis-server"
    sudo=(sudo -n)
  fi
  local log; log=$(mktemp)
  # Debian's package would start a system-wide redis on 6379; policy-rc.d exit 101 tells
  # invoke-rc.d not to (only when root; a sudo install keeps the distribution's behaviour).
  local policy=/usr/sbin/policy-rc.d created_policy=""
  if [[ $(id -u) -eq 0 && ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && created_policy=1
  fi
  if ! { "${sudo[@]}" apt-get update -qq && DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends redis-server; } >"$log" 2>&1; then
    [[ -n $created_policy ]] && rm -f "$policy"
    tail -n 20 "$log" >&2
    die "apt-get install redis-server failed (log above)"
  fi
  [[ -n $created_policy ]] && rm -f "$policy"
  rm -f "$log"
  echo "redis: installed $(redis-server --version | awk '{print $1, $2, $3}') from Debian"
}

running_pid() {
  [[ -f "$PIDFILE" ]] || return 1
  local pid; pid=$(<"$PIDFILE")
  kill -0 "$pid" 2>/dev/null && echo "$pid"
}

cmd_start() {
  local port=6379
  while [[ $# -gt 0 ]]; do
    case $1 in
      --port) port=$2; shift 2 ;;
      *) die "unknown option '$1' (start takes --port N)" ;;
    esac
  done
  command -v redis-server >/dev/null || die "redis-server not installed; run 'scripts/redis.sh install'"
  local pid
  if pid=$(running_pid); then echo "redis: already running (pid $pid, $(<"$DATA/url"))"; return; fi
  mkdir -p "$DATA"
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$DATA" \
    --daemonize yes --pidfile "$PIDFILE" --logfile "$DATA/redis.log"
  echo "redis://127.0.0.1:$port/0" >"$DATA/url"
  for _ in $(seq 1 100); do
    if [[ "$(redis-cli -p "$port" ping 2>/dev/null)" == PONG ]]; then
      echo "redis: ready at redis://127.0.0.1:$port/0 (pid $(<"$PIDFILE"))"
      return
    fi
    sleep 0.1
  done
  tail -n 20 "$DATA/redis.log" >&2
  die "redis-server did not answer PING within 10 s (log above)"
}

cmd_stop() {
  local pid
  if ! pid=$(running_pid); then echo "redis: not running"; return; fi
  kill -TERM "$pid"
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
  rm -f "$PIDFILE"
  echo "redis: stopped (pid $pid)"
}

cmd_status() {
  local pid
  if pid=$(running_pid); then echo "redis: running (pid $pid, $(<"$DATA/url"))"; else echo "redis: not running"; fi
}

case ${1:-} in
  install) cmd_install ;;
  start) shift; cmd_start "$@" ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  *) echo "usage: scripts/redis.sh install|start [--port N]|stop|status" >&2; exit 2 ;;
esac
