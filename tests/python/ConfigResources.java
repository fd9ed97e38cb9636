// Describes a GROUP resource's configs and alters BROKER and GROUP configs with Kafka's Java
// Admin client, printing one line per answer; used by test_protocol_answers.py.
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AlterConfigOp;
import org.apache.kafka.clients.admin.AlterConfigsOptions;
import org.apache.kafka.clients.admin.Config;
import org.apache.kafka.clients.admin.ConfigEntry;
import org.apache.kafka.clients.admin.DescribeConfigsOptions;
import org.apache.kafka.common.config.ConfigResource;

public class ConfigResources {
    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        props.put("bootstrap.servers", args[0]);
        props.put("request.timeout.ms", "20000");
        String broker = args[1];
        try (Admin admin = Admin.create(props)) {
            ConfigResource group = new ConfigResource(ConfigResource.Type.GROUP, "cfg-group");
            Config c = admin.describeConfigs(List.of(group), new DescribeConfigsOptions().includeSynonyms(true))
                .all().get(30, TimeUnit.SECONDS).get(group);
            for (ConfigEntry e : c.entries()) {
                String syn = e.synonyms().isEmpty() ? "" : e.synonyms().get(0).name();
                System.out.println("describe " + e.name() + "=" + e.value() + " source=" + e.source() + " synonym=" + syn);
            }
            alter(admin, new ConfigResource(ConfigResource.Type.BROKER, broker), "auto.create.topics.enable", "false");
            alter(admin, new ConfigResource(ConfigResource.Type.BROKER, broker), "log.retention.ms", "100000");
            alter(admin, group, "consumer.session.timeout.ms", "50000");
            alter(admin, group, "no.such.group.config", "1");
        }
    }

    static void alter(Admin admin, ConfigResource r, String key, String value) throws Exception {
        AlterConfigOp op = new AlterConfigOp(new ConfigEntry(key, value), AlterConfigOp.OpType.SET);
        String answer;
        try {
            admin.incrementalAlterConfigs(Map.of(r, List.of(op)), new AlterConfigsOptions().validateOnly(true))
                .all().get(30, TimeUnit.SECONDS);
            answer = "ok";
        } catch (ExecutionException e) {
            answer = e.getCause().getClass().getSimpleName() + ": " + e.getCause().getMessage();
        }
        System.out.println("alter " + r.type() + " " + key + " -> " + answer);
    }
}
