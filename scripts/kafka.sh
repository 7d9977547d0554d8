#!/usr/bin/env bash
# Local Apache Kafka (single node, KRaft mode) for development and tests.
#
#   scripts/kafka.sh fetch                 download the broker + dependencies (Maven Central)
#   scripts/kafka.sh start [--port N] [--controller-port M]
#                                          format storage if new, start, wait for a metadata answer
#   scripts/kafka.sh stop                  SIGTERM, then SIGKILL after 30 s
#   scripts/kafka.sh status                running or not, and where
#   scripts/kafka.sh clean                 stop and remove the broker's data
#
# The broker is plain jars run with `java -cp 'libs/*'`: no tarball, no ZooKeeper, nothing
# outside the project folder. Jars live in $TANDEM_HOME/infra/kafka/libs (TANDEM_HOME as the
# `tandem` command resolves it, see scripts/_home.sh; jars fetched at the repository root are
# found from any directory), keyed by version through a stamp file, so `fetch`
# is a no-op when the requested version is already there. Tests do not use `start`: their
# fixtures (tandem_testing.infra.KafkaBroker) run private brokers on free ports.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
KAFKA_VERSION=${KAFKA_VERSION:-4.3.1}
# Kafka's own distribution logs through log4j2 (slf4j 1.x binding); the Maven artifacts leave
# the logging backend out.
LOG4J_VERSION=${LOG4J_VERSION:-2.24.3}

source "$ROOT/scripts/_home.sh"
KAFKA_DIR="$(tandem_home)/infra/kafka"
LIBS="$(tandem_home_holding infra/kafka/libs/.tandem-kafka-version)/infra/kafka/libs"
STAMP="$LIBS/.tandem-kafka-version"
DATA="$KAFKA_DIR/data"
PIDFILE="$DATA/broker.pid"
# Anything that changes the jar set goes into the stamp, so a changed pom re-fetches.
WANT="kafka_2.13 $KAFKA_VERSION log4j-core+log4j-slf4j-impl $LOG4J_VERSION"

die() { echo "kafka: $*" >&2; exit 1; }

# The broker helpers (cluster id, readiness) live in the test-support package, which the
# wheel does not ship: put it on the path for the calls below.
export PYTHONPATH="$ROOT/testsupport${PYTHONPATH:+:$PYTHONPATH}"
python_bin() {
  if [[ -x "$ROOT/.venv/bin/python" ]]; then echo "$ROOT/.venv/bin/python"; else echo python3; fi
}

# A java able to run the broker (Kafka 4 needs >= 17): JAVA_HOME, then the JDK >= 21
# scripts/jdk.sh selects, then whatever `java` is on PATH.
java_bin() {
  if [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]]; then echo "$JAVA_HOME/bin/java"; return; fi
  local jh
  if jh=$(bash "$ROOT/scripts/jdk.sh" --no-install 2>/dev/null) && [[ -x "$jh/bin/java" ]]; then
    echo "$jh/bin/java"; return
  fi
  command -v java || die "no java found; run 'make setup' (scripts/jdk.sh)"
}

# Same format as `kafka-storage random-uuid`, without paying a JVM start for it.
cluster_id() {
  "$(python_bin)" -c 'from tandem_testing.infra import new_cluster_id; print(new_cluster_id())'
}

running_pid() {
  [[ -f "$PIDFILE" ]] || return 1
  local pid; pid=$(<"$PIDFILE")
  kill -0 "$pid" 2>/dev/null && echo "$pid"
}

cmd_fetch() {
  if [[ -f "$STAMP" && "$(<"$STAMP")" == "$WANT" ]]; then
    echo "kafka: Apache Kafka $KAFKA_VERSION already fetched ($LIBS)"
    return
  fi
  command -v mvn >/dev/null || die "Maven (mvn) is needed to fetch the broker: apt-get install -y maven"
  local start
  start=$(date +%s)
  mkdir -p "$(dirname "$LIBS")"
  FETCH_TMP=$(mktemp -d "$(dirname "$LIBS")/.fetch.XXXXXX")
  trap 'rm -rf "$FETCH_TMP"' EXIT
  local tmp=$FETCH_TMP
  cat >"$tmp/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.tandem</groupId>
  <artifactId>local-kafka</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>$LOG4J_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>$LOG4J_VERSION</version></dependency>
  </dependencies>
</project>
EOF
  if ! mvn -B -q -f "$tmp/pom.xml" dependency:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$tmp/libs" >"$tmp/mvn.log" 2>&1; then
    tail -n 30 "$tmp/mvn.log" >&2
    die "Maven could not fetch org.apache.kafka:kafka_2.13:$KAFKA_VERSION (log above)"
  fi
  ls "$tmp/libs"/kafka_2.13-"$KAFKA_VERSION".jar >/dev/null 2>&1 || die "kafka_2.13-$KAFKA_VERSION.jar missing after fetch"
  echo "$WANT" >"$tmp/libs/.tandem-kafka-version"
  # Swap in whole so an interrupted fetch never leaves a half-filled libs folder behind a stamp.
  rm -rf "$LIBS"
  mv "$tmp/libs" "$LIBS"
  echo "kafka: fetched Apache Kafka $KAFKA_VERSION ($(ls "$LIBS"/*.jar | wc -l) jars) into $LIBS in $(( $(date +%s) - start )) s"
}

write_config() {
  local port=$1 cport=$2
  mkdir -p "$DATA/logs"
  cat >"$DATA/server.properties" <<EOF
# Written by scripts/kafka.sh start: one process is both KRaft controller and broker.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$DATA/logs
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
EOF
  cat >"$DATA/log4j2.properties" <<EOF
rootLogger.level=INFO
rootLogger.appenderRef.out.ref=out
appender.out.type=Console
appender.out.name=out
appender.out.layout.type=PatternLayout
appender.out.layout.pattern=[%d] %p %m (%c)%n
EOF
}

cmd_start() {
  local port=9092 cport=""
  while [[ $# -gt 0 ]]; do
    case $1 in
      --port) port=$2; shift 2 ;;
      --controller-port) cport=$2; shift 2 ;;
      *) die "unknown option '$1' (start takes --port N --controller-port M)" ;;
    esac
  done
  cport=${cport:-$((port + 1))}
  [[ -f "$STAMP" ]] || die "broker not fetched; run 'make setup' or 'scripts/kafka.sh fetch'"
  local pid
  if pid=$(running_pid); then
    echo "kafka: already running (pid $pid, $(<"$DATA/bootstrap"))"
    return
  fi
  local java; java=$(java_bin)
  write_config "$port" "$cport"
  local cp="$LIBS/*" jopts=(-Xms128m -Xmx512m -XX:+UseSerialGC
    "-Dlog4j2.configurationFile=$DATA/log4j2.properties")
  if [[ ! -f "$DATA/logs/meta.properties" ]]; then
    "$java" "${jopts[@]}" -cp "$cp" kafka.tools.StorageTool format \
      --config "$DATA/server.properties" --cluster-id "$(cluster_id)" \
      >"$DATA/format.log" 2>&1 || { cat "$DATA/format.log" >&2; die "formatting storage failed"; }
  fi
  nohup "$java" "${jopts[@]}" -cp "$cp" kafka.Kafka "$DATA/server.properties" >"$DATA/broker.log" 2>&1 &
  echo $! >"$PIDFILE"
  echo "127.0.0.1:$port" >"$DATA/bootstrap"
  if ! "$(python_bin)" -m tandem_testing.infra kafka-ready "127.0.0.1:$port" --pid "$!" --timeout 90; then
    tail -n 30 "$DATA/broker.log" >&2
    cmd_stop >/dev/null
    die "broker did not answer a metadata request (log above: $DATA/broker.log)"
  fi
  echo "kafka: broker $KAFKA_VERSION ready at 127.0.0.1:$port (pid $(<"$PIDFILE"), data $DATA)"
}

cmd_stop() {
  local pid
  if ! pid=$(running_pid); then
    rm -f "$PIDFILE"
    echo "kafka: not running"
    return
  fi
  kill -TERM "$pid"
  for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid"; echo "kafka: broker ignored SIGTERM for 30 s; killed" >&2; fi
  rm -f "$PIDFILE"
  echo "kafka: stopped (pid $pid)"
}

cmd_status() {
  local pid
  if pid=$(running_pid); then echo "kafka: running (pid $pid, $(<"$DATA/bootstrap"), data $DATA)"
  else echo "kafka: not running"; fi
}

cmd_clean() {
  cmd_stop >/dev/null
  rm -rf "$DATA"
  echo "kafka: stopped and removed $DATA"
}

case ${1:-} in
  fetch) shift; cmd_fetch "$@" ;;
  start) shift; cmd_start "$@" ;;
  stop) shift; cmd_stop ;;
  status) shift; cmd_status ;;
  clean) shift; cmd_clean ;;
  *) echo "usage: scripts/kafka.sh fetch|start [--port N] [--controller-port M]|stop|status|clean" >&2; exit 2 ;;
esac
