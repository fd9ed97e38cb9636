// Apache Kafka's Java transactional producer and read_committed consumer against sluice
// (compiled and run by test_transactions.py). Every wait is bounded; the exit code is 0 only
// when every check passed, and each check prints one line the test also reads.
//
//   Transactions commit-abort BOOTSTRAP TOPIC GROUP
//   Transactions fence BOOTSTRAP TOPIC
//   Transactions hang BOOTSTRAP TOPIC TXID      (begins a transaction, sends, then halts)
//   Transactions epochs BOOTSTRAP TOPIC BUMP    (commit, abort, commit, abort; the producer epoch
//                                                DescribeTransactions gives after each: BUMP=1
//                                                expects +1 per transaction, 0 a constant one)
//   Transactions many BOOTSTRAP TOPIC PARTITIONS TXNS PER_TXN
//                                               (TXNS short transactions, one right after the
//                                                other, of PER_TXN records round-robin over the
//                                                partitions in small batches, every fifth
//                                                aborted; then a read_committed consumer of
//                                                every partition must read exactly the
//                                                committed records, once each)

import java.time.Duration;
import java.util.*;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.consumer.*;
import org.apache.kafka.clients.producer.*;
import org.apache.kafka.common.KafkaException;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.InvalidProducerEpochException;
import org.apache.kafka.common.errors.ProducerFencedException;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

public class Transactions {
    static KafkaProducer<String, String> producer(String bootstrap, String txid) {
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ProducerConfig.TRANSACTIONAL_ID_CONFIG, txid);
        p.put(ProducerConfig.TRANSACTION_TIMEOUT_CONFIG, "5000");
        p.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, "30000");
        p.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, "30000");
        p.put(ProducerConfig.REQUEST_TIMEOUT_MS_CONFIG, "10000");
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        return new KafkaProducer<>(p);
    }

    /// Every value of partition 0 of `topic` as a consumer with `isolation` reads it, stopping
    /// once it reached the end offset it sees for that isolation (bounded: 30 s).
    static List<String> readAll(String bootstrap, String topic, String isolation) {
        Properties p = new Properties();
        p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, isolation);
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        List<String> out = new ArrayList<>();
        try (KafkaConsumer<String, String> c = new KafkaConsumer<>(p)) {
            TopicPartition tp = new TopicPartition(topic, 0);
            c.assign(List.of(tp));
            c.seekToBeginning(List.of(tp));
            long end = c.endOffsets(List.of(tp)).get(tp);
            long deadline = System.currentTimeMillis() + 30_000;
            while (c.position(tp) < end && System.currentTimeMillis() < deadline) {
                for (ConsumerRecord<String, String> r : c.poll(Duration.ofMillis(500))) out.add(r.value());
            }
            System.out.println(isolation + " end offset " + end + " position " + c.position(tp));
        }
        return out;
    }

    static void send(KafkaProducer<String, String> p, String topic, String prefix, int n) {
        for (int i = 0; i < n; i++) p.send(new ProducerRecord<>(topic, 0, "k" + i, prefix + i));
    }

    /// The producer epoch the transaction coordinator holds for `txid` (DescribeTransactions).
    static int epoch(Admin admin, String txid) throws Exception {
        return admin.describeTransactions(List.of(txid)).description(txid).get().producerEpoch();
    }

    /// `many`: the transactions, then the read_committed check (module comment).
    static boolean many(String bootstrap, String topic, int partitions, int txns, int perTxn) {
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ProducerConfig.TRANSACTIONAL_ID_CONFIG, "txn-many-" + topic);
        p.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, "30000");
        p.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, "30000");
        p.put(ProducerConfig.REQUEST_TIMEOUT_MS_CONFIG, "10000");
        // Several batches per partition and transaction, sent without waiting for each other
        // (up to 5 requests in flight per broker): a later batch may reach its leader while
        // the transaction's first one is being refused and retried.
        p.put(ProducerConfig.LINGER_MS_CONFIG, "0");
        p.put(ProducerConfig.BATCH_SIZE_CONFIG, "400");
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        Set<String> committed = new HashSet<>();
        long t0 = System.nanoTime();
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(p)) {
            producer.initTransactions();
            for (int t = 0; t < txns; t++) {
                boolean commit = t % 5 != 4;
                List<String> values = new ArrayList<>();
                producer.beginTransaction();
                for (int i = 0; i < perTxn; i++) {
                    String v = (commit ? "c" : "a") + t + "-" + i + "-" + "x".repeat(100);
                    producer.send(new ProducerRecord<>(topic, i % partitions, null, v));
                    values.add(v);
                }
                if (commit) {
                    producer.commitTransaction();
                    committed.addAll(values);
                } else {
                    producer.flush();
                    producer.abortTransaction();
                }
            }
        } catch (KafkaException e) {
            System.out.println("FAILED the transactions: " + e);
            return false;
        }
        System.out.printf("transactions %d in %d ms%n", txns, (System.nanoTime() - t0) / 1_000_000);
        Properties c = new Properties();
        c.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        c.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
        c.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        c.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        c.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        List<String> seen = new ArrayList<>();
        try (KafkaConsumer<String, String> consumer = new KafkaConsumer<>(c)) {
            List<TopicPartition> tps = new ArrayList<>();
            for (int q = 0; q < partitions; q++) tps.add(new TopicPartition(topic, q));
            consumer.assign(tps);
            consumer.seekToBeginning(tps);
            long deadline = System.currentTimeMillis() + 30_000;
            while (seen.size() < committed.size() && System.currentTimeMillis() < deadline) {
                for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(200))) seen.add(r.value());
            }
            // A little longer: anything more would be a duplicate or an aborted record.
            long settle = System.currentTimeMillis() + 1_000;
            while (System.currentTimeMillis() < settle) {
                for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(200))) seen.add(r.value());
            }
        }
        Set<String> distinct = new HashSet<>(seen);
        return check(distinct.equals(committed) && seen.size() == committed.size(),
                "read_committed read " + seen.size() + " records (" + distinct.size() + " distinct, "
                        + seen.stream().filter(v -> v.startsWith("a")).count() + " aborted), "
                        + committed.size() + " committed");
    }

    static boolean check(boolean ok, String what) {
        System.out.println((ok ? "OK " : "FAILED ") + what);
        return ok;
    }

    public static void main(String[] args) throws Exception {
        String mode = args[0], bootstrap = args[1], topic = args[2];
        boolean ok = true;
        switch (mode) {
            case "commit-abort": {
                String group = args[3];
                try (KafkaProducer<String, String> p = producer(bootstrap, "txn-ca-" + topic)) {
                    p.initTransactions();
                    p.beginTransaction();
                    send(p, topic, "c", 10);
                    p.sendOffsetsToTransaction(Map.of(new TopicPartition(topic, 0), new OffsetAndMetadata(7)),
                            new ConsumerGroupMetadata(group));
                    p.commitTransaction();
                    p.beginTransaction();
                    send(p, topic, "a", 10);
                    p.sendOffsetsToTransaction(Map.of(new TopicPartition(topic, 0), new OffsetAndMetadata(99)),
                            new ConsumerGroupMetadata(group));
                    p.flush();
                    p.abortTransaction();
                    p.beginTransaction();
                    send(p, topic, "d", 5);
                    p.commitTransaction();
                }
                List<String> committed = readAll(bootstrap, topic, "read_committed");
                List<String> all = readAll(bootstrap, topic, "read_uncommitted");
                System.out.println("read_committed: " + committed);
                ok &= check(committed.size() == 15 && committed.stream().noneMatch(v -> v.startsWith("a")),
                        "read_committed sees the 15 committed records and none of the aborted ones");
                ok &= check(all.size() == 25, "read_uncommitted sees all 25 records (got " + all.size() + ")");
                Properties cp = new Properties();
                cp.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
                cp.put(ConsumerConfig.GROUP_ID_CONFIG, group);
                cp.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
                cp.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
                try (KafkaConsumer<String, String> c = new KafkaConsumer<>(cp)) {
                    TopicPartition tp = new TopicPartition(topic, 0);
                    OffsetAndMetadata o = c.committed(Set.of(tp), Duration.ofSeconds(20)).get(tp);
                    ok &= check(o != null && o.offset() == 7,
                            "the committed transaction's offset is the group's, the aborted one's is not (" + o + ")");
                }
                break;
            }
            case "fence": {
                String txid = "txn-fence-" + topic;
                KafkaProducer<String, String> first = producer(bootstrap, txid);
                first.initTransactions();
                first.beginTransaction();
                send(first, topic, "zombie", 3);
                first.flush();
                try (KafkaProducer<String, String> second = producer(bootstrap, txid)) {
                    second.initTransactions();
                    boolean fenced = false;
                    try {
                        send(first, topic, "zombie-late", 1);
                        first.commitTransaction();
                    } catch (ProducerFencedException | InvalidProducerEpochException e) {
                        fenced = true;
                    } catch (KafkaException e) {
                        fenced = e.getCause() instanceof ProducerFencedException
                                || e.getCause() instanceof InvalidProducerEpochException;
                        System.out.println("first producer: " + e);
                    }
                    ok &= check(fenced, "the first producer is fenced by the second");
                    second.beginTransaction();
                    send(second, topic, "live", 4);
                    second.commitTransaction();
                }
                first.close(Duration.ofSeconds(5));
                List<String> committed = readAll(bootstrap, topic, "read_committed");
                System.out.println("read_committed: " + committed);
                ok &= check(committed.size() == 4 && committed.stream().allMatch(v -> v.startsWith("live")),
                        "read_committed sees only the second producer's transaction");
                break;
            }
            case "epochs": {
                boolean bump = args[3].equals("1");
                String txid = "txn-epochs-" + topic;
                List<Integer> epochs = new ArrayList<>();
                Properties ap = new Properties();
                ap.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
                try (KafkaProducer<String, String> p = producer(bootstrap, txid); Admin admin = Admin.create(ap)) {
                    p.initTransactions();
                    epochs.add(epoch(admin, txid));
                    for (int t = 0; t < 4; t++) {
                        p.beginTransaction();
                        send(p, topic, (t % 2 == 0 ? "c" : "a") + t + "-", 5);
                        if (t % 2 == 0) {
                            p.commitTransaction();
                        } else {
                            p.flush();
                            p.abortTransaction();
                        }
                        epochs.add(epoch(admin, txid));
                    }
                }
                System.out.println("epochs: " + epochs);
                boolean steps = true;
                for (int i = 1; i < epochs.size(); i++) {
                    steps &= epochs.get(i) == epochs.get(i - 1) + (bump ? 1 : 0);
                }
                ok &= check(steps, (bump ? "every commit and abort bumps" : "no end bumps") + " the producer epoch " + epochs);
                List<String> committed = readAll(bootstrap, topic, "read_committed");
                ok &= check(committed.size() == 10 && committed.stream().allMatch(v -> v.startsWith("c")),
                        "read_committed sees the two committed transactions only (" + committed.size() + ")");
                break;
            }
            case "many": {
                ok &= many(bootstrap, topic, Integer.parseInt(args[3]), Integer.parseInt(args[4]),
                        Integer.parseInt(args[5]));
                break;
            }
            case "hang": {
                KafkaProducer<String, String> p = producer(bootstrap, args[3]);
                p.initTransactions();
                p.beginTransaction();
                send(p, topic, "hung", 5);
                p.flush();
                System.out.println("OK sent and flushed in an open transaction");
                System.out.flush();
                Runtime.getRuntime().halt(0);
            }
            default:
                throw new IllegalArgumentException(mode);
        }
        System.exit(ok ? 0 : 1);
    }
}
