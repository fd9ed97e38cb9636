// sluice compatibility scenario for Apache Kafka's Java client (KafkaProducer,
// KafkaConsumer, Admin).  Compiled by tests/compat/run against
// tests/.deps/kafka-libs/*:
//
//   java -cp OUT:tests/.deps/kafka-libs/* Compat HOST:PORT
//
// Prints one line per step, `compat: java <step> PASS|FAIL|SKIP <detail>`, and
// exits 0 whatever the results.  Every loop is bounded by a count and a deadline.

import java.time.Duration;
import java.util.*;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.*;
import org.apache.kafka.clients.consumer.*;
import org.apache.kafka.clients.producer.*;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

public class Compat {
    static final int TOTAL = 200, PARTITIONS = 3;
    static final String RETENTION = "3600000", MAX_MESSAGE_BYTES = "2000000", ALTERED = "7200000";
    static final long STEP_MS = 30_000;
    static final String[] CODECS = {"gzip", "snappy", "lz4", "zstd"};

    interface Step { String run() throws Exception; }

    static void report(String step, String status, String detail) {
        System.out.println(("compat: java " + step + " " + status + " " + detail.replaceAll("\\s+", " ")).trim());
        System.out.flush();
    }

    static void step(String name, Step s) {
        try {
            report(name, "PASS", s.run());
        } catch (Throwable t) {
            t.printStackTrace();
            Throwable c = t;
            while (c.getCause() != null && c instanceof java.util.concurrent.ExecutionException) c = c.getCause();
            report(name, "FAIL", c.getClass().getSimpleName() + ": " + c.getMessage());
        }
    }

    static String valueOf(int i, String codec) {
        return "java|" + i + "|" + codec + "|" + "x".repeat(i % 50);
    }

    final String bootstrap, topic, group;
    final Admin admin;
    final Map<Integer, String> want = new HashMap<>();

    Compat(String bootstrap, String topic) {
        this.bootstrap = bootstrap;
        this.topic = topic;
        this.group = topic + "-group";
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "30000");
        p.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "20000");
        admin = Admin.create(p);
    }

    String create() throws Exception {
        NewTopic nt = new NewTopic(topic, PARTITIONS, (short) 1)
            .configs(Map.of("retention.ms", RETENTION, "max.message.bytes", MAX_MESSAGE_BYTES));
        admin.createTopics(List.of(nt)).all().get(STEP_MS, TimeUnit.MILLISECONDS);
        long deadline = System.currentTimeMillis() + STEP_MS;
        String last = "";
        for (int n = 0; n < 100 && System.currentTimeMillis() < deadline; n++) {
            try {
                TopicDescription d = admin.describeTopics(List.of(topic)).allTopicNames()
                    .get(STEP_MS, TimeUnit.MILLISECONDS).get(topic);
                if (d.partitions().size() == PARTITIONS)
                    return PARTITIONS + " partitions, retention.ms=" + RETENTION + " max.message.bytes=" + MAX_MESSAGE_BYTES;
                last = "partitions=" + d.partitions().size();
            } catch (Exception e) {
                last = e.toString();
            }
            Thread.sleep(200);
        }
        throw new AssertionError("topic not described with " + PARTITIONS + " partitions: " + last);
    }

    String produce() throws Exception {
        int start = 0;
        for (int c = 0; c < CODECS.length; c++) {
            String codec = CODECS[c];
            int count = TOTAL / CODECS.length + (c < TOTAL % CODECS.length ? 1 : 0);
            Properties p = new Properties();
            p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
            p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
            p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
            p.put(ProducerConfig.COMPRESSION_TYPE_CONFIG, codec);
            p.put(ProducerConfig.LINGER_MS_CONFIG, "20");
            p.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, "30000");
            p.put(ProducerConfig.REQUEST_TIMEOUT_MS_CONFIG, "20000");
            p.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, "30000");
            // enable.idempotence and acks=all are the defaults; left unset on purpose.
            try (KafkaProducer<String, String> prod = new KafkaProducer<>(p)) {
                List<java.util.concurrent.Future<RecordMetadata>> futs = new ArrayList<>();
                for (int i = start; i < start + count; i++) {
                    want.put(i, valueOf(i, codec));
                    futs.add(prod.send(new ProducerRecord<>(topic, "k" + i, valueOf(i, codec))));
                }
                prod.flush();
                for (var f : futs) f.get(STEP_MS, TimeUnit.MILLISECONDS);
            } catch (Exception e) {
                throw new Exception(codec + ": " + e, e);
            }
            start += count;
        }
        return TOTAL + " msgs, default config (enable.idempotence=true acks=all) codecs=" + String.join(",", CODECS);
    }

    String consume() throws Exception {
        Properties p = new Properties();
        p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ConsumerConfig.GROUP_ID_CONFIG, group);
        p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        Map<Integer, String> got = new HashMap<>();
        try (KafkaConsumer<String, String> c = new KafkaConsumer<>(p)) {
            c.subscribe(List.of(topic));
            long deadline = System.currentTimeMillis() + STEP_MS;
            for (int n = 0; n < 1000 && got.size() < TOTAL && System.currentTimeMillis() < deadline; n++) {
                for (ConsumerRecord<String, String> r : c.poll(Duration.ofMillis(500))) {
                    int i = Integer.parseInt(r.value().split("\\|")[1]);
                    if (!r.key().equals("k" + i)) throw new AssertionError("key " + r.key() + " for message " + i);
                    got.put(i, r.value());
                }
            }
            if (!got.equals(want))
                throw new AssertionError("consumed " + got.size() + " distinct messages (want " + want.size() + ") or content differs");
            c.commitSync(Duration.ofMillis(STEP_MS));
            Set<TopicPartition> tps = new HashSet<>();
            for (int q = 0; q < PARTITIONS; q++) tps.add(new TopicPartition(topic, q));
            long sum = 0;
            for (var e : c.committed(tps, Duration.ofMillis(STEP_MS)).values()) if (e != null) sum += e.offset();
            if (sum != TOTAL) throw new AssertionError("committed offsets sum to " + sum + ", want " + TOTAL);
        }
        return got.size() + " msgs checked, group " + group + " committed " + TOTAL;
    }

    Map<String, String> describe() throws Exception {
        ConfigResource r = new ConfigResource(ConfigResource.Type.TOPIC, topic);
        Config cfg = admin.describeConfigs(List.of(r)).all().get(STEP_MS, TimeUnit.MILLISECONDS).get(r);
        Map<String, String> out = new HashMap<>();
        for (ConfigEntry e : cfg.entries()) out.put(e.name(), e.value());
        return out;
    }

    String configs() throws Exception {
        Map<String, String> cfg = describe();
        if (!RETENTION.equals(cfg.get("retention.ms")) || !MAX_MESSAGE_BYTES.equals(cfg.get("max.message.bytes")))
            throw new AssertionError("describe: retention.ms=" + cfg.get("retention.ms") + " max.message.bytes=" + cfg.get("max.message.bytes"));
        ConfigResource r = new ConfigResource(ConfigResource.Type.TOPIC, topic);
        admin.incrementalAlterConfigs(Map.of(r, List.of(new AlterConfigOp(new ConfigEntry("retention.ms", ALTERED), AlterConfigOp.OpType.SET))))
            .all().get(STEP_MS, TimeUnit.MILLISECONDS);
        cfg = describe();
        if (!ALTERED.equals(cfg.get("retention.ms")) || !MAX_MESSAGE_BYTES.equals(cfg.get("max.message.bytes")))
            throw new AssertionError("after incremental alter: retention.ms=" + cfg.get("retention.ms") + " max.message.bytes=" + cfg.get("max.message.bytes"));
        return "retention.ms=3600000 described; incremental SET retention.ms=" + ALTERED + " described";
    }

    long offset(OffsetSpec spec) throws Exception {
        TopicPartition tp = new TopicPartition(topic, 0);
        return admin.listOffsets(Map.of(tp, spec)).partitionResult(tp).get(STEP_MS, TimeUnit.MILLISECONDS).offset();
    }

    String deleteRecords() throws Exception {
        long hw = offset(OffsetSpec.latest());
        if (hw < 2) throw new AssertionError("partition 0 high watermark " + hw + ", need >= 2");
        long target = hw / 2;
        TopicPartition tp = new TopicPartition(topic, 0);
        DeletedRecords d = admin.deleteRecords(Map.of(tp, RecordsToDelete.beforeOffset(target)))
            .lowWatermarks().get(tp).get(STEP_MS, TimeUnit.MILLISECONDS);
        long low = offset(OffsetSpec.earliest());
        if (low != target || d.lowWatermark() != target)
            throw new AssertionError("after deleteRecords(" + target + "): low watermark " + d.lowWatermark() + ", ListOffsets earliest " + low);
        return "p0 deleted below " + target + " (hw " + hw + "); low watermark=" + d.lowWatermark() + ", ListOffsets earliest=" + low;
    }

    String deleteTopic() throws Exception {
        admin.deleteTopics(List.of(topic)).all().get(STEP_MS, TimeUnit.MILLISECONDS);
        long deadline = System.currentTimeMillis() + STEP_MS;
        for (int n = 0; n < 100 && System.currentTimeMillis() < deadline; n++) {
            if (!admin.listTopics().names().get(STEP_MS, TimeUnit.MILLISECONDS).contains(topic)) return "gone from listTopics";
            Thread.sleep(200);
        }
        throw new AssertionError(topic + " still listed after delete");
    }

    public static void main(String[] args) {
        String topic = args.length > 1 ? args[1] : "compat-java-" + ProcessHandle.current().pid();
        Compat c;
        try {
            c = new Compat(args[0], topic);
        } catch (Throwable t) {
            report("create", "FAIL", "client setup: " + t);
            return;
        }
        step("create", c::create);
        step("produce", c::produce);
        step("consume", c::consume);
        step("configs", c::configs);
        step("delete-records", c::deleteRecords);
        step("delete-topic", c::deleteTopic);
        c.admin.close(Duration.ofSeconds(5));
        System.exit(0);
    }
}
