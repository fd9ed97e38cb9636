# bench/compare.d/kafka.sh: an N-node Apache Kafka KRaft cluster on loopback, for
# bench/compare and bench/failover (sourced; needs WORK, JAVA, CP, TOOL_JVM, BROKER_JVM and
# free_port from the caller).
#
#   kafka_init N ROUND   writes $WORK/kafka-I.properties for nodes 1..N (combined
#                        broker+controller nodes with static voters; internal topics with
#                        RF min(N,3)) and formats their data dirs under $WORK/data-kafka;
#                        sets KAFKA_BOOT (the client addresses, comma-separated) and
#                        KAFKA_PORTS[I]
#   kafka_start I LOG    starts node I in the background on its existing data dir; sets
#                        KAFKA_PID
#   kafka_ready I LOG    true once node I logged that it started and its port accepts

kafka_init() { # nodes round
    local n=$1 r=$2 i id voters="" rf isr
    local -a cports
    rf=$(( n < 3 ? n : 3 ))
    isr=$(( rf < 2 ? 1 : 2 ))
    rm -rf "$WORK/data-kafka"
    KAFKA_PORTS=()
    KAFKA_BOOT=""
    for i in $(seq 1 "$n"); do
        KAFKA_PORTS[i]=$(free_port)
        cports[i]=$(free_port)
        voters+="${voters:+,}$i@127.0.0.1:${cports[i]}"
        KAFKA_BOOT+="${KAFKA_BOOT:+,}127.0.0.1:${KAFKA_PORTS[i]}"
    done
    # A cluster id that starts with "-" reads as an option to kafka-storage (1 in 64 ids, as
    # Kafka's own Uuid.randomUuid avoids): draw again.
    id=$(python3 -c 'import base64,uuid
while True:
    i = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    if not i.startswith("-"):
        print(i)
        break')
    for i in $(seq 1 "$n"); do
        cat >"$WORK/kafka-$i.properties" <<EOF
process.roles=broker,controller
node.id=$i
controller.quorum.voters=$voters
listeners=PLAINTEXT://127.0.0.1:${KAFKA_PORTS[i]},CONTROLLER://127.0.0.1:${cports[i]}
advertised.listeners=PLAINTEXT://127.0.0.1:${KAFKA_PORTS[i]}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$WORK/data-kafka/node-$i
num.partitions=1
offsets.topic.replication.factor=$rf
share.coordinator.state.topic.replication.factor=$rf
share.coordinator.state.topic.min.isr=$isr
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$isr
group.initial.rebalance.delay.ms=0
EOF
        timeout 120 "$JAVA" "${TOOL_JVM[@]}" -cp "$CP" kafka.tools.StorageTool format -t "$id" \
            -c "$WORK/kafka-$i.properties" >"$WORK/logs/kafka-format-r$r-$i.log" 2>&1 \
            || { tail -5 "$WORK/logs/kafka-format-r$r-$i.log" >&2; echo "kafka format failed" >&2; return 1; }
    done
}

kafka_start() { # node log
    "$JAVA" "${BROKER_JVM[@]}" -cp "$CP" kafka.Kafka "$WORK/kafka-$1.properties" >>"$2" 2>&1 &
    KAFKA_PID=$!
}

kafka_ready() { # node log
    grep -qs 'Kafka Server started' "$2" && (exec 3<>"/dev/tcp/127.0.0.1/${KAFKA_PORTS[$1]}") 2>/dev/null
}
