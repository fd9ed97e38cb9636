// Drives the APIs ACLs guard with Kafka's Java Admin client, printing one line per call:
// `NAME OK [detail]` or `NAME <exception class>`; used by test_acl.py.
// Usage: AclAdmin BOOTSTRAP CLIENT_PROPERTIES probe TOPIC GROUP TRANSACTIONAL_ID [BROKER_ID]
//        AclAdmin BOOTSTRAP CLIENT_PROPERTIES acls PRINCIPAL TOPIC
import java.io.FileInputStream;
import java.util.Collection;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.Callable;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AlterConfigOp;
import org.apache.kafka.clients.admin.ConfigEntry;
import org.apache.kafka.clients.admin.DescribeClusterOptions;
import org.apache.kafka.clients.admin.NewPartitions;
import org.apache.kafka.clients.admin.RecordsToDelete;
import org.apache.kafka.common.ElectionType;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.acl.AccessControlEntry;
import org.apache.kafka.common.acl.AccessControlEntryFilter;
import org.apache.kafka.common.acl.AclBinding;
import org.apache.kafka.common.acl.AclBindingFilter;
import org.apache.kafka.common.acl.AclOperation;
import org.apache.kafka.common.acl.AclPermissionType;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.resource.PatternType;
import org.apache.kafka.common.resource.ResourcePattern;
import org.apache.kafka.common.resource.ResourcePatternFilter;
import org.apache.kafka.common.resource.ResourceType;

public class AclAdmin {
    static void call(String name, Callable<Object> c) {
        try {
            Object detail = c.call();
            System.out.println(name + " OK" + (detail == null ? "" : " " + detail));
        } catch (ExecutionException e) {
            System.out.println(name + " " + e.getCause().getClass().getSimpleName());
        } catch (Exception e) {
            System.out.println(name + " " + e.getClass().getSimpleName());
        }
        System.out.flush();
    }

    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        try (FileInputStream in = new FileInputStream(args[1])) {
            props.load(in);
        }
        props.put("bootstrap.servers", args[0]);
        props.put("request.timeout.ms", "15000");
        props.put("default.api.timeout.ms", "20000");
        try (Admin admin = Admin.create(props)) {
            if (args[2].equals("probe")) {
                probe(admin, args[3], args[4], args[5], args.length > 6 ? Integer.parseInt(args[6]) : 0);
            } else {
                acls(admin, args[3], args[4]);
            }
        }
    }

    static void probe(Admin admin, String topic, String group, String txn, int broker) {
        long s = 30;
        TopicPartition tp = new TopicPartition(topic, 0);
        ConfigResource t = new ConfigResource(ConfigResource.Type.TOPIC, topic);
        ConfigResource b = new ConfigResource(ConfigResource.Type.BROKER, Integer.toString(broker));
        call("describeConfigsTopic", () -> admin.describeConfigs(List.of(t)).all().get(s, TimeUnit.SECONDS).size());
        call("describeConfigsBroker", () -> admin.describeConfigs(List.of(b)).all().get(s, TimeUnit.SECONDS).size());
        AlterConfigOp set = new AlterConfigOp(new ConfigEntry("retention.ms", "600000"), AlterConfigOp.OpType.SET);
        call("incrementalAlterConfigs", () -> admin.incrementalAlterConfigs(Map.of(t, List.of(set))).all().get(s, TimeUnit.SECONDS));
        call("createPartitions", () -> admin.createPartitions(Map.of(topic, NewPartitions.increaseTo(2))).all().get(s, TimeUnit.SECONDS));
        call("deleteRecords", () -> admin.deleteRecords(Map.of(tp, RecordsToDelete.beforeOffset(0))).all().get(s, TimeUnit.SECONDS));
        call("deleteConsumerGroupOffsets", () -> admin.deleteConsumerGroupOffsets(group, Set.of(tp)).all().get(s, TimeUnit.SECONDS));
        call("describeLogDirs", () -> admin.describeLogDirs(List.of(broker)).allDescriptions().get(s, TimeUnit.SECONDS).size());
        call("electLeaders", () -> admin.electLeaders(ElectionType.PREFERRED, Set.of(tp)).all().get(s, TimeUnit.SECONDS));
        call("describeClusterOperations", () -> {
            Set<AclOperation> ops = admin.describeCluster(new DescribeClusterOptions().includeAuthorizedOperations(true))
                .authorizedOperations().get(s, TimeUnit.SECONDS);
            return ops == null ? "null" : new java.util.TreeSet<>(ops.stream().map(Object::toString).toList());
        });
        call("describeTransactions", () -> admin.describeTransactions(List.of(txn)).all().get(s, TimeUnit.SECONDS).size());
        call("listTransactions", () -> admin.listTransactions().all().get(s, TimeUnit.SECONDS).size());
    }

    static void acls(Admin admin, String principal, String topic) {
        long s = 30;
        AclBinding binding = new AclBinding(new ResourcePattern(ResourceType.TOPIC, topic, PatternType.LITERAL),
            new AccessControlEntry(principal, "*", AclOperation.READ, AclPermissionType.ALLOW));
        AclBindingFilter filter = new AclBindingFilter(
            new ResourcePatternFilter(ResourceType.TOPIC, topic, PatternType.ANY), AccessControlEntryFilter.ANY);
        call("createAcls", () -> admin.createAcls(List.of(binding)).all().get(s, TimeUnit.SECONDS));
        call("describeAcls", () -> describe(admin.describeAcls(filter).values().get(s, TimeUnit.SECONDS)));
        call("deleteAcls", () -> describe(admin.deleteAcls(List.of(filter)).all().get(s, TimeUnit.SECONDS)));
        call("describeAclsAfter", () -> describe(admin.describeAcls(filter).values().get(s, TimeUnit.SECONDS)));
    }

    static String describe(Collection<AclBinding> bindings) {
        return bindings.stream().map(a -> a.entry().principal() + ":" + a.entry().operation() + ":" + a.pattern().name())
            .sorted().toList().toString();
    }
}
