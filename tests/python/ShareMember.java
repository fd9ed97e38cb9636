// A KafkaShareConsumer (KIP-932) for test_share_groups.py: subscribes to one topic in a share
// group and prints one line per record received: "REC <offset> <deliveryCount> <value>".
// Modes: "accept" (implicit acknowledgement: each poll accepts the previous one's records),
// "hold" (after the first records, prints HOLDING and never polls again: its acquisition
// locks must expire), "slow" (as accept, 50 records a poll and 200 ms of work after each),
// "sync" (explicit acknowledgement: 50 records a poll, each accepted, then commitSync; prints
// "ACKED <offset>..." when the broker answered the acknowledgements without error, else
// "ACKFAIL <offset>... <error>", then 100 ms of work), "commit" (as accept, and commitSync()
// before close: in implicit mode the Java client's close() does not accept the records of the
// last poll, it leaves them to be released with the session, on Kafka as on sluice), "renew"
// (explicit acknowledgement, one record a poll: the first record is held with RENEW
// acknowledgements (KIP-1222, ShareFetch/ShareAcknowledge v2) for holdMs, printing "HOLD
// <offset>" and "RENEWED <offset> <deliveryCount>" each time the client hands it back after a
// renewal, then accepted: "HELD-ACCEPTED <offset>" or "ACKFAIL <offset> <error>"; every other
// record is accepted), "limit1" (share.acquire.mode=record_limit (KIP-1206) with
// max.poll.records=1: prints "POLLED <n>" after each poll that returned records), "limit1hold"
// (as limit1, then holds its first record as "hold" does). Stops when the stop file exists or
// after maxMs; close() sends the acknowledgements made so far. An optional 7th argument is
// holdMs (renew mode, default 10000).
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Properties;
import org.apache.kafka.clients.consumer.AcknowledgeType;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaShareConsumer;
import org.apache.kafka.common.KafkaException;
import org.apache.kafka.common.TopicIdPartition;
import org.apache.kafka.common.serialization.StringDeserializer;

public class ShareMember {
    public static void main(String[] args) throws Exception {
        String bootstrap = args[0], topic = args[1], group = args[2], mode = args[3];
        Path stop = Path.of(args[4]);
        long maxMs = Long.parseLong(args[5]);
        long holdMs = args.length > 6 ? Long.parseLong(args[6]) : 10_000;
        boolean limit1 = mode.startsWith("limit1");
        Properties props = new Properties();
        props.put("bootstrap.servers", bootstrap);
        props.put("group.id", group);
        props.put("key.deserializer", StringDeserializer.class.getName());
        props.put("value.deserializer", StringDeserializer.class.getName());
        if (mode.equals("slow") || mode.equals("sync")) {
            props.put("max.poll.records", "50");
        }
        if (mode.equals("sync") || mode.equals("renew")) {
            props.put("share.acknowledgement.mode", "explicit");
        }
        if (mode.equals("renew") || limit1) {
            props.put("max.poll.records", "1");
        }
        if (limit1) {
            props.put("share.acquire.mode", "record_limit");
        }
        long end = System.currentTimeMillis() + maxMs;
        Renewal renewal = new Renewal(holdMs);
        try (KafkaShareConsumer<String, String> c = new KafkaShareConsumer<>(props)) {
            c.subscribe(List.of(topic));
            System.out.println("SUBSCRIBED");
            System.out.flush();
            while (System.currentTimeMillis() < end && !Files.exists(stop)) {
                ConsumerRecords<String, String> recs = c.poll(Duration.ofMillis(200));
                StringBuilder out = new StringBuilder();
                for (ConsumerRecord<String, String> r : recs) {
                    out.append("REC ").append(r.offset()).append(' ')
                       .append(r.deliveryCount().map(String::valueOf).orElse("0")).append(' ')
                       .append(r.value()).append('\n');
                }
                if (limit1 && !recs.isEmpty()) {
                    out.append("POLLED ").append(recs.count()).append('\n');
                }
                System.out.print(out);
                System.out.flush();
                if (mode.equals("renew")) {
                    for (ConsumerRecord<String, String> r : recs) {
                        renewal.handle(c, r);
                    }
                }
                if (mode.equals("sync") && !recs.isEmpty()) {
                    for (ConsumerRecord<String, String> r : recs) {
                        c.acknowledge(r);
                    }
                    String error = null;
                    try {
                        Map<TopicIdPartition, Optional<KafkaException>> res = c.commitSync();
                        if (res.isEmpty()) {
                            error = "no-result";
                        }
                        for (Optional<KafkaException> e : res.values()) {
                            if (e.isPresent()) {
                                error = e.get().getClass().getSimpleName();
                            }
                        }
                    } catch (KafkaException e) {
                        error = e.getClass().getSimpleName();
                    }
                    StringBuilder a = new StringBuilder(error == null ? "ACKED" : "ACKFAIL");
                    for (ConsumerRecord<String, String> r : recs) {
                        a.append(' ').append(r.offset());
                    }
                    if (error != null) {
                        a.append(' ').append(error);
                    }
                    System.out.println(a);
                    System.out.flush();
                    Thread.sleep(100);
                }
                if (mode.equals("slow") && !recs.isEmpty()) {
                    Thread.sleep(200);
                }
                if ((mode.equals("hold") || mode.equals("limit1hold")) && !recs.isEmpty()) {
                    System.out.println("HOLDING");
                    System.out.flush();
                    while (System.currentTimeMillis() < end && !Files.exists(stop)) {
                        Thread.sleep(100);
                    }
                    return;
                }
            }
            if (mode.equals("commit")) {
                c.commitSync();
            }
        }
        System.out.println("CLOSED");
        System.out.flush();
    }

    /** Renew mode: holds the first record with RENEW until holdMs passed, then accepts it. */
    static final class Renewal {
        final long holdMs;
        long held = -1;
        long since;
        boolean done;

        Renewal(long holdMs) {
            this.holdMs = holdMs;
        }

        void handle(KafkaShareConsumer<String, String> c, ConsumerRecord<String, String> r) {
            if (held < 0 && !done) {
                held = r.offset();
                since = System.currentTimeMillis();
                c.acknowledge(r, AcknowledgeType.RENEW);
                System.out.println("HOLD " + r.offset());
            } else if (r.offset() == held && !done) {
                System.out.println("RENEWED " + r.offset() + " " + r.deliveryCount().map(String::valueOf).orElse("0"));
                if (System.currentTimeMillis() - since < holdMs) {
                    c.acknowledge(r, AcknowledgeType.RENEW);
                } else {
                    c.acknowledge(r, AcknowledgeType.ACCEPT);
                    done = true;
                    String error = null;
                    try {
                        for (Optional<KafkaException> e : c.commitSync().values()) {
                            if (e.isPresent()) {
                                error = e.get().getClass().getSimpleName();
                            }
                        }
                    } catch (KafkaException e) {
                        error = e.getClass().getSimpleName();
                    }
                    System.out.println(error == null ? "HELD-ACCEPTED " + r.offset() : "ACKFAIL " + r.offset() + " " + error);
                }
            } else {
                c.acknowledge(r, AcknowledgeType.ACCEPT);
            }
            System.out.flush();
        }
    }
}
