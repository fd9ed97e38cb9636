// Apache Kafka's Java consumer with the KIP-848 protocol (group.protocol=consumer) against
// sluice, compiled and run by test_kip848.py. One process is one group member:
//
//   Kip848Consumer BOOTSTRAP TOPIC GROUP ASSIGNOR STOP_FILE MAX_MS [INSTANCE_ID]
//
// It subscribes, polls and commits synchronously after every poll that returned records,
// printing (flushed) one line per event the test reads:
//   ASSIGNED p,p,...   REVOKED p,p,...   REC partition offset value   COMMITTED n   ERROR text
//   TPS topic:p,...  (after each change: every topic-partition owned)
// A TOPIC written re:REGEX subscribes with a broker-side regex (SubscriptionPattern, RE2/J).
// An ASSIGNOR written classic:STRATEGY makes a classic-protocol member (group.protocol=classic,
// partition.assignment.strategy STRATEGY, e.g. cooperative-sticky), for mixed groups.
// It stops (closing the consumer, which leaves the group) when STOP_FILE exists or after
// MAX_MS; the exit code is 0 unless an exception escaped. The environment variable
// KIP848_CLIENT_PROPERTIES may name a properties file of further client settings (security).

import java.nio.file.*;
import java.time.Duration;
import java.util.*;
import java.util.stream.Collectors;
import org.apache.kafka.clients.consumer.*;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.StringDeserializer;

public class Kip848Consumer {
    static synchronized void say(String line) {
        System.out.println(line);
        System.out.flush();
    }

    static String parts(Collection<TopicPartition> tps) {
        return tps.stream().map(TopicPartition::partition).sorted().map(String::valueOf).collect(Collectors.joining(","));
    }

    static String topicParts(Set<TopicPartition> owned, Collection<TopicPartition> leaving) {
        return owned.stream().filter(tp -> !leaving.contains(tp)).map(tp -> tp.topic() + ":" + tp.partition())
            .sorted().collect(Collectors.joining(","));
    }

    public static void main(String[] args) throws Exception {
        String bootstrap = args[0], topic = args[1], group = args[2], assignor = args[3];
        Path stop = Paths.get(args[4]);
        long deadline = System.currentTimeMillis() + Long.parseLong(args[5]);
        Properties p = new Properties();
        p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ConsumerConfig.GROUP_ID_CONFIG, group);
        if (assignor.startsWith("classic:")) {
            String strategy = assignor.substring(8);
            p.put(ConsumerConfig.GROUP_PROTOCOL_CONFIG, "classic");
            p.put(ConsumerConfig.PARTITION_ASSIGNMENT_STRATEGY_CONFIG,
                strategy.equals("range") ? RangeAssignor.class.getName() : CooperativeStickyAssignor.class.getName());
            p.put(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, "10000");
            p.put(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG, "1000");
        } else {
            p.put(ConsumerConfig.GROUP_PROTOCOL_CONFIG, "consumer");
            p.put(ConsumerConfig.GROUP_REMOTE_ASSIGNOR_CONFIG, assignor);
        }
        if (args.length > 6) p.put(ConsumerConfig.GROUP_INSTANCE_ID_CONFIG, args[6]);
        p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        p.put(ConsumerConfig.MAX_POLL_RECORDS_CONFIG, "50");
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        String extra = System.getenv("KIP848_CLIENT_PROPERTIES");
        if (extra != null) {
            try (java.io.Reader r = Files.newBufferedReader(Paths.get(extra))) {
                p.load(r);
            }
        }
        try (KafkaConsumer<String, String> c = new KafkaConsumer<>(p)) {
            ConsumerRebalanceListener listener = new ConsumerRebalanceListener() {
                public void onPartitionsRevoked(Collection<TopicPartition> tps) {
                    say("REVOKED " + parts(tps));
                    say("TPS " + topicParts(c.assignment(), tps));
                }
                public void onPartitionsAssigned(Collection<TopicPartition> tps) {
                    say("ASSIGNED " + parts(tps));
                    say("TPS " + topicParts(c.assignment(), List.of()));
                }
            };
            if (topic.startsWith("re:")) c.subscribe(new SubscriptionPattern(topic.substring(3)), listener);
            else c.subscribe(List.of(topic), listener);
            long committed = 0;
            while (!Files.exists(stop) && System.currentTimeMillis() < deadline) {
                ConsumerRecords<String, String> recs = c.poll(Duration.ofMillis(200));
                for (ConsumerRecord<String, String> r : recs) say("REC " + r.partition() + " " + r.offset() + " " + r.value());
                if (!recs.isEmpty()) {
                    try {
                        c.commitSync(Duration.ofSeconds(15));
                        committed += recs.count();
                        say("COMMITTED " + committed);
                    } catch (Exception e) {
                        // A commit refused during a rebalance (stale epoch, revoked partition):
                        // the records are consumed again by their next owner.
                        say("ERROR commit " + e);
                    }
                }
            }
            say("CLOSING");
        }
        say("CLOSED");
    }
}
