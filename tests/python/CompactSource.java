// A Kafka Connect source connector for test_compaction_apps.py: its one task writes records
// "pos=<n> gen=<generation>" to the topic `topic`, one every 20 ms, with the source offset
// {"pos": n} under the source partition {"src": "pos"}, and starts at the committed offset + 1
// (0 without one). `generation` is any string of the connector's config, so the records show
// which config the running task got.
package sluicetest;

import java.util.HashMap;
import java.util.List;
import java.util.Map;

import org.apache.kafka.common.config.ConfigDef;
import org.apache.kafka.connect.connector.Task;
import org.apache.kafka.connect.data.Schema;
import org.apache.kafka.connect.source.SourceConnector;
import org.apache.kafka.connect.source.SourceRecord;
import org.apache.kafka.connect.source.SourceTask;

public class CompactSource extends SourceConnector {
    private Map<String, String> props;

    @Override
    public void start(Map<String, String> p) {
        props = new HashMap<>(p);
    }

    @Override
    public Class<? extends Task> taskClass() {
        return PosTask.class;
    }

    @Override
    public List<Map<String, String>> taskConfigs(int maxTasks) {
        return List.of(new HashMap<>(props));
    }

    @Override
    public void stop() {
    }

    @Override
    public ConfigDef config() {
        return new ConfigDef()
            .define("topic", ConfigDef.Type.STRING, ConfigDef.Importance.HIGH, "target topic")
            .define("generation", ConfigDef.Type.STRING, "", ConfigDef.Importance.LOW, "a config version");
    }

    @Override
    public String version() {
        return "1";
    }

    public static class PosTask extends SourceTask {
        private static final Map<String, String> PARTITION = Map.of("src", "pos");
        private String topic;
        private String gen;
        private long pos;

        @Override
        public String version() {
            return "1";
        }

        @Override
        public void start(Map<String, String> p) {
            topic = p.get("topic");
            gen = p.get("generation");
            Map<String, Object> off = context.offsetStorageReader().offset(PARTITION);
            pos = off == null ? 0 : ((Number) off.get("pos")).longValue() + 1;
        }

        @Override
        public List<SourceRecord> poll() throws InterruptedException {
            Thread.sleep(20);
            SourceRecord r = new SourceRecord(PARTITION, Map.of("pos", pos), topic, 0, Schema.STRING_SCHEMA, "p",
                Schema.STRING_SCHEMA, "pos=" + pos + " gen=" + gen);
            pos++;
            return List.of(r);
        }

        @Override
        public void stop() {
        }
    }
}
