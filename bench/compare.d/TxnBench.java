// bench/compare.d/TxnBench.java: transactional produce and a read_committed consumer, the same
// against sluice and Apache Kafka (run by bench/txn with `java TxnBench.java`, Kafka's client
// jars on the class path).
//
//   TxnBench <bootstrap> <topic> <partitions> <transactions> <records per transaction>
//            <record bytes> <producers>
//
// PRODUCERS threads, each with its own transactional producer (transactional.id
// txnbench-<topic>-<i>, acks=all, idempotent), run TRANSACTIONS/PRODUCERS transactions each:
// beginTransaction, RECORDS records spread round-robin over the PARTITIONS partitions,
// commitTransaction (timed: from the call to its return, the flush of the transaction's
// records included). Meanwhile one read_committed consumer (assigned every partition from the
// beginning) reads until it has seen every committed record. Prints one line of results:
//   RESULT produce_rps=.. produce_mbps=.. commit_p50_ms=.. commit_p99_ms=.. commit_max_ms=..
//          consume_rps=.. e2e_secs=..
// (consume_rps: committed records read per second from the consumer's start to its last
// record; it runs concurrently with the producers, so it is bounded by their rate).
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.atomic.AtomicLong;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public class TxnBench {
    public static void main(String[] args) throws Exception {
        String bootstrap = args[0], topic = args[1];
        int partitions = Integer.parseInt(args[2]);
        int transactions = Integer.parseInt(args[3]);
        int perTxn = Integer.parseInt(args[4]);
        int recordBytes = Integer.parseInt(args[5]);
        int producers = Integer.parseInt(args[6]);
        int txnsEach = transactions / producers;
        long expected = (long) txnsEach * producers * perTxn;

        AtomicLong consumed = new AtomicLong();
        long[] consumeSpan = new long[2];
        Thread consumer = new Thread(() -> consume(bootstrap, topic, partitions, expected, consumed, consumeSpan));
        consumer.start();

        List<long[]> latencies = Collections.synchronizedList(new ArrayList<>());
        List<Thread> threads = new ArrayList<>();
        long t0 = System.nanoTime();
        for (int i = 0; i < producers; i++) {
            final int id = i;
            Thread t = new Thread(() -> latencies.add(produce(bootstrap, topic, partitions, txnsEach, perTxn, recordBytes, id)));
            threads.add(t);
            t.start();
        }
        for (Thread t : threads) {
            t.join();
        }
        double produceSecs = (System.nanoTime() - t0) / 1e9;
        consumer.join(300_000);

        long[] all = latencies.stream().flatMapToLong(java.util.Arrays::stream).sorted().toArray();
        double rps = expected / produceSecs;
        double mbps = rps * recordBytes / 1e6;
        double consumeSecs = (consumeSpan[1] - consumeSpan[0]) / 1e9;
        System.out.printf("RESULT produce_rps=%.0f produce_mbps=%.1f commit_p50_ms=%.2f commit_p99_ms=%.2f "
                + "commit_max_ms=%.2f consume_rps=%.0f consumed=%d expected=%d e2e_secs=%.2f%n",
            rps, mbps, pct(all, 0.50), pct(all, 0.99), all.length == 0 ? 0 : all[all.length - 1] / 1e6,
            consumeSecs > 0 ? consumed.get() / consumeSecs : 0, consumed.get(), expected,
            (consumeSpan[1] - t0) / 1e9);
        if (consumed.get() != expected) {
            System.exit(1);
        }
    }

    static double pct(long[] sorted, double q) {
        if (sorted.length == 0) {
            return 0;
        }
        int i = (int) Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1);
        return sorted[Math.max(i, 0)] / 1e6;
    }

    static long[] produce(String bootstrap, String topic, int partitions, int txns, int perTxn, int bytes, int id) {
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ProducerConfig.TRANSACTIONAL_ID_CONFIG, "txnbench-" + topic + "-" + id);
        p.put(ProducerConfig.ACKS_CONFIG, "all");
        p.put(ProducerConfig.LINGER_MS_CONFIG, 5);
        p.put(ProducerConfig.BATCH_SIZE_CONFIG, 65536);
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class);
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class);
        byte[] value = new byte[bytes];
        long[] lat = new long[txns];
        try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(p)) {
            producer.initTransactions();
            int next = id;
            for (int t = 0; t < txns; t++) {
                producer.beginTransaction();
                for (int r = 0; r < perTxn; r++) {
                    producer.send(new ProducerRecord<>(topic, next++ % partitions, null, value));
                }
                long c0 = System.nanoTime();
                producer.commitTransaction();
                lat[t] = System.nanoTime() - c0;
            }
        }
        return lat;
    }

    static void consume(String bootstrap, String topic, int partitions, long expected, AtomicLong consumed,
                        long[] span) {
        Properties c = new Properties();
        c.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        c.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
        c.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, false);
        c.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class);
        c.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class);
        c.put(ConsumerConfig.MAX_POLL_RECORDS_CONFIG, 2000);
        try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(c)) {
            List<TopicPartition> tps = new ArrayList<>();
            for (int i = 0; i < partitions; i++) {
                tps.add(new TopicPartition(topic, i));
            }
            consumer.assign(tps);
            consumer.seekToBeginning(tps);
            long deadline = System.nanoTime() + 300_000_000_000L;
            while (consumed.get() < expected && System.nanoTime() < deadline) {
                ConsumerRecords<byte[], byte[]> recs = consumer.poll(Duration.ofMillis(200));
                if (!recs.isEmpty()) {
                    if (span[0] == 0) {
                        span[0] = System.nanoTime();
                    }
                    consumed.addAndGet(recs.count());
                    span[1] = System.nanoTime();
                }
            }
        }
    }
}
