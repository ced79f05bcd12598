#!/usr/bin/env bash
# The real Apache Kafka broker (KRaft, one node), fetched from Maven Central and run with the
# machine's Java. No Docker, no download from a project website.
#
#   deploy/kafka/kafka.sh fetch     resolve the broker's jars into the cache (once)
#   deploy/kafka/kafka.sh start     fetch, format storage on first use, start, wait until it answers
#   deploy/kafka/kafka.sh stop      stop the broker started from this data directory
#   deploy/kafka/kafka.sh status    exit 0 when the broker answers
#   deploy/kafka/kafka.sh tool CLASS ARGS...   run a Kafka tool class, e.g.
#        tool org.apache.kafka.tools.consumer.group.ConsumerGroupCommand --list
#   deploy/kafka/kafka.sh acls [PREFIX [remove]]   create (or remove) the SCRAM users and the
#        ACLs of every Packline principal for topics under PREFIX ('start' does it unprefixed)
#
# Settings (environment): PACKLINE_KAFKA_VERSION, PACKLINE_KAFKA_PORT,
# PACKLINE_KAFKA_CONTROLLER_PORT, PACKLINE_KAFKA_DATA_DIR, PACKLINE_KAFKA_HEAP, PACKLINE_CACHE_DIR.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib/env.sh"

HERE="$PACKLINE_ROOT/deploy/kafka"
LIBS="$PACKLINE_CACHE_DIR/kafka-$PACKLINE_KAFKA_VERSION/libs"
DATA="$PACKLINE_KAFKA_DATA_DIR"
PIDFILE="$DATA/broker.pid"
LOGDIR="$PACKLINE_LOG_DIR/kafka"
BOOTSTRAP="$PACKLINE_KAFKA_BOOTSTRAP"

fetch() {
  [[ -f "$LIBS/.complete" ]] && return 0
  command -v java >/dev/null || die "java is not installed (Kafka $PACKLINE_KAFKA_VERSION needs Java 17+)"
  command -v mvn >/dev/null || die "mvn is not installed (it fetches the broker from Maven Central)"
  log "fetching Apache Kafka $PACKLINE_KAFKA_VERSION from Maven Central into $LIBS"
  rm -rf "$LIBS" && mkdir -p "$LIBS"
  mvn -q -B -Dstyle.color=never -f "$HERE/pom.xml" -Dkafka.version="$PACKLINE_KAFKA_VERSION" \
    dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$LIBS" >&2
  touch "$LIBS/.complete"
}

java_tool() {
  local class=$1
  shift
  java -Xmx256m -cp "$LIBS/*" -Dlog4j2.configurationFile="$HERE/log4j2.yaml" \
    -Dkafka.logs.dir="$LOGDIR/tools" "$class" "$@"
}

answers() {
  port_open "$PACKLINE_KAFKA_HOST" "$PACKLINE_KAFKA_PORT" &&
    java_tool org.apache.kafka.tools.BrokerApiVersionsCommand --bootstrap-server "$BOOTSTRAP" \
      >/dev/null 2>&1
}

write_config() {
  mkdir -p "$DATA/log" "$LOGDIR"
  cat >"$DATA/server.properties" <<PROPS
# Written by deploy/kafka/kafka.sh: one node that is both broker and KRaft controller.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$PACKLINE_KAFKA_HOST:$PACKLINE_KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://$PACKLINE_KAFKA_HOST:$PACKLINE_KAFKA_PORT,CONTROLLER://$PACKLINE_KAFKA_HOST:$PACKLINE_KAFKA_CONTROLLER_PORT,SASL_SSL://$PACKLINE_KAFKA_HOST:$PACKLINE_KAFKA_SASL_PORT
advertised.listeners=PLAINTEXT://$PACKLINE_KAFKA_HOST:$PACKLINE_KAFKA_PORT,SASL_SSL://$PACKLINE_KAFKA_HOST:$PACKLINE_KAFKA_SASL_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL
# ACLs (R17): each service and each kind of outside producer is its own SCRAM principal on the
# SASL_SSL listener, allowed only its topics and consumer groups (packline-admin acls, from the
# topic registry; nothing is allowed without an ACL). The PLAINTEXT listener is the development
# and test listener, bound to the loopback and never exposed: its principal, User:ANONYMOUS, is a
# super user, as is the SASL admin user that creates topics and re-drives dead letters.
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:ANONYMOUS;User:$PACKLINE_BROKER_SCRAM_USER
allow.everyone.if.no.acl.found=false
# The SASL_SSL listener is what a production cluster looks like: SCRAM-SHA-256 users (created
# by 'kafka.sh start', see scram_user) over TLS with the certificate from deploy/tls/certs.sh.
sasl.enabled.mechanisms=SCRAM-SHA-256
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
ssl.keystore.type=PEM
ssl.keystore.location=$PACKLINE_TLS_DIR/kafka.pem
log.dirs=$DATA/log
# Topics are created by the project from the contracts' registry, never by a typo.
auto.create.topics.enable=false
num.partitions=$PACKLINE_PARTITIONS
# One node: internal topics cannot have more than one replica.
offsets.topic.replication.factor=1
offsets.topic.num.partitions=12
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# Tests start many short-lived consumer groups; do not wait 3 s before the first rebalance.
group.initial.rebalance.delay.ms=0
log.retention.hours=168
PROPS
}

# The SCRAM users of the SASL_SSL listener and their ACLs (packline-admin acls, from the
# registry), for topics under the prefix $1 (none: the local system's own), in one JVM. The
# admin user is $PACKLINE_BROKER_SCRAM_USER; every principal's local password is
# '<user>-dev-secret' (development only). Doing it again changes nothing; 'remove' as $2 deletes
# the prefix's ACLs (tests clean up after themselves).
principals() {
  local prefix=${1:-} mode=${2:-add} admin="$PACKLINE_ROOT/.venv/bin/packline-admin" lines
  if [[ ! -x "$admin" ]]; then
    log "no $admin yet (deploy/packline setup): only the admin SCRAM user, no ACLs"
    lines=""
  else
    lines=$("$admin" acls --prefix "$prefix")
  fi
  {
    if [[ $mode == add ]]; then
      echo "USER $PACKLINE_BROKER_SCRAM_USER $PACKLINE_BROKER_SCRAM_PASSWORD"
      awk '{ sub(/^User:/, "", $1); print $1 }' <<<"$lines" | sort -u |
        while read -r user; do if [[ -n $user ]]; then echo "USER $user $user-dev-secret"; fi; done
    fi
    echo "$lines"
  } | java -Xmx256m -cp "$LIBS/*" -Dlog4j2.configurationFile="$HERE/log4j2.yaml" \
    -Dkafka.logs.dir="$LOGDIR/tools" "$HERE/Acls.java" "$BOOTSTRAP" "$mode" >/dev/null
}

start() {
  fetch
  "$PACKLINE_ROOT/deploy/tls/certs.sh" >/dev/null
  if pid_alive "$PIDFILE"; then
    log "Kafka already running (pid $(cat "$PIDFILE")) on $BOOTSTRAP"
    wait_for 60 "Kafka on $BOOTSTRAP" answers
    return 0
  fi
  if port_open "$PACKLINE_KAFKA_HOST" "$PACKLINE_KAFKA_PORT"; then
    if answers; then
      log "a Kafka broker already answers on $BOOTSTRAP; reusing it"
      return 0
    fi
    die "port $PACKLINE_KAFKA_PORT is taken by something that is not a Kafka broker"
  fi
  write_config
  if [[ ! -f "$DATA/log/meta.properties" ]]; then
    local cluster_id
    cluster_id=$(java_tool kafka.tools.StorageTool random-uuid)
    log "formatting Kafka storage in $DATA/log (cluster $cluster_id)"
    java_tool kafka.tools.StorageTool format --ignore-formatted -t "$cluster_id" \
      -c "$DATA/server.properties" >/dev/null
  fi
  log "starting Kafka $PACKLINE_KAFKA_VERSION on $BOOTSTRAP (log: $LOGDIR/server.log)"
  nohup java -Xms"$PACKLINE_KAFKA_HEAP" -Xmx"$PACKLINE_KAFKA_HEAP" -XX:+UseG1GC \
    -Djava.awt.headless=true -cp "$LIBS/*" \
    -Dlog4j2.configurationFile="$HERE/log4j2.yaml" -Dkafka.logs.dir="$LOGDIR" \
    kafka.Kafka "$DATA/server.properties" >"$LOGDIR/stdout.log" 2>&1 </dev/null &
  echo $! >"$PIDFILE"
  if ! wait_for 120 "Kafka on $BOOTSTRAP" answers; then
    tail -n 30 "$LOGDIR/server.log" "$LOGDIR/stdout.log" >&2 || true
    die "Kafka did not start"
  fi
  principals
  log "Kafka answers on $BOOTSTRAP (and SASL_SSL on $PACKLINE_KAFKA_HOST:$PACKLINE_KAFKA_SASL_PORT)"
}

case "${1:-}" in
  fetch) fetch ;;
  start) start ;;
  stop) stop_pid "$PIDFILE" Kafka ;;
  status) answers ;;
  tool) shift; fetch; java_tool "$@" ;;
  acls) shift; fetch; principals "$@" ;;
  *) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
