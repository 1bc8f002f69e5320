#!/usr/bin/env bash
# A local single-node Apache Kafka broker (KRaft, broker and controller in one JVM) on 127.0.0.1.
#
#   infra/kafka.sh fetch    resolve the broker's jars with mvn into infra/.cache (once)
#   infra/kafka.sh start    configure, format (once) and start the broker; wait until it answers
#   infra/kafka.sh stop     SIGTERM, then SIGKILL after 20 s
#   infra/kafka.sh kill9    SIGKILL at once (tests that simulate a crash)
#   infra/kafka.sh status   running (exit 0) or stopped (exit 3)
#
# Settings (environment):
#   ELVES_KAFKA      host:port of the PLAINTEXT listener (default 127.0.0.1:19092); the controller
#                    listens on port + 1
#   ELVES_STATE_DIR  state directory, relative to the current directory as in elves.config
#                    (default state); the broker lives in $ELVES_STATE_DIR/kafka
#   PYTHON           interpreter for the readiness probe (default python3); confluent_kafka is
#                    used when it imports, else a stdlib probe, so no venv is needed
#   JAVA             java executable (default $JAVA_HOME/bin/java, else java)
#   KAFKA_REQUEST_LOG  a file: the broker writes there every request it completes (its kind,
#                    client, topics and where its time went), to count what a run asks of it
#                    (bench/broker_requests.py sums it up); it slows the broker, so not for timing
#   KAFKA_PROPS      broker properties added after the ones written here (a later line wins),
#                    one per line: to try a setting without editing this script
set -euo pipefail

INFRA="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
POM="$INFRA/pom.xml"
KAFKA_VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$POM")"
DIST="$INFRA/.cache/kafka-$KAFKA_VERSION"
LIBS="$DIST/libs"
MARKER="$DIST/.complete"

BOOTSTRAP="${ELVES_KAFKA:-127.0.0.1:19092}"
HOST="${BOOTSTRAP%:*}"
PORT="${BOOTSTRAP##*:}"
STATE_DIR="${ELVES_STATE_DIR:-state}"
PYTHON="${PYTHON:-python3}"
if [[ -n "${JAVA:-}" ]]; then
    :
elif [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]]; then
    JAVA="$JAVA_HOME/bin/java"
else
    JAVA=java
fi
START_TIMEOUT=60
STOP_TIMEOUT=20

die() {
    echo "kafka.sh: $*" >&2
    exit 1
}

check_settings() {
    [[ "$BOOTSTRAP" != *,* ]] || die "ELVES_KAFKA must be one host:port, got '$BOOTSTRAP'"
    [[ "$PORT" =~ ^[0-9]+$ && "$HOST" != "$BOOTSTRAP" && -n "$HOST" ]] ||
        die "ELVES_KAFKA must be host:port, got '$BOOTSTRAP'"
    CONTROLLER_PORT=$((PORT + 1))
    [[ "$STATE_DIR" == /* ]] || STATE_DIR="$PWD/$STATE_DIR"
    KDIR="$STATE_DIR/kafka"
    DATA="$KDIR/data"
    PROPS="$KDIR/server.properties"
    LOG4J="$KDIR/log4j2.properties"
    LOG="$KDIR/broker.log"
    PIDFILE="$KDIR/broker.pid"
}

sha256() {
    if command -v sha256sum >/dev/null; then sha256sum "$@"; else shasum -a 256 "$@"; fi
}

fetch() {
    local want
    want="$(sha256 "$POM" | cut -d' ' -f1)"
    if [[ -f "$MARKER" && "$(cat "$MARKER")" == "$want" ]]; then
        return 0
    fi
    command -v mvn >/dev/null || die "mvn is needed to fetch the Kafka jars"
    echo "kafka.sh: fetching Kafka $KAFKA_VERSION jars with mvn into $LIBS" >&2
    local tmp="$DIST/libs.tmp.$$"
    rm -rf "$tmp" "$MARKER"
    mkdir -p "$DIST"
    # A temporary directory renamed at the end: an interrupted fetch never looks complete.
    if ! mvn -q -B -f "$POM" dependency:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$tmp" >"$DIST/fetch.log" 2>&1; then
        cat "$DIST/fetch.log" >&2
        rm -rf "$tmp"
        die "mvn could not resolve the Kafka jars (output above)"
    fi
    rm -rf "$LIBS"
    mv "$tmp" "$LIBS"
    echo "$want" >"$MARKER"
}

# The pid from the pid file, if that process is alive and is this state dir's broker (a pid
# file left by a crash may name a process that reused the pid).
broker_pid() {
    [[ -f "$PIDFILE" ]] || return 1
    local pid args
    pid="$(cat "$PIDFILE")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    args="$(ps -ww -o args= -p "$pid" 2>/dev/null)" || return 1
    [[ "$args" == *kafka.Kafka*"$PROPS"* ]] || return 1
    echo "$pid"
}

# Alive and not a zombie: where PID 1 does not reap orphans, a dead broker lingers as one.
alive() { # pid
    local stat
    stat="$(ps -o stat= -p "$1" 2>/dev/null)" || return 1
    [[ "$stat" != Z* ]]
}

wait_gone() { # pid seconds
    local deadline=$((SECONDS + $2))
    while alive "$1"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.05
    done
}

port_open() { # host port
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

# Ready means the broker answers requests, not only that its port accepts connections.
probe_ready() {
    if ! command -v "$PYTHON" >/dev/null; then
        port_open "$HOST" "$PORT"
        return
    fi
    "$PYTHON" - "$HOST" "$PORT" <<'EOF'
import socket
import struct
import sys

host, port = sys.argv[1], int(sys.argv[2])
try:
    from confluent_kafka.admin import AdminClient
except ImportError:
    AdminClient = None

if AdminClient is not None:
    admin = AdminClient({"bootstrap.servers": f"{host}:{port}", "log_level": 0})
    try:
        metadata = admin.list_topics(timeout=3)
    except Exception:  # any failure means "not ready yet"
        sys.exit(1)
    sys.exit(0 if metadata.brokers else 1)

# ApiVersions v0: the broker only processes requests once it is unfenced and serving.
client_id = b"elves-probe"
body = struct.pack(">hhih", 18, 0, 1, len(client_id)) + client_id
try:
    with socket.create_connection((host, port), timeout=3) as sock:
        sock.sendall(struct.pack(">i", len(body)) + body)
        header = b""
        while len(header) < 10:
            chunk = sock.recv(10 - len(header))
            if not chunk:
                sys.exit(1)
            header += chunk
except OSError:
    sys.exit(1)
_size, correlation_id, error_code = struct.unpack(">iih", header)
sys.exit(0 if correlation_id == 1 and error_code == 0 else 1)
EOF
}

write_config() {
    cat >"$PROPS" <<EOF
# Written by infra/kafka.sh start; edits are overwritten on the next start.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$HOST:$CONTROLLER_PORT
listeners=PLAINTEXT://$HOST:$PORT,CONTROLLER://$HOST:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$HOST:$PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs=$DATA

# Topics are created explicitly by the code, with their own partitions.
auto.create.topics.enable=false
num.partitions=1
default.replication.factor=1
min.insync.replicas=1

# One node: every internal topic has one replica. Few coordinator partitions make the first
# consumer group and the first transaction fast; one node gains nothing from more.
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1

# Tests and local runs join groups often: do not wait for more members.
group.initial.rebalance.delay.ms=0

# After a crash (kill9) the restarted broker can only register once the controller has expired
# the dead incarnation's session (default 9 s); one local node can afford short heartbeats.
broker.heartbeat.interval.ms=500
broker.session.timeout.ms=2000
EOF
    if [[ -n "${KAFKA_PROPS:-}" ]]; then
        printf '\n# KAFKA_PROPS\n%s\n' "$KAFKA_PROPS" >>"$PROPS"
    fi
    # WARN and above to stdout, which start redirects to broker.log; start and stop at INFO.
    cat >"$LOG4J" <<'EOF'
status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.out.ref = out
logger.server.name = kafka.server.KafkaRaftServer
logger.server.level = info
EOF
    if [[ -n "${KAFKA_REQUEST_LOG:-}" ]]; then
        # Absolute: the broker's working directory is not the caller's.
        local requests
        requests="$(realpath -m "$KAFKA_REQUEST_LOG")"
        cat >>"$LOG4J" <<EOF
appender.requests.type = File
appender.requests.name = requests
appender.requests.fileName = $requests
appender.requests.layout.type = PatternLayout
appender.requests.layout.pattern = [%d] %m%n
logger.requests.name = kafka.request.logger
logger.requests.level = debug
logger.requests.additivity = false
logger.requests.appenderRef.requests.ref = requests
EOF
    fi
}

format_storage() {
    [[ -f "$DATA/meta.properties" ]] && return 0
    local cluster_id
    if [[ -f "$KDIR/cluster.id" ]]; then
        cluster_id="$(cat "$KDIR/cluster.id")"
    else
        # A cluster id is a base64url UUID; python saves a JVM start over StorageTool random-uuid.
        # It may start with '-', hence --cluster-id=... below (argparse would take it for a flag).
        cluster_id="$("$PYTHON" -c 'import base64, uuid
print(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))' 2>/dev/null)" ||
            cluster_id="$("$JAVA" -cp "$LIBS/*" -Dlog4j2.configurationFile="$LOG4J" \
                kafka.tools.StorageTool random-uuid)"
        echo "$cluster_id" >"$KDIR/cluster.id"
    fi
    if ! "$JAVA" -cp "$LIBS/*" -Dlog4j2.configurationFile="$LOG4J" kafka.tools.StorageTool \
        format --ignore-formatted --cluster-id="$cluster_id" -c "$PROPS" >"$KDIR/format.log" 2>&1; then
        cat "$KDIR/format.log" >&2
        die "formatting $DATA failed"
    fi
}

wait_ready() { # pid
    local pid="$1" deadline=$((SECONDS + START_TIMEOUT))
    while ((SECONDS < deadline)); do
        if ! alive "$pid"; then
            echo "kafka.sh: the broker exited during start; end of $LOG:" >&2
            tail -n 40 "$LOG" >&2 || true
            rm -f "$PIDFILE"
            return 1
        fi
        if port_open "$HOST" "$PORT" && probe_ready; then
            return 0
        fi
        sleep 0.2
    done
    echo "kafka.sh: the broker did not answer on $BOOTSTRAP within ${START_TIMEOUT}s;" \
        "end of $LOG:" >&2
    tail -n 40 "$LOG" >&2 || true
    stop_broker >&2
    return 1
}

start() {
    fetch
    command -v "$JAVA" >/dev/null || die "java (17 or newer) is needed to run Kafka"
    local pid
    if pid="$(broker_pid)"; then
        if port_open "$HOST" "$PORT"; then
            echo "kafka.sh: already running on $BOOTSTRAP (pid $pid)"
            return 0
        fi
        wait_ready "$pid" || exit 1
        echo "kafka.sh: running on $BOOTSTRAP (pid $pid)"
        return 0
    fi
    rm -f "$PIDFILE"
    local port
    for port in "$PORT" "$CONTROLLER_PORT"; do
        if port_open "$HOST" "$port"; then
            die "$HOST:$port is taken by another process; choose another ELVES_KAFKA"
        fi
    done
    write_config
    format_storage
    echo "=== start $(date '+%Y-%m-%d %H:%M:%S') on $BOOTSTRAP" >>"$LOG"
    local detach=()
    command -v setsid >/dev/null && detach=(setsid)
    # The child writes its own pid before exec, so the pid file names the JVM whether or not
    # setsid had to fork. setsid keeps a Ctrl-C in the caller's terminal from reaching it.
    # C1 only (TieredStopAtLevel=1): on a 2-core machine the C2 compiler threads of a fresh
    # broker took most of a core for minutes and slowed every client; C1 code is fast enough
    # for one local broker. AlwaysPreTouch: the heap's pages are faulted in at start, not by
    # the first requests that reach fresh memory. KAFKA_JVM_OPTS adds or overrides flags.
    # shellcheck disable=SC2086
    ${detach[@]+"${detach[@]}"} nohup bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$PIDFILE" \
        "$JAVA" -Xms256m -Xmx512m -XX:+UseG1GC -XX:+AlwaysPreTouch -XX:+ExitOnOutOfMemoryError \
        -XX:TieredStopAtLevel=1 ${KAFKA_JVM_OPTS:-} \
        -Djava.awt.headless=true -Dlog4j2.configurationFile="$LOG4J" \
        -Dlog4j2.shutdownHookEnabled=false \
        -cp "$LIBS/*" kafka.Kafka "$PROPS" >>"$LOG" 2>&1 </dev/null 9>&- &
    local started=$SECONDS
    while [[ ! -s "$PIDFILE" ]]; do
        ((SECONDS - started < 10)) || die "the broker process did not start; see $LOG"
        sleep 0.05
    done
    pid="$(cat "$PIDFILE")"
    wait_ready "$pid" || exit 1
    echo "kafka.sh: started on $BOOTSTRAP (pid $pid, ready in $((SECONDS - started))s)," \
        "data in $DATA"
}

stop_broker() {
    local pid
    if ! pid="$(broker_pid)"; then
        rm -f "$PIDFILE"
        echo "kafka.sh: not running"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_gone "$pid" "$STOP_TIMEOUT"; then
        echo "kafka.sh: no exit ${STOP_TIMEOUT}s after SIGTERM, sending SIGKILL" >&2
        kill -KILL "$pid" 2>/dev/null || true
        wait_gone "$pid" 10 || die "pid $pid survived SIGKILL"
    fi
    rm -f "$PIDFILE"
    echo "kafka.sh: stopped (pid $pid)"
}

kill9() {
    local pid
    if ! pid="$(broker_pid)"; then
        rm -f "$PIDFILE"
        echo "kafka.sh: not running"
        return 0
    fi
    kill -KILL "$pid" 2>/dev/null || true
    wait_gone "$pid" 10 || die "pid $pid survived SIGKILL"
    rm -f "$PIDFILE"
    echo "kafka.sh: killed (pid $pid)"
}

status() {
    local pid
    if pid="$(broker_pid)"; then
        local answering=no
        port_open "$HOST" "$PORT" && answering=yes
        echo "running (pid $pid), bootstrap $BOOTSTRAP (answering: $answering), data in $DATA"
        return 0
    fi
    echo "stopped, bootstrap $BOOTSTRAP, data in $DATA"
    return 3
}

# One start or stop at a time per state dir (parallel test sessions share one broker).
lock() {
    if command -v flock >/dev/null; then
        exec 9>"$KDIR/.lock"
        flock 9
    fi
}

case "${1:-}" in
fetch) fetch ;;
start | stop | kill9 | status)
    check_settings
    if [[ "$1" == start ]]; then
        mkdir -p "$KDIR"
    elif [[ ! -d "$KDIR" ]]; then
        [[ "$1" == status ]] || { echo "kafka.sh: not running"; exit 0; }
    fi
    [[ "$1" == status || ! -d "$KDIR" ]] || lock
    case "$1" in
    start) start ;;
    stop) stop_broker ;;
    kill9) kill9 ;;
    status) status ;;
    esac
    ;;
*)
    echo "usage: $0 fetch|start|stop|kill9|status" >&2
    exit 2
    ;;
esac
