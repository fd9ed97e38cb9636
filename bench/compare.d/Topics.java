// Creates or deletes topics in one AdminClient call, for bench/compare (run as a single-file
// source program: java -cp 'libs/*' Topics.java BOOTSTRAP create NAME:PARTITIONS[:k=v,...]...
// or ... delete NAME...; -Drf=N sets the replication factor, default 1). Exits non-zero on any failure; an existing topic is an error too,
// so a run never measures leftovers. `... leaders NAME...` waits (at most 180 s) until every
// partition of the named topics has a leader in Metadata (after a broker restart).
import java.util.*;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.*;

public class Topics {
    public static void main(String[] args) throws Exception {
        if (args.length < 3) {
            System.err.println("usage: Topics BOOTSTRAP create NAME:PARTITIONS[:k=v,...]... | delete NAME... | leaders NAME...");
            System.exit(2);
        }
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        p.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "60000");
        p.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "120000");
        try (Admin admin = Admin.create(p)) {
            List<String> rest = Arrays.asList(args).subList(2, args.length);
            if (args[1].equals("create")) {
                List<NewTopic> topics = new ArrayList<>();
                for (String spec : rest) {
                    String[] f = spec.split(":", 3);
                    NewTopic t = new NewTopic(f[0], Integer.parseInt(f[1]), Short.parseShort(System.getProperty("rf", "1")));
                    if (f.length == 3 && !f[2].isEmpty()) {
                        Map<String, String> cfg = new HashMap<>();
                        for (String kv : f[2].split(",")) {
                            String[] x = kv.split("=", 2);
                            cfg.put(x[0], x[1]);
                        }
                        t.configs(cfg);
                    }
                    topics.add(t);
                }
                admin.createTopics(topics).all().get(120, TimeUnit.SECONDS);
                // Wait until the broker holds a log for every new partition (DescribeLogDirs):
                // Kafka shows leaders in Metadata well before its ReplicaManager has created the
                // logs (seconds for 1000 partitions), and produce/fetch answer NOT_LEADER meanwhile.
                Set<String> names = new HashSet<>();
                int want = 0;
                for (NewTopic t : topics) { names.add(t.name()); want += t.numPartitions(); }
                List<Integer> brokers = new ArrayList<>();
                for (var n : admin.describeCluster().nodes().get(60, TimeUnit.SECONDS)) brokers.add(n.id());
                long deadline = System.currentTimeMillis() + 180_000;
                while (true) {
                    int have = 0;
                    try {
                        for (var dirs : admin.describeLogDirs(brokers).allDescriptions().get(30, TimeUnit.SECONDS).values())
                            for (var dir : dirs.values())
                                for (var tp : dir.replicaInfos().keySet())
                                    if (names.contains(tp.topic())) have++;
                    } catch (Exception e) {
                        have = -1;
                    }
                    if (have >= want) break;
                    if (System.currentTimeMillis() > deadline)
                        throw new RuntimeException("only " + have + " of " + want + " partition logs after 180 s");
                    Thread.sleep(250);
                }
            } else if (args[1].equals("leaders")) {
                long deadline = System.currentTimeMillis() + 180_000;
                while (true) {
                    int missing = 0;
                    try {
                        for (var d : admin.describeTopics(rest).allTopicNames().get(30, TimeUnit.SECONDS).values())
                            for (var pi : d.partitions())
                                if (pi.leader() == null || pi.leader().isEmpty()) missing++;
                    } catch (Exception e) {
                        missing = -1;
                    }
                    if (missing == 0) break;
                    if (System.currentTimeMillis() > deadline)
                        throw new RuntimeException("partitions without a leader after 180 s: " + missing);
                    Thread.sleep(250);
                }
            } else if (args[1].equals("delete")) {
                admin.deleteTopics(rest).all().get(120, TimeUnit.SECONDS);
            } else {
                System.err.println("unknown command " + args[1]);
                System.exit(2);
            }
        }
    }
}
