// Adds, describes and deletes SCRAM credentials with Kafka's Java Admin client (what
// kafka-configs --entity-type users does), printing one line per answer; used by
// test_security.py. Args: bootstrap user password.
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.ScramCredentialInfo;
import org.apache.kafka.clients.admin.ScramMechanism;
import org.apache.kafka.clients.admin.UserScramCredentialDeletion;
import org.apache.kafka.clients.admin.UserScramCredentialUpsertion;
import org.apache.kafka.clients.admin.UserScramCredentialsDescription;

public class ScramUsers {
    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        props.put("bootstrap.servers", args[0]);
        props.put("request.timeout.ms", "20000");
        String user = args[1];
        try (Admin admin = Admin.create(props)) {
            admin.alterUserScramCredentials(List.of(
                new UserScramCredentialUpsertion(user, new ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 8192), args[2]),
                new UserScramCredentialUpsertion(user, new ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096), args[2])
            )).all().get(30, TimeUnit.SECONDS);
            System.out.println("altered " + user);
            describe(admin, user);
            admin.alterUserScramCredentials(List.of(new UserScramCredentialDeletion(user, ScramMechanism.SCRAM_SHA_512)))
                .all().get(30, TimeUnit.SECONDS);
            describe(admin, user);
            try {
                admin.alterUserScramCredentials(List.of(new UserScramCredentialDeletion("nobody", ScramMechanism.SCRAM_SHA_512)))
                    .all().get(30, TimeUnit.SECONDS);
                System.out.println("delete nobody: ok");
            } catch (ExecutionException e) {
                System.out.println("delete nobody: " + e.getCause().getClass().getSimpleName());
            }
        }
    }

    static void describe(Admin admin, String user) throws Exception {
        Map<String, UserScramCredentialsDescription> d =
            admin.describeUserScramCredentials(List.of(user)).all().get(30, TimeUnit.SECONDS);
        for (ScramCredentialInfo i : d.get(user).credentialInfos()) {
            System.out.println("describe " + user + " " + i.mechanism() + " " + i.iterations());
        }
    }
}
