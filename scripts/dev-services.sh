#!/usr/bin/env bash
# Development services on 127.0.0.1: a single-node Apache Kafka (KRaft) from Maven Central
# jars and a MinIO S3 server built from the Go module proxy. Installs are cached under
# $HOME/.cache/fusionstream/ (a second `up` starts in seconds); data and logs live under
# $HOME/.cache/fusionstream/run/ and are wiped by `down`.
#
#   scripts/dev-services.sh up      install if needed, start, wait until ready, print the endpoints
#   scripts/dev-services.sh down    stop what `up` started and remove its data
#   scripts/dev-services.sh env     print the endpoints as shell exports (eval "$(... env)")
#   scripts/dev-services.sh status  say what is running
#   scripts/dev-services.sh stop kafka|minio   stop one service, keeping its data (fault tests)
#   scripts/dev-services.sh start kafka|minio  start it again on its data
#   scripts/dev-services.sh kafka-tool CLASS ARGS...  run a Kafka tool (console producer, topics)
#
# Ports (override with the environment): FUSIONSTREAM_KAFKA_PORT (19092), its controller
# port +1, a SASL_PLAINTEXT listener (PLAIN and SCRAM-SHA-256) +2 whose user and password
# are MinIO's, a TLS listener +3 (certificate from a throw-away CA in run/tls/ca.pem),
# FUSIONSTREAM_MINIO_PORT (19000), its console port +1.
set -euo pipefail

CACHE="${FUSIONSTREAM_CACHE:-$HOME/.cache/fusionstream}"
RUN="$CACHE/run"
KAFKA_VERSION=4.1.1
MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c
KAFKA_PORT="${FUSIONSTREAM_KAFKA_PORT:-19092}"
KAFKA_CONTROLLER_PORT=$((KAFKA_PORT + 1))
KAFKA_SASL_PORT=$((KAFKA_PORT + 2))
KAFKA_TLS_PORT=$((KAFKA_PORT + 3))
TLS="$RUN/tls"
MINIO_PORT="${FUSIONSTREAM_MINIO_PORT:-19000}"
MINIO_CONSOLE_PORT=$((MINIO_PORT + 1))
MINIO_USER=fusionstream
MINIO_PASSWORD=fusionstream-dev-secret
KAFKA_HOME="$CACHE/kafka-$KAFKA_VERSION-r2"
MINIO_BIN="$CACHE/minio-$MINIO_VERSION/minio"

log() { echo "dev-services: $*" >&2; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() { # port name seconds
  local i
  for ((i = 0; i < $3 * 10; i++)); do
    if port_open "$1"; then return 0; fi
    sleep 0.1
  done
  log "$2 did not open port $1 within $3 s"
  return 1
}

running() { [[ -f "$RUN/$1.pid" ]] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }

install_kafka() {
  if [[ -f "$KAFKA_HOME/.complete" ]]; then return; fi
  log "installing Apache Kafka $KAFKA_VERSION from Maven Central into $KAFKA_HOME"
  rm -rf "$KAFKA_HOME"
  mkdir -p "$KAFKA_HOME"
  cat > "$KAFKA_HOME/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.fusionstream</groupId>
  <artifactId>kafka-broker</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>$KAFKA_VERSION</version>
    </dependency>
    <dependency>
      <!-- console producer/consumer and topic tool: a real client for the tests -->
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka-tools</artifactId>
      <version>$KAFKA_VERSION</version>
    </dependency>
    <dependency>
      <groupId>org.slf4j</groupId>
      <artifactId>slf4j-simple</artifactId>
      <version>1.7.36</version>
    </dependency>
  </dependencies>
</project>
POM
  (cd "$KAFKA_HOME" && mvn -q -B -Dstyle.color=never dependency:copy-dependencies -DoutputDirectory=lib -DincludeScope=runtime)
  touch "$KAFKA_HOME/.complete"
}

install_minio() {
  if [[ -x "$MINIO_BIN" ]]; then return; fi
  log "building MinIO $MINIO_VERSION from the Go module proxy (several minutes, once)"
  local dir src
  dir="$(dirname "$MINIO_BIN")"
  mkdir -p "$dir"
  src=$(go mod download -json "github.com/minio/minio@$MINIO_VERSION" | sed -n 's/.*"Dir": "\(.*\)",*/\1/p')
  rm -rf "$dir/src"
  cp -r "$src" "$dir/src"
  chmod -R u+w "$dir/src"
  (cd "$dir/src" && CGO_ENABLED=0 go build -trimpath -o "$MINIO_BIN" .)
  rm -rf "$dir/src"
}

# A throw-away CA and a broker certificate for 127.0.0.1 (the TLS listener); clients trust
# $TLS/ca.pem.
make_tls() {
  rm -rf "$TLS"
  mkdir -p "$TLS"
  (
    cd "$TLS"
    openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=fusionstream-dev-ca" \
      -keyout ca.key -out ca.pem 2> /dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -keyout broker.key \
      -out broker.csr 2> /dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' > ext.cnf
    openssl x509 -req -in broker.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 \
      -extfile ext.cnf -out broker.pem 2> /dev/null
    cat broker.key broker.pem > broker-keystore.pem
  )
}

start_kafka() { # [keep]: restart on the existing data
  if running kafka; then return; fi
  local data="$RUN/kafka-data" cfg="$RUN/kafka.properties"
  if [[ "${1:-}" == keep && -f "$data/meta.properties" ]]; then
    local java=(java -Xms256m -Xmx512m -XX:+UseSerialGC -Dorg.slf4j.simpleLogger.defaultLogLevel=warn
      -cp "$KAFKA_HOME/lib/*")
    nohup "${java[@]}" kafka.Kafka "$cfg" >> "$RUN/kafka.log" 2>&1 < /dev/null &
    echo $! > "$RUN/kafka.pid"
    wait_port "$KAFKA_PORT" kafka 90 || { tail -n 30 "$RUN/kafka.log" >&2; return 1; }
    return
  fi
  rm -rf "$data"
  mkdir -p "$data"
  make_tls
  cat > "$cfg" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT,SASL_PLAINTEXT://127.0.0.1:$KAFKA_SASL_PORT,SSL://127.0.0.1:$KAFKA_TLS_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,SASL_PLAINTEXT://127.0.0.1:$KAFKA_SASL_PORT,SSL://127.0.0.1:$KAFKA_TLS_PORT
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,SSL:SSL
listener.name.ssl.ssl.keystore.type=PEM
listener.name.ssl.ssl.keystore.location=$TLS/broker-keystore.pem
sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256
listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="$MINIO_USER" password="$MINIO_PASSWORD" user_$MINIO_USER="$MINIO_PASSWORD";
inter.broker.listener.name=PLAINTEXT
log.dirs=$data
num.partitions=4
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
PROPS
  local java=(java -Xms256m -Xmx512m -XX:+UseSerialGC -Dorg.slf4j.simpleLogger.defaultLogLevel=warn
    -cp "$KAFKA_HOME/lib/*")
  # The SCRAM user of the SASL listener lives in the cluster metadata, written at format time.
  # A static quorum (controller.quorum.voters): formatted without --standalone.
  "${java[@]}" kafka.tools.StorageTool format -t fusionstream-dev-cluster1 -c "$cfg" \
    --add-scram "SCRAM-SHA-256=[name=$MINIO_USER,password=$MINIO_PASSWORD]" \
    > "$RUN/kafka-format.log" 2>&1 || { log "kafka storage format failed:"; cat "$RUN/kafka-format.log" >&2; return 1; }
  nohup "${java[@]}" kafka.Kafka "$cfg" > "$RUN/kafka.log" 2>&1 < /dev/null &
  echo $! > "$RUN/kafka.pid"
  wait_port "$KAFKA_PORT" kafka 90 || { tail -n 30 "$RUN/kafka.log" >&2; return 1; }
}

start_minio() { # [keep]: restart on the existing data
  if running minio; then return; fi
  if [[ "${1:-}" != keep ]]; then rm -rf "$RUN/minio-data"; fi
  mkdir -p "$RUN/minio-data"
  MINIO_ROOT_USER=$MINIO_USER MINIO_ROOT_PASSWORD=$MINIO_PASSWORD MINIO_BROWSER=off \
    nohup "$MINIO_BIN" server "$RUN/minio-data" --address "127.0.0.1:$MINIO_PORT" \
    --console-address "127.0.0.1:$MINIO_CONSOLE_PORT" > "$RUN/minio.log" 2>&1 < /dev/null &
  echo $! > "$RUN/minio.pid"
  local i
  for ((i = 0; i < 600; i++)); do
    if curl -sf "http://127.0.0.1:$MINIO_PORT/minio/health/live" > /dev/null; then return 0; fi
    sleep 0.1
  done
  log "minio not ready after 60 s"
  tail -n 30 "$RUN/minio.log" >&2
  return 1
}

stop() {
  if running "$1"; then
    local pid
    pid=$(cat "$RUN/$1.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$RUN/$1.pid"
}

# Run a Kafka command-line tool from the broker's jars, e.g.
#   scripts/dev-services.sh kafka-tool org.apache.kafka.tools.ConsoleProducer --bootstrap-server ... --topic t
kafka_tool() {
  install_kafka
  exec java -Xmx256m -Dorg.slf4j.simpleLogger.defaultLogLevel=warn -cp "$KAFKA_HOME/lib/*" "$@"
}

print_env() {
  cat <<ENV
export FUSIONSTREAM_TEST_KAFKA=127.0.0.1:$KAFKA_PORT
export FUSIONSTREAM_TEST_KAFKA_SASL=127.0.0.1:$KAFKA_SASL_PORT
export FUSIONSTREAM_TEST_KAFKA_TLS=127.0.0.1:$KAFKA_TLS_PORT
export FUSIONSTREAM_TEST_KAFKA_CA=$TLS/ca.pem
export FUSIONSTREAM_TEST_S3_ENDPOINT=http://127.0.0.1:$MINIO_PORT
export AWS_ACCESS_KEY_ID=$MINIO_USER
export AWS_SECRET_ACCESS_KEY=$MINIO_PASSWORD
export AWS_REGION=us-east-1
ENV
}

case "${1:-}" in
  up)
    mkdir -p "$RUN"
    # Installers print to stderr only: stdout is the exports `eval "$(... up)"` reads (Maven
    # writes colour resets to stdout even with -q).
    install_kafka >&2
    install_minio >&2
    start_kafka
    start_minio
    log "kafka on 127.0.0.1:$KAFKA_PORT, minio on http://127.0.0.1:$MINIO_PORT (logs in $RUN)"
    print_env
    ;;
  down)
    stop minio
    stop kafka
    rm -rf "$RUN/kafka-data" "$RUN/minio-data"
    log "stopped"
    ;;
  env) print_env ;;
  kafka-tool)
    shift
    kafka_tool "$@"
    ;;
  stop | start)
    case "${2:-}" in
      kafka | minio) ;;
      *) echo "usage: $0 $1 kafka|minio" >&2; exit 2 ;;
    esac
    if [[ $1 == stop ]]; then stop "$2"; else "start_$2" keep; fi
    log "$2: $1"
    ;;
  status)
    for s in kafka minio; do
      if running "$s"; then echo "$s: running (pid $(cat "$RUN/$s.pid"))"; else echo "$s: stopped"; fi
    done
    ;;
  *)
    echo "usage: $0 up|down|env|status|stop NAME|start NAME|kafka-tool CLASS ARGS..." >&2
    exit 2
    ;;
esac
