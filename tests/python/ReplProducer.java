// Contract: Apache Kafka's Java producer (idempotent, acks=all) for test_replication.py.
//
//   java -cp 'kafka-libs/*:.' ReplProducer BOOTSTRAP TOPIC PARTITIONS RATE STOP_FILE MAX_MS NAME
//
// Sends RATE records/s round-robin over partitions 0..PARTITIONS-1 until STOP_FILE exists or
// MAX_MS pass, then flushes (bounded) and exits. Record p's n-th value is "NAME|p|n" (the test's
// history_check.Value) and its key "k<n>". Prints, one line each, flushed:
//   ACK <partition> <offset> <value>     for every acknowledged record
//   ERR <partition> <value> <exception>  for every record the producer gave up on
//   DONE acked=<n> errors=<n>
import java.io.File;
import java.nio.charset.StandardCharsets;
import java.util.Properties;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public class ReplProducer {
    public static void main(String[] a) throws Exception {
        String boot = a[0], topic = a[1], name = a[6];
        int parts = Integer.parseInt(a[2]);
        int rate = Integer.parseInt(a[3]);
        File stop = new File(a[4]);
        long maxMs = Long.parseLong(a[5]);
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, boot);
        p.put(ProducerConfig.ACKS_CONFIG, "all");
        p.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "true");
        p.put(ProducerConfig.LINGER_MS_CONFIG, "5");
        p.put(ProducerConfig.REQUEST_TIMEOUT_MS_CONFIG, "10000");
        p.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, "120000");
        p.put(ProducerConfig.RETRY_BACKOFF_MS_CONFIG, "50");
        p.put(ProducerConfig.METADATA_MAX_AGE_CONFIG, "5000");
        AtomicLong acked = new AtomicLong(), errors = new AtomicLong();
        long[] seq = new long[parts];
        long start = System.nanoTime(), n = 0;
        try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(p, new ByteArraySerializer(), new ByteArraySerializer())) {
            while (!stop.exists() && (System.nanoTime() - start) / 1_000_000 < maxMs) {
                long due = start + n * 1_000_000_000L / rate;
                long wait = due - System.nanoTime();
                if (wait > 0) {
                    java.util.concurrent.locks.LockSupport.parkNanos(Math.min(wait, 5_000_000L));
                    continue;
                }
                int part = (int) (n % parts);
                long s = seq[part]++;
                String value = name + "|" + part + "|" + s;
                byte[] key = ("k" + s).getBytes(StandardCharsets.UTF_8);
                producer.send(new ProducerRecord<>(topic, part, key, value.getBytes(StandardCharsets.UTF_8)), (md, e) -> {
                    if (e != null) {
                        errors.incrementAndGet();
                        emit("ERR " + part + " " + value + " " + e.getClass().getSimpleName() + ":" + e.getMessage());
                    } else {
                        acked.incrementAndGet();
                        emit("ACK " + part + " " + md.offset() + " " + value);
                    }
                });
                n++;
            }
            producer.flush();
            producer.close(java.time.Duration.ofSeconds(30));
        }
        emit("DONE acked=" + acked.get() + " errors=" + errors.get());
    }

    static synchronized void emit(String line) {
        System.out.println(line);
        System.out.flush();
    }
}
