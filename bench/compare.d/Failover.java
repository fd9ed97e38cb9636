// Failover measurement for bench/failover (run as a single-file source program:
// java -cp 'libs/*' Failover.java BOOTSTRAP TOPIC RATE KILLS CONTROL).
//
// An idempotent Java producer (acks=all) sends RATE records/s round-robin over TOPIC's
// partitions for the whole run. KILLS times: wait until every partition has a leader and a
// full ISR, pick the leader of partition (k mod partitions), run `CONTROL kill NODE` (which
// kill -9s that broker and prints `killed-at-ms T`, the instant of its kill -9: T is not taken
// before the control script starts, whose start-up takes tens of milliseconds during which
// the old leader still acknowledges), and wait until every partition that node led has
// acknowledged a record produced after T: that wait is the failover time of the kill
// (the last of its partitions to recover; the first is printed too). Then `CONTROL start NODE`
// restarts the broker. Prints one line per kill and, at the end, p50/p99/max and the
// producer's error count. Everything is bounded: a kill whose partitions do not recover in
// 60 s is reported as a timeout.
import java.util.*;
import java.util.concurrent.*;
import java.util.concurrent.atomic.*;
import org.apache.kafka.clients.admin.*;
import org.apache.kafka.clients.producer.*;
import org.apache.kafka.common.*;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public class Failover {
    static final ConcurrentHashMap<Integer, Long> firstAckAfter = new ConcurrentHashMap<>();
    /** While a kill is measured: every acknowledgement as {partition, producedAt, ackedAt}. */
    static final ConcurrentLinkedQueue<long[]> acks = new ConcurrentLinkedQueue<>();
    static volatile boolean measuring = false;
    static final AtomicLong errors = new AtomicLong(), acked = new AtomicLong();

    public static void main(String[] a) throws Exception {
        String boot = a[0], topic = a[1], control = a[4];
        int rate = Integer.parseInt(a[2]), kills = Integer.parseInt(a[3]);
        Properties ap = new Properties();
        ap.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, boot);
        ap.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "5000");
        ap.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "10000");
        Properties pp = new Properties();
        pp.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, boot);
        pp.put(ProducerConfig.ACKS_CONFIG, "all");
        pp.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "true");
        pp.put(ProducerConfig.LINGER_MS_CONFIG, "1");
        pp.put(ProducerConfig.REQUEST_TIMEOUT_MS_CONFIG, "5000");
        pp.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, "120000");
        pp.put(ProducerConfig.RETRY_BACKOFF_MS_CONFIG, "20");
        pp.put(ProducerConfig.METADATA_MAX_AGE_CONFIG, "5000");
        List<Long> times = new ArrayList<>();
        int timeouts = 0;
        try (Admin admin = Admin.create(ap);
             KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(pp, new ByteArraySerializer(), new ByteArraySerializer())) {
            int parts = admin.describeTopics(List.of(topic)).allTopicNames().get(30, TimeUnit.SECONDS).get(topic).partitions().size();
            AtomicBoolean stop = new AtomicBoolean();
            Thread pump = new Thread(() -> pump(producer, topic, parts, rate, stop));
            pump.start();
            try {
                for (int k = 0; k < kills; k++) {
                    Map<Integer, Integer> leaders = waitHealthy(admin, topic, 120_000);
                    int victim = leaders.get(k % parts);
                    Set<Integer> led = new HashSet<>();
                    leaders.forEach((p, l) -> { if (l == victim) led.add(p); });
                    firstAckAfter.clear();
                    acks.clear();
                    measuring = true;
                    long t = killedAtMs(run(control, "kill", victim));
                    long deadline = t + 60_000;
                    while (System.currentTimeMillis() < deadline && !firstAckAfter.keySet().containsAll(led)) {
                        for (long[] ack; (ack = acks.poll()) != null; )
                            if (ack[1] > t) firstAckAfter.merge((int) ack[0], ack[2], Long::min);
                        Thread.sleep(2);
                    }
                    measuring = false;
                    if (firstAckAfter.keySet().containsAll(led)) {
                        long last = led.stream().mapToLong(firstAckAfter::get).max().getAsLong() - t;
                        long first = led.stream().mapToLong(firstAckAfter::get).min().getAsLong() - t;
                        times.add(last);
                        System.out.printf("kill %d: node %d led %s: first partition back after %d ms, all after %d ms%n", k + 1, victim, led, first, last);
                    } else {
                        timeouts++;
                        System.out.printf("kill %d: node %d led %s: TIMEOUT (60 s)%n", k + 1, victim, led);
                    }
                    run(control, "start", victim);
                }
            } finally {
                stop.set(true);
                pump.join(30_000);
            }
            producer.flush();
        }
        Collections.sort(times);
        System.out.printf("failover ms over %d kills: p50 %s p99 %s max %s; timeouts %d; acked %d; producer errors %d%n",
            times.size(), pct(times, 0.5), pct(times, 0.99), times.isEmpty() ? "-" : times.get(times.size() - 1),
            timeouts, acked.get(), errors.get());
    }

    static String pct(List<Long> s, double q) {
        if (s.isEmpty()) return "-";
        return String.valueOf(s.get(Math.min(s.size() - 1, (int) Math.ceil(q * s.size()) - 1)));
    }

    static void pump(KafkaProducer<byte[], byte[]> producer, String topic, int parts, int rate, AtomicBoolean stop) {
        long start = System.nanoTime(), n = 0;
        byte[] value = new byte[1024];
        while (!stop.get()) {
            long due = start + n * 1_000_000_000L / rate;
            long wait = due - System.nanoTime();
            if (wait > 0) { LockSupport_park(wait); continue; }
            int p = (int) (n % parts);
            long producedAt = System.currentTimeMillis();
            producer.send(new ProducerRecord<>(topic, p, null, value), (md, e) -> {
                if (e != null) { errors.incrementAndGet(); return; }
                acked.incrementAndGet();
                if (measuring) acks.add(new long[] {p, producedAt, System.currentTimeMillis()});
            });
            n++;
        }
    }

    static void LockSupport_park(long nanos) {
        java.util.concurrent.locks.LockSupport.parkNanos(Math.min(nanos, 1_000_000L));
    }

    /** partition → leader once every partition has a leader and a full ISR. */
    static Map<Integer, Integer> waitHealthy(Admin admin, String topic, long ms) throws Exception {
        long deadline = System.currentTimeMillis() + ms;
        while (true) {
            try {
                TopicDescription d = admin.describeTopics(List.of(topic)).allTopicNames().get(10, TimeUnit.SECONDS).get(topic);
                Map<Integer, Integer> m = new HashMap<>();
                boolean ok = true;
                for (TopicPartitionInfo p : d.partitions()) {
                    if (p.leader() == null || p.leader().id() < 0 || p.isr().size() < p.replicas().size()) ok = false;
                    else m.put(p.partition(), p.leader().id());
                }
                if (ok) return m;
            } catch (Exception e) {
                // a broker just restarted: ask again
            }
            if (System.currentTimeMillis() > deadline) throw new RuntimeException("cluster not healthy after " + ms + " ms");
            Thread.sleep(200);
        }
    }

    /** Runs `CONTROL VERB NODE`; returns what it printed on stdout. */
    static String run(String control, String verb, int node) throws Exception {
        Process p = new ProcessBuilder("bash", control, verb, String.valueOf(node))
            .redirectError(ProcessBuilder.Redirect.INHERIT).start();
        String out = new String(p.getInputStream().readAllBytes());
        if (!p.waitFor(120, TimeUnit.SECONDS) || p.exitValue() != 0) throw new RuntimeException(control + " " + verb + " " + node + " failed");
        return out;
    }

    /** The `killed-at-ms T` line of the control script's kill. */
    static long killedAtMs(String out) {
        for (String line : out.split("\n"))
            if (line.startsWith("killed-at-ms ")) return Long.parseLong(line.substring(13).trim());
        throw new RuntimeException("the control script's kill printed no killed-at-ms line: " + out);
    }
}
