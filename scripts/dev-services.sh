#!/usr/bin/env bash
# Development services on 127.0.0.1: a single-node Apache Kafka (KRaft) from Maven Central
# jars, a MinIO S3 server built from the Go module proxy, and Apache Iceberg's REST catalog
# (its reference server, from Maven Central jars) with its warehouse on that MinIO. Installs are cached under
# $HOME/.cache/fusionstream/ (a second `up` starts in seconds); data and logs live under
# $HOME/.cache/fusionstream/run/ and are wiped by `down`.
#
#   scripts/dev-services.sh up      install if needed, start, wait until ready, print the endpoints
#   scripts/dev-services.sh down    stop what `up` started and remove its data
#   scripts/dev-services.sh env     print the endpoints as shell exports (eval "$(... env)")
#   scripts/dev-services.sh status  say what is running
#   scripts/dev-services.sh stop kafka|minio|iceberg   stop one service, keeping its data
#   scripts/dev-services.sh start kafka|minio|iceberg  start it again on its data
#   scripts/dev-services.sh kafka-tool CLASS ARGS...  run a Kafka tool (console producer, topics)
#
# Ports (override with the environment): FUSIONSTREAM_KAFKA_PORT (19092), its controller
# port +1, a SASL_PLAINTEXT listener (PLAIN and SCRAM-SHA-256) +2 whose user and password
# are MinIO's, a TLS listener +3 (certificate from a throw-away CA in run/tls/ca.pem),
# FUSIONSTREAM_MINIO_PORT (19000), its console port +1, FUSIONSTREAM_ICEBERG_PORT (19120; the
# reference server listens on every interface, as it cannot be told otherwise) with its
# warehouse in the bucket "lake" (catalog state in run/iceberg-catalog.db, SQLite).
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
ICEBERG_VERSION=1.10.0
ICEBERG_PORT="${FUSIONSTREAM_ICEBERG_PORT:-19120}"
ICEBERG_HOME="$CACHE/iceberg-rest-$ICEBERG_VERSION"
WAREHOUSE_BUCKET=lake
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

install_iceberg() {
  if [[ -f "$ICEBERG_HOME/.complete" ]]; then return; fi
  log "installing Apache Iceberg's REST catalog $ICEBERG_VERSION from Maven Central into $ICEBERG_HOME"
  rm -rf "$ICEBERG_HOME"
  mkdir -p "$ICEBERG_HOME"
  # The reference server (RESTCatalogServer, in iceberg-open-api's test fixtures) with a JDBC
  # catalog on SQLite and S3FileIO for the warehouse.
  local dep
  dep() { # group artifact version [classifier]
    printf '<dependency><groupId>%s</groupId><artifactId>%s</artifactId><version>%s</version>%s</dependency>\n' \
      "$1" "$2" "$3" "${4:+<classifier>$4</classifier>}"
  }
  {
    echo '<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>'
    echo '<groupId>dev.fusionstream</groupId><artifactId>iceberg-rest</artifactId><version>1</version>'
    echo '<packaging>pom</packaging><dependencies>'
    dep org.apache.iceberg iceberg-open-api "$ICEBERG_VERSION" test-fixtures
    dep org.apache.iceberg iceberg-core "$ICEBERG_VERSION"
    dep org.apache.iceberg iceberg-core "$ICEBERG_VERSION" tests
    dep org.apache.iceberg iceberg-aws "$ICEBERG_VERSION"
    dep software.amazon.awssdk s3 2.33.0
    dep software.amazon.awssdk sts 2.33.0
    dep software.amazon.awssdk kms 2.33.0
    dep org.eclipse.jetty jetty-servlet 11.0.24
    dep org.xerial sqlite-jdbc 3.50.3.0
    dep org.apache.hadoop hadoop-client-api 3.4.1
    dep org.apache.hadoop hadoop-client-runtime 3.4.1
    dep org.slf4j slf4j-simple 2.0.16
    echo '</dependencies></project>'
  } > "$ICEBERG_HOME/pom.xml"
  (cd "$ICEBERG_HOME" && mvn -q -B -Dstyle.color=never dependency:copy-dependencies -DoutputDirectory=lib -DincludeScope=runtime)
  touch "$ICEBERG_HOME/.complete"
}

# The warehouse bucket on MinIO (signed with curl's SigV4; idempotent).
make_warehouse_bucket() {
  curl -s -o /dev/null --aws-sigv4 "aws:amz:us-east-1:s3" --user "$MINIO_USER:$MINIO_PASSWORD" \
    -X PUT "http://127.0.0.1:$MINIO_PORT/$WAREHOUSE_BUCKET"
}

start_iceberg() { # [keep]: restart on the existing catalog
  if running iceberg; then return; fi
  if [[ "${1:-}" != keep ]]; then rm -f "$RUN/iceberg-catalog.db"; fi
  make_warehouse_bucket
  CATALOG_WAREHOUSE="s3://$WAREHOUSE_BUCKET/warehouse" \
    CATALOG_URI="jdbc:sqlite:$RUN/iceberg-catalog.db" CATALOG_JDBC_USER=fusionstream \
    CATALOG_JDBC_PASSWORD=fusionstream CATALOG_REST_PORT="$ICEBERG_PORT" \
    CATALOG_IO__IMPL=org.apache.iceberg.aws.s3.S3FileIO \
    CATALOG_S3_ENDPOINT="http://127.0.0.1:$MINIO_PORT" CATALOG_S3_PATH__STYLE__ACCESS=true \
    CATALOG_S3_ACCESS__KEY__ID=$MINIO_USER CATALOG_S3_SECRET__ACCESS__KEY=$MINIO_PASSWORD \
    CATALOG_CLIENT_REGION=us-east-1 AWS_REGION=us-east-1 \
    nohup java -Xms64m -Xmx384m -XX:+UseSerialGC -Dorg.slf4j.simpleLogger.defaultLogLevel=warn \
    -cp "$ICEBERG_HOME/lib/*" org.apache.iceberg.rest.RESTCatalogServer \
    > "$RUN/iceberg.log" 2>&1 < /dev/null &
  echo $! > "$RUN/iceberg.pid"
  local i
  for ((i = 0; i < 600; i++)); do
    if curl -sf "http://127.0.0.1:$ICEBERG_PORT/v1/config" > /dev/null; then return 0; fi
    sleep 0.1
  done
  log "iceberg REST catalog not ready after 60 s"
  tail -n 30 "$RUN/iceberg.log" >&2
  return 1
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
export FUSIONSTREAM_TEST_ICEBERG_URI=http://127.0.0.1:$ICEBERG_PORT
export FUSIONSTREAM_TEST_WAREHOUSE=s3://$WAREHOUSE_BUCKET/warehouse
ENV
}

case "${1:-}" in
  up)
    mkdir -p "$RUN"
    # Installers print to stderr only: stdout is the exports `eval "$(... up)"` reads (Maven
    # writes colour resets to stdout even with -q).
    install_kafka >&2
    install_minio >&2
    install_iceberg >&2
    start_kafka
    start_minio
    start_iceberg
    log "kafka on 127.0.0.1:$KAFKA_PORT, minio on http://127.0.0.1:$MINIO_PORT, iceberg REST catalog on http://127.0.0.1:$ICEBERG_PORT (logs in $RUN)"
    print_env
    ;;
  down)
    stop iceberg
    stop minio
    stop kafka
    rm -rf "$RUN/kafka-data" "$RUN/minio-data" "$RUN/iceberg-catalog.db"
    log "stopped"
    ;;
  env) print_env ;;
  kafka-tool)
    shift
    kafka_tool "$@"
    ;;
  stop | start)
    case "${2:-}" in
      kafka | minio | iceberg) ;;
      *) echo "usage: $0 $1 kafka|minio|iceberg" >&2; exit 2 ;;
    esac
    if [[ $1 == stop ]]; then stop "$2"; else "start_$2" keep; fi
    log "$2: $1"
    ;;
  status)
    for s in kafka minio iceberg; do
      if running "$s"; then echo "$s: running (pid $(cat "$RUN/$s.pid"))"; else echo "$s: stopped"; fi
    done
    ;;
  *)
    echo "usage: $0 up|down|env|status|stop NAME|start NAME|kafka-tool CLASS ARGS..." >&2
    exit 2
    ;;
esac
