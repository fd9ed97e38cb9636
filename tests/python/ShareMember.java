// A KafkaShareConsumer (KIP-932) for test_share_groups.py: subscribes to one topic in a share
// group and prints one line per record received: "REC <offset> <deliveryCount> <value>".
// Modes: "accept" (implicit acknowledgement: each poll accepts the previous one's records),
// "hold" (after the first records, prints HOLDING and never polls again: its acquisition
// locks must expire), "slow" (as accept, 50 records a poll and 200 ms of work after each),
// "sync" (explicit acknowledgement: 50 records a poll, each accepted, then commitSync; prints
// "ACKED <offset>..." when the broker answered the acknowledgements without error, else
// "ACKFAIL <offset>... <error>", then 100 ms of work), "commit" (as accept, and commitSync()
// before close: in implicit mode the Java client's close() does not accept the records of the
// last poll, it leaves them to be released with the session, on Kafka as on sluice). Stops when
// the stop file exists or after maxMs; close() sends the acknowledgements made so far.
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Properties;
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
        Properties props = new Properties();
        props.put("bootstrap.servers", bootstrap);
        props.put("group.id", group);
        props.put("key.deserializer", StringDeserializer.class.getName());
        props.put("value.deserializer", StringDeserializer.class.getName());
        if (mode.equals("slow") || mode.equals("sync")) {
            props.put("max.poll.records", "50");
        }
        if (mode.equals("sync")) {
            props.put("share.acknowledgement.mode", "explicit");
        }
        long end = System.currentTimeMillis() + maxMs;
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
                System.out.print(out);
                System.out.flush();
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
                if (mode.equals("hold") && !recs.isEmpty()) {
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
}
