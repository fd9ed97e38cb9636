//! `sluice topic create|list|describe|delete|alter-config`.
//!
//! Contract: create/delete/alter-config print one confirmation line per topic; list and
//! describe print aligned tables (or JSON with `--json`). A topic the broker refuses makes the
//! command exit 1 after the other topics were handled, naming the Kafka error.

use super::client::{broker_ids, sb, topic_name, Cluster};
use super::output::{print, table, Json};
use super::{check, parse_kv, AdminError, CommonArgs, Result};
use clap::{Args, Subcommand};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::describe_configs_response::DescribeConfigsResourceResult;
use kafka_protocol::messages::incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig};
use kafka_protocol::messages::metadata_response::MetadataResponseTopic;
use kafka_protocol::messages::{
    BrokerId, CreateTopicsRequest, DeleteTopicsRequest, DescribeConfigsRequest, IncrementalAlterConfigsRequest,
};
use sluice_core::limits;
use std::collections::HashMap;

#[derive(Debug, Args)]
pub struct TopicArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(subcommand)]
    pub cmd: TopicCmd,
}

#[derive(Debug, Subcommand)]
pub enum TopicCmd {
    /// Create a topic.
    Create {
        name: String,
        /// Number of partitions [default: the broker's num_partitions]
        #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
        partitions: i32,
        /// Replication factor [default: the broker's default]
        #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
        replication_factor: i16,
        /// Topic config KEY=VALUE (repeatable)
        #[arg(long = "config", value_name = "KEY=VALUE")]
        configs: Vec<String>,
    },
    /// List topics.
    List {
        /// Leave out internal topics such as __consumer_offsets
        #[arg(long)]
        exclude_internal: bool,
    },
    /// Describe topics (all when none named): partitions, leaders, replicas, ISR, offline replicas, topic id, configs.
    Describe {
        names: Vec<String>,
        /// Show every config, not only the topic's overrides
        #[arg(long)]
        all_configs: bool,
    },
    /// Delete topics.
    Delete {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Change topic configs (IncrementalAlterConfigs).
    AlterConfig {
        name: String,
        /// Set KEY=VALUE (repeatable)
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Remove the override of KEY (repeatable)
        #[arg(long = "delete", value_name = "KEY")]
        delete: Vec<String>,
    },
}

pub fn run(args: TopicArgs) -> i32 {
    super::run("topic", move || async move {
        let json = args.common.json;
        let mut c = Cluster::connect(&args.common).await?;
        match args.cmd {
            TopicCmd::Create { name, partitions, replication_factor, configs } => {
                create(&mut c, json, name, partitions, replication_factor, configs).await
            }
            TopicCmd::List { exclude_internal } => list(&mut c, json, exclude_internal).await,
            TopicCmd::Describe { names, all_configs } => describe(&mut c, json, names, all_configs).await,
            TopicCmd::Delete { names } => delete(&mut c, json, names).await,
            TopicCmd::AlterConfig { name, set, delete } => alter(&mut c, name, set, delete).await,
        }
    })
}

/// Kafka's printed form of a topic id: URL-safe base64 without padding.
pub fn topic_id_text(id: &uuid::Uuid) -> String {
    super::output::base64(id.as_bytes()).trim_end_matches('=').replace('+', "-").replace('/', "_")
}

async fn create(
    c: &mut Cluster,
    json: bool,
    name: String,
    partitions: i32,
    rf: i16,
    configs: Vec<String>,
) -> Result<()> {
    if partitions == 0 || partitions < -1 {
        return Err(AdminError::Usage(format!("--partitions must be at least 1, got {partitions}")));
    }
    if rf == 0 || rf < -1 {
        return Err(AdminError::Usage(format!("--replication-factor must be at least 1, got {rf}")));
    }
    let mut cfgs = Vec::new();
    for kv in &configs {
        let (k, v) = parse_kv(kv, "--config")?;
        cfgs.push(CreatableTopicConfig::default().with_name(sb(&k)).with_value(Some(sb(&v))));
    }
    let topic = CreatableTopic::default()
        .with_name(topic_name(&name))
        .with_num_partitions(partitions)
        .with_replication_factor(rf)
        .with_configs(cfgs);
    let req =
        CreateTopicsRequest::default().with_topics(vec![topic]).with_timeout_ms(limits::CLIENT_REQUEST_TIMEOUT_MS);
    let resp = c.boot.call(&req, 7).await?;
    let r = resp.topics.first().ok_or_else(|| AdminError::Other("CreateTopics answer without the topic".into()))?;
    check(r.error_code, || format!("cannot create topic '{name}'"), r.error_message.as_deref())?;
    if json {
        print(&format!(
            "{}\n",
            Json::obj([
                ("topic", Json::str(&name)),
                ("topic_id", Json::str(topic_id_text(&r.topic_id))),
                ("partitions", Json::Int(r.num_partitions as i64)),
                ("replication_factor", Json::Int(r.replication_factor as i64)),
            ])
            .render()
        ));
    } else {
        print(&format!("Created topic {name}.\n"));
    }
    Ok(())
}

async fn list(c: &mut Cluster, json: bool, exclude_internal: bool) -> Result<()> {
    let md = c.metadata(None, false).await?;
    let mut topics: Vec<_> = md.topics.iter().filter(|t| !(exclude_internal && t.is_internal)).collect();
    topics.sort_by(|a, b| a.name.as_ref().map(|n| n.0.as_str()).cmp(&b.name.as_ref().map(|n| n.0.as_str())));
    let name = |t: &kafka_protocol::messages::metadata_response::MetadataResponseTopic| {
        t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default()
    };
    if json {
        let arr = topics
            .iter()
            .map(|t| {
                Json::obj([
                    ("topic", Json::str(name(t))),
                    ("topic_id", Json::str(topic_id_text(&t.topic_id))),
                    ("partitions", Json::Int(t.partitions.len() as i64)),
                    (
                        "replication_factor",
                        Json::Int(t.partitions.first().map(|p| p.replica_nodes.len()).unwrap_or(0) as i64),
                    ),
                    ("internal", Json::Bool(t.is_internal)),
                ])
            })
            .collect();
        print(&format!("{}\n", Json::Arr(arr).render()));
    } else {
        let rows: Vec<Vec<String>> = topics
            .iter()
            .map(|t| {
                vec![
                    name(t),
                    t.partitions.len().to_string(),
                    t.partitions.first().map(|p| p.replica_nodes.len()).unwrap_or(0).to_string(),
                    topic_id_text(&t.topic_id),
                ]
            })
            .collect();
        print(&table(&["TOPIC", "PARTITIONS", "REPLICATION-FACTOR", "TOPIC-ID"], &rows));
    }
    Ok(())
}

fn source_name(s: i8) -> &'static str {
    match s {
        1 => "DYNAMIC_TOPIC_CONFIG",
        2 => "DYNAMIC_BROKER_CONFIG",
        3 => "DYNAMIC_DEFAULT_BROKER_CONFIG",
        4 => "STATIC_BROKER_CONFIG",
        5 => "DEFAULT_CONFIG",
        6 => "DYNAMIC_BROKER_LOGGER_CONFIG",
        7 => "CLIENT_METRICS_CONFIG",
        8 => "GROUP_CONFIG",
        _ => "UNKNOWN",
    }
}

async fn describe(c: &mut Cluster, json: bool, names: Vec<String>, all_configs: bool) -> Result<()> {
    let md = c.metadata(if names.is_empty() { None } else { Some(&names) }, false).await?;
    let mut errs: Vec<AdminError> = Vec::new();
    let mut topics = Vec::new();
    for t in &md.topics {
        let name = t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default();
        if t.error_code != 0 {
            let e = AdminError::broker(format!("topic '{name}'"), t.error_code, None);
            errs.push(e);
            continue;
        }
        topics.push((name, t));
    }
    topics.sort_by(|a, b| a.0.cmp(&b.0));
    let configs = if topics.is_empty() { Default::default() } else { topic_configs(c, &topics, &mut errs).await? };
    let empty = Vec::new();
    if json {
        let arr = topics.iter().map(|(name, t)| topic_json(name, t, configs.get(name).unwrap_or(&empty))).collect();
        print(&format!("{}\n", Json::Arr(arr).render()));
    } else {
        let texts: Vec<String> = topics
            .iter()
            .map(|(name, t)| topic_text(name, t, configs.get(name).unwrap_or(&empty), all_configs))
            .collect();
        print(&texts.join("\n"));
    }
    super::finish("topic", errs)
}

/// Every config of each topic, sorted by name; a topic whose configs the broker refuses is
/// added to `errs`.
async fn topic_configs(
    c: &mut Cluster,
    topics: &[(String, &MetadataResponseTopic)],
    errs: &mut Vec<AdminError>,
) -> Result<HashMap<String, Vec<DescribeConfigsResourceResult>>> {
    let req = DescribeConfigsRequest::default().with_resources(
        topics
            .iter()
            .map(|(n, _)| {
                DescribeConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(sb(n))
                    .with_configuration_keys(None)
            })
            .collect(),
    );
    let resp = c.boot.call(&req, 4).await?;
    let mut configs = HashMap::new();
    for r in resp.results {
        if r.error_code != 0 {
            let e = AdminError::broker(
                format!("configs of topic '{}'", r.resource_name),
                r.error_code,
                r.error_message.as_deref(),
            );
            errs.push(e);
            continue;
        }
        let mut cfgs = r.configs;
        cfgs.sort_by(|a, b| a.name.cmp(&b.name));
        configs.insert(r.resource_name.to_string(), cfgs);
    }
    Ok(configs)
}

fn topic_json(name: &str, t: &MetadataResponseTopic, cfgs: &[DescribeConfigsResourceResult]) -> Json {
    let mut parts: Vec<_> = t.partitions.iter().collect();
    parts.sort_by_key(|p| p.partition_index);
    let ids = |v: &[BrokerId]| Json::Arr(v.iter().map(|b| Json::Int(b.0 as i64)).collect());
    let partitions = parts
        .iter()
        .map(|p| {
            Json::obj([
                ("partition", Json::Int(p.partition_index as i64)),
                ("leader", Json::Int(p.leader_id.0 as i64)),
                ("leader_epoch", Json::Int(p.leader_epoch as i64)),
                ("replicas", ids(&p.replica_nodes)),
                ("isr", ids(&p.isr_nodes)),
                ("offline", ids(&p.offline_replicas)),
            ])
        })
        .collect();
    let configs = cfgs
        .iter()
        .map(|cf| {
            Json::obj([
                ("name", Json::str(cf.name.to_string())),
                ("value", Json::opt_str(cf.value.as_ref().map(|v| v.to_string()))),
                ("source", Json::str(source_name(cf.config_source))),
                ("read_only", Json::Bool(cf.read_only)),
                ("sensitive", Json::Bool(cf.is_sensitive)),
            ])
        })
        .collect();
    Json::obj([
        ("topic", Json::str(name)),
        ("topic_id", Json::str(topic_id_text(&t.topic_id))),
        ("internal", Json::Bool(t.is_internal)),
        ("partitions", Json::Arr(partitions)),
        ("configs", Json::Arr(configs)),
    ])
}

/// A topic's header line, partition table and configs (the overrides, or all with
/// `all_configs`).
fn topic_text(
    name: &str,
    t: &MetadataResponseTopic,
    cfgs: &[DescribeConfigsResourceResult],
    all_configs: bool,
) -> String {
    let rf = t.partitions.first().map(|p| p.replica_nodes.len()).unwrap_or(0);
    let mut out = format!(
        "Topic: {name}  TopicId: {}  PartitionCount: {}  ReplicationFactor: {rf}{}\n",
        topic_id_text(&t.topic_id),
        t.partitions.len(),
        if t.is_internal { "  Internal: true" } else { "" }
    );
    let mut parts: Vec<_> = t.partitions.iter().collect();
    parts.sort_by_key(|p| p.partition_index);
    let rows: Vec<Vec<String>> = parts
        .iter()
        .map(|p| {
            vec![
                p.partition_index.to_string(),
                p.leader_id.0.to_string(),
                broker_ids(&p.replica_nodes),
                broker_ids(&p.isr_nodes),
                if p.offline_replicas.is_empty() { "-".to_string() } else { broker_ids(&p.offline_replicas) },
            ]
        })
        .collect();
    out.push_str(&table(&["PARTITION", "LEADER", "REPLICAS", "ISR", "OFFLINE"], &rows));
    let cfgs: Vec<_> = cfgs.iter().filter(|cf| all_configs || cf.config_source == 1).collect();
    if cfgs.is_empty() {
        out.push_str("Configs: no overrides (--all-configs shows every config)\n");
        return out;
    }
    let rows: Vec<Vec<String>> = cfgs
        .iter()
        .map(|cf| {
            let value = if cf.is_sensitive {
                "(sensitive)".to_string()
            } else {
                cf.value.as_ref().map(|v| v.to_string()).unwrap_or_else(|| "(null)".into())
            };
            vec![cf.name.to_string(), value, source_name(cf.config_source).to_string()]
        })
        .collect();
    out.push_str(&table(&["CONFIG", "VALUE", "SOURCE"], &rows));
    out
}

async fn delete(c: &mut Cluster, json: bool, names: Vec<String>) -> Result<()> {
    let req = DeleteTopicsRequest::default()
        .with_topic_names(names.iter().map(|n| topic_name(n)).collect())
        .with_timeout_ms(limits::CLIENT_REQUEST_TIMEOUT_MS);
    let resp = c.boot.call(&req, 5).await?;
    let mut errs: Vec<AdminError> = Vec::new();
    let mut results = Vec::new();
    for r in &resp.responses {
        let name = r.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default();
        if r.error_code != 0 {
            let e =
                AdminError::broker(format!("cannot delete topic '{name}'"), r.error_code, r.error_message.as_deref());
            results
                .push(Json::obj([("topic", Json::str(&name)), ("error", Json::str(super::error_name(r.error_code)))]));
            errs.push(e);
        } else {
            results.push(Json::obj([("topic", Json::str(&name)), ("error", Json::Null)]));
            if !json {
                print(&format!("Deleted topic {name}.\n"));
            }
        }
    }
    if json {
        print(&format!("{}\n", Json::Arr(results).render()));
    }
    super::finish("topic", errs)
}

async fn alter(c: &mut Cluster, name: String, set: Vec<String>, delete: Vec<String>) -> Result<()> {
    if set.is_empty() && delete.is_empty() {
        return Err(AdminError::Usage("alter-config needs at least one --set KEY=VALUE or --delete KEY".into()));
    }
    let mut ops = Vec::new();
    for kv in &set {
        let (k, v) = parse_kv(kv, "--set")?;
        ops.push(AlterableConfig::default().with_name(sb(&k)).with_config_operation(0).with_value(Some(sb(&v))));
    }
    for k in &delete {
        ops.push(AlterableConfig::default().with_name(sb(k)).with_config_operation(1).with_value(None));
    }
    let req = IncrementalAlterConfigsRequest::default().with_resources(vec![AlterConfigsResource::default()
        .with_resource_type(2)
        .with_resource_name(sb(&name))
        .with_configs(ops)]);
    let resp = c.boot.call(&req, 1).await?;
    for r in &resp.responses {
        check(r.error_code, || format!("cannot alter configs of topic '{name}'"), r.error_message.as_deref())?;
    }
    print(&format!("Updated configs of topic {name}.\n"));
    Ok(())
}
