// bench/compare.d/ShareBench.java: share-group (KIP-932) consumption throughput, the same
// against sluice and Apache Kafka (run by bench/share with `java ShareBench.java`, Kafka's
// client jars on the class path).
//
//   ShareBench <bootstrap> <topic> <records> <record bytes> <consumers> <timeout s>
//
// First fills partition 0 of TOPIC with RECORDS records of RECORD_BYTES (one producer,
// acks=all, not timed). Then sets the group config share.auto.offset.reset=earliest on the
// share group (Kafka; a broker that refuses GROUP configs is told by its own settings, see
// bench/share) and starts CONSUMERS KafkaShareConsumers, one thread each, in one share group
// (implicit acknowledgement: each poll accepts the records of the previous one; commitSync()
// before close() accepts the last poll's: the Java client's close() does not, in implicit mode,
// and leaves them to be released with its share session and delivered again to a consumer
// still polling, on Kafka as on sluice). The clock starts when the consumers start and stops
// when every offset was delivered once and the consumers closed (their acknowledgements
// answered). Prints:
//   RESULT consume_rps=.. consume_mbps=.. secs=.. redelivered=.. duplicates=.. missing=..
// (redelivered: deliveries with a delivery count above 1; duplicates: deliveries of an offset
// already delivered; missing: offsets never delivered when the timeout passed).
import java.time.Duration;
import java.util.ArrayList;
import java.util.BitSet;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AlterConfigOp;
import org.apache.kafka.clients.admin.ConfigEntry;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaShareConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public class ShareBench {
    public static void main(String[] args) throws Exception {
        String bootstrap = args[0], topic = args[1];
        int records = Integer.parseInt(args[2]);
        int recordBytes = Integer.parseInt(args[3]);
        int consumers = Integer.parseInt(args[4]);
        long timeoutMs = Long.parseLong(args[5]) * 1000;
        String group = "sharebench-" + topic;

        fill(bootstrap, topic, records, recordBytes);
        setEarliest(bootstrap, group);

        BitSet seen = new BitSet(records);
        int[] distinct = {0};
        AtomicLong delivered = new AtomicLong(), redelivered = new AtomicLong(), duplicates = new AtomicLong();
        AtomicBoolean done = new AtomicBoolean();
        long deadline = System.currentTimeMillis() + timeoutMs;
        List<Thread> threads = new ArrayList<>();
        long t0 = System.nanoTime();
        for (int i = 0; i < consumers; i++) {
            Thread t = new Thread(() -> {
                Properties p = new Properties();
                p.put("bootstrap.servers", bootstrap);
                p.put("group.id", group);
                p.put("key.deserializer", ByteArrayDeserializer.class.getName());
                p.put("value.deserializer", ByteArrayDeserializer.class.getName());
                try (KafkaShareConsumer<byte[], byte[]> c = new KafkaShareConsumer<>(p)) {
                    c.subscribe(List.of(topic));
                    while (!done.get() && System.currentTimeMillis() < deadline) {
                        ConsumerRecords<byte[], byte[]> recs = c.poll(Duration.ofMillis(100));
                        for (ConsumerRecord<byte[], byte[]> r : recs) {
                            delivered.incrementAndGet();
                            if (r.deliveryCount().orElse((short) 1) > 1) {
                                redelivered.incrementAndGet();
                            }
                            synchronized (seen) {
                                int off = (int) r.offset();
                                if (off >= 0 && off < records && seen.get(off)) {
                                    duplicates.incrementAndGet();
                                } else if (off >= 0 && off < records) {
                                    seen.set(off);
                                    if (++distinct[0] == records) {
                                        done.set(true);
                                    }
                                }
                            }
                        }
                    }
                    c.commitSync();
                }
            });
            threads.add(t);
            t.start();
        }
        for (Thread t : threads) {
            t.join();
        }
        double secs = (System.nanoTime() - t0) / 1e9;
        int missing;
        synchronized (seen) {
            missing = records - distinct[0];
        }
        long got = records - missing;
        System.out.printf("RESULT consume_rps=%.0f consume_mbps=%.2f secs=%.2f redelivered=%d duplicates=%d missing=%d%n",
            got / secs, got * (double) recordBytes / secs / 1e6, secs, redelivered.get(), duplicates.get(), missing);
    }

    static void fill(String bootstrap, String topic, int records, int recordBytes) throws Exception {
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ProducerConfig.ACKS_CONFIG, "all");
        p.put(ProducerConfig.LINGER_MS_CONFIG, "5");
        p.put(ProducerConfig.BATCH_SIZE_CONFIG, "131072");
        byte[] value = new byte[recordBytes];
        try (KafkaProducer<byte[], byte[]> prod = new KafkaProducer<>(p, new ByteArraySerializer(), new ByteArraySerializer())) {
            for (int i = 0; i < records; i++) {
                prod.send(new ProducerRecord<>(topic, 0, null, value));
            }
            prod.flush();
        }
    }

    static void setEarliest(String bootstrap, String group) {
        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        try (Admin admin = Admin.create(p)) {
            ConfigResource res = new ConfigResource(ConfigResource.Type.GROUP, group);
            AlterConfigOp op = new AlterConfigOp(new ConfigEntry("share.auto.offset.reset", "earliest"), AlterConfigOp.OpType.SET);
            admin.incrementalAlterConfigs(Map.of(res, List.of(op))).all().get();
        } catch (Exception e) {
            System.err.println("share.auto.offset.reset not set as a group config (" + e + "); the broker's own setting applies");
        }
    }
}
