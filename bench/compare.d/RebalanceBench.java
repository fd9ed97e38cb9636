// Rebalance time for bench/rebalance (run as a single-file source program):
//
//   java -cp 'libs/*' RebalanceBench.java BOOTSTRAP TOPIC PARTITIONS MEMBERS PROTOCOL RATE TIMEOUT_S
//
// One producer sends RATE records/s (1 KiB values, round-robin over the partitions) for the
// whole run; MEMBERS Java consumers (one thread each, group.protocol PROTOCOL: "consumer" for
// KIP-848, "classic" for the classic protocol with the cooperative-sticky assignor) join one
// group. Once they own every partition between them and every partition delivered a record,
// one more member joins at T0. Measured: the time from T0 until every partition has
// delivered a record (polled after T0) to the member that owns it when the group has settled
// (MEMBERS+1 members owning every partition, each at least one, none twice). A partition's
// moving resets its time. Prints one line `RESULT rebalance_ms=... settle_ms=... moved=...`
// (settle_ms: until the ownership of the final assignment was first reached; moved: partitions
// that changed owner) or `RESULT failed=1` after TIMEOUT_S seconds. Everything stops by then.
import java.time.Duration;
import java.util.*;
import java.util.concurrent.*;
import java.util.concurrent.atomic.*;
import org.apache.kafka.clients.consumer.*;
import org.apache.kafka.clients.producer.*;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.*;

public class RebalanceBench {
    static final AtomicBoolean stop = new AtomicBoolean();
    static volatile long t0 = Long.MAX_VALUE;

    static class Member implements Runnable {
        final int id;
        final Properties props;
        final String topic;
        final Set<Integer> owned = ConcurrentHashMap.newKeySet();
        /** partition -> nanoTime of the first record polled after T0 while owning it. */
        final Map<Integer, Long> firstAfter = new ConcurrentHashMap<>();
        /** partition -> whether it delivered a record since being assigned (warm-up). */
        final Set<Integer> delivered = ConcurrentHashMap.newKeySet();
        final Set<Integer> everOwned = ConcurrentHashMap.newKeySet();

        Member(int id, Properties props, String topic) {
            this.id = id;
            this.props = props;
            this.topic = topic;
        }

        public void run() {
            try (KafkaConsumer<byte[], byte[]> c = new KafkaConsumer<>(props)) {
                c.subscribe(List.of(topic), new ConsumerRebalanceListener() {
                    public void onPartitionsRevoked(Collection<TopicPartition> tps) {
                        for (TopicPartition tp : tps) {
                            owned.remove(tp.partition());
                            firstAfter.remove(tp.partition());
                            delivered.remove(tp.partition());
                        }
                    }
                    public void onPartitionsLost(Collection<TopicPartition> tps) {
                        onPartitionsRevoked(tps);
                    }
                    public void onPartitionsAssigned(Collection<TopicPartition> tps) {
                        for (TopicPartition tp : tps) {
                            owned.add(tp.partition());
                            everOwned.add(tp.partition());
                        }
                    }
                });
                while (!stop.get()) {
                    ConsumerRecords<byte[], byte[]> recs = c.poll(Duration.ofMillis(50));
                    long now = System.nanoTime();
                    for (ConsumerRecord<byte[], byte[]> r : recs) {
                        delivered.add(r.partition());
                        if (now >= t0 && owned.contains(r.partition())) firstAfter.putIfAbsent(r.partition(), now);
                    }
                    if (!recs.isEmpty()) c.commitAsync();
                }
            } catch (Exception e) {
                System.err.println("member " + id + ": " + e);
            }
        }
    }

    public static void main(String[] a) throws Exception {
        String boot = a[0], topic = a[1], protocol = a[4];
        int parts = Integer.parseInt(a[2]), members = Integer.parseInt(a[3]), rate = Integer.parseInt(a[5]);
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(Long.parseLong(a[6]));
        String group = "rebalance-" + topic;
        Thread producer = new Thread(() -> produce(boot, topic, parts, rate));
        producer.start();
        List<Member> ms = new ArrayList<>();
        List<Thread> threads = new ArrayList<>();
        for (int i = 0; i <= members; i++) {
            Properties p = new Properties();
            p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, boot);
            p.put(ConsumerConfig.GROUP_ID_CONFIG, group);
            p.put(ConsumerConfig.CLIENT_ID_CONFIG, "m" + i);
            p.put(ConsumerConfig.GROUP_PROTOCOL_CONFIG, protocol);
            if (protocol.equals("classic")) {
                p.put(ConsumerConfig.PARTITION_ASSIGNMENT_STRATEGY_CONFIG, CooperativeStickyAssignor.class.getName());
            }
            p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "latest");
            p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
            p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
            p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
            ms.add(new Member(i, p, topic));
        }
        for (int i = 0; i < members; i++) threads.add(start(ms.get(i)));
        List<Member> first = ms.subList(0, members);
        boolean warm = waitFor(deadline, () -> covered(first, parts) && allDelivered(first, parts));
        String result = "RESULT failed=1";
        if (warm) {
            Map<Integer, Integer> before = owners(first);
            t0 = System.nanoTime();
            threads.add(start(ms.get(members)));
            long[] settled = {0};
            boolean done = waitFor(deadline, () -> {
                if (!covered(ms, parts) || ms.stream().anyMatch(m -> m.owned.isEmpty())) return false;
                if (settled[0] == 0) settled[0] = System.nanoTime();
                return ms.stream().allMatch(m -> m.owned.stream().allMatch(p -> m.firstAfter.containsKey(p)));
            });
            if (done) {
                long last = ms.stream().flatMap(m -> m.owned.stream().map(p -> m.firstAfter.get(p)))
                    .filter(Objects::nonNull).mapToLong(Long::longValue).max().orElse(t0);
                Map<Integer, Integer> after = owners(ms);
                long moved = after.entrySet().stream().filter(e -> !e.getValue().equals(before.get(e.getKey()))).count();
                result = String.format("RESULT rebalance_ms=%.1f settle_ms=%.1f moved=%d", (last - t0) / 1e6,
                    (settled[0] - t0) / 1e6, moved);
            }
        }
        stop.set(true);
        for (Thread t : threads) t.join(30_000);
        producer.join(30_000);
        System.out.println(result);
        System.exit(result.contains("failed") ? 1 : 0);
    }

    static Thread start(Member m) {
        Thread t = new Thread(m, "member-" + m.id);
        t.start();
        return t;
    }

    static boolean waitFor(long deadline, java.util.function.BooleanSupplier cond) throws InterruptedException {
        while (System.nanoTime() < deadline) {
            if (cond.getAsBoolean()) return true;
            Thread.sleep(5);
        }
        return false;
    }

    /** Every partition owned by exactly one member. */
    static boolean covered(List<Member> ms, int parts) {
        int total = 0;
        Set<Integer> all = new HashSet<>();
        for (Member m : ms) {
            Set<Integer> o = new HashSet<>(m.owned);
            total += o.size();
            all.addAll(o);
        }
        return total == parts && all.size() == parts;
    }

    static boolean allDelivered(List<Member> ms, int parts) {
        return ms.stream().mapToLong(m -> m.owned.stream().filter(m.delivered::contains).count()).sum() == parts;
    }

    static Map<Integer, Integer> owners(List<Member> ms) {
        Map<Integer, Integer> out = new HashMap<>();
        for (Member m : ms) for (int p : m.owned) out.put(p, m.id);
        return out;
    }

    static void produce(String boot, String topic, int parts, int rate) {
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, boot);
        p.put(ProducerConfig.LINGER_MS_CONFIG, "5");
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        byte[] value = new byte[1024];
        try (KafkaProducer<byte[], byte[]> prod = new KafkaProducer<>(p)) {
            long start = System.nanoTime();
            long sent = 0;
            while (!stop.get()) {
                long due = (System.nanoTime() - start) * rate / 1_000_000_000L;
                for (; sent < due; sent++) prod.send(new ProducerRecord<>(topic, (int) (sent % parts), null, value));
                Thread.sleep(2);
            }
        } catch (Exception e) {
            System.err.println("producer: " + e);
        }
    }
}
