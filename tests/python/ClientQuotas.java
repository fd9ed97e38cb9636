// Sets and describes client quotas with Kafka's Java Admin client (alterClientQuotas,
// describeClientQuotas: what kafka-configs --entity-type clients|users sends); used by
// test_quotas_request.py and test_quotas_cluster.py. Run by the java source launcher.
// Usage: ClientQuotas BOOTSTRAP set clients|users NAME KEY VALUE     (prints OK)
//        ClientQuotas BOOTSTRAP describe clients|users NAME          (prints KEY=VALUE lines)
// A failed call throws: the exit status is not 0 and the exception is on stderr.
import java.util.List;
import java.util.Map;
import java.util.Properties;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.common.quota.ClientQuotaAlteration;
import org.apache.kafka.common.quota.ClientQuotaEntity;
import org.apache.kafka.common.quota.ClientQuotaFilter;
import org.apache.kafka.common.quota.ClientQuotaFilterComponent;

public class ClientQuotas {
    public static void main(String[] a) throws Exception {
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, a[0]);
        p.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "30000");
        String type = a[2].equals("clients") ? ClientQuotaEntity.CLIENT_ID : ClientQuotaEntity.USER;
        ClientQuotaEntity entity = new ClientQuotaEntity(Map.of(type, a[3]));
        try (Admin admin = Admin.create(p)) {
            if (a[1].equals("set")) {
                ClientQuotaAlteration.Op op = new ClientQuotaAlteration.Op(a[4], Double.parseDouble(a[5]));
                admin.alterClientQuotas(List.of(new ClientQuotaAlteration(entity, List.of(op)))).all().get();
                System.out.println("OK");
            } else {
                ClientQuotaFilter filter =
                    ClientQuotaFilter.containsOnly(List.of(ClientQuotaFilterComponent.ofEntity(type, a[3])));
                Map<ClientQuotaEntity, Map<String, Double>> got = admin.describeClientQuotas(filter).entities().get();
                for (Map<String, Double> m : got.values()) {
                    for (Map.Entry<String, Double> e : m.entrySet()) {
                        System.out.println(e.getKey() + "=" + e.getValue());
                    }
                }
            }
        }
    }
}
