//! DescribeConfigs (key 32), versions 1–4: topic configs (set or default, with their broker
//! synonyms and sources) and the broker's configs.
//!
//! Contract: every topic config Kafka defines is listed (filtered by the requested keys);
//! a value set on the topic has source TOPIC_CONFIG (1), otherwise DEFAULT_CONFIG (5) with the
//! broker-level synonym; broker configs that come from sluice's configuration have source
//! STATIC_BROKER_CONFIG (4). A GROUP resource (any group name, as Kafka answers) lists Kafka
//! 4.4's group configs (KIP-848/932/1071): a value set on the group (IncrementalAlterConfigs)
//! has source DYNAMIC_GROUP_CONFIG (8) with the broker-level synonym after it, the others the
//! broker's value (STATIC_BROKER_CONFIG when sluice's config file sets it apart from Kafka's
//! default, else DEFAULT_CONFIG) under the broker synonym.
//! With an authorizer, a resource without DESCRIBE_CONFIGS (on the cluster for a broker) is
//! answered CLUSTER_/TOPIC_/GROUP_AUTHORIZATION_FAILED with no configs, after the others.

use super::{reply_now, respond, ApiSpec, Ctx, Reply};
use crate::frame::{decode_body, FrameError, Request};
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{ApiKey, DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use sluice_core::config::BrokerConfig;
use sluice_core::topic_config::{self, Kind};
use sluice_shard::metadata::acl::op;
use std::rc::Rc;

pub const SPEC: ApiSpec =
    ApiSpec { key: ApiKey::DescribeConfigs, name: "DescribeConfigs", min_version: 1, max_version: 4, handle };

pub const RESOURCE_TOPIC: i8 = 2;
pub const RESOURCE_BROKER: i8 = 4;
pub const RESOURCE_GROUP: i8 = 32;
const SOURCE_TOPIC: i8 = 1;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;
const SOURCE_DYNAMIC_GROUP: i8 = 8;

fn config_type(kind: Kind) -> i8 {
    match kind {
        Kind::Bool => 1,
        Kind::OneOf(_) => 2,
        Kind::Int { .. } => 3,
        Kind::Long { .. } => 5,
        Kind::Ratio => 6,
        Kind::ListOf(_) => 7,
    }
}

struct Entry {
    name: String,
    value: String,
    source: i8,
    synonyms: Vec<(String, String, i8)>,
    kind: i8,
    doc: &'static str,
    read_only: bool,
}

fn topic_entries(
    configs: &std::collections::BTreeMap<String, String>,
    broker: &std::collections::BTreeMap<String, String>,
) -> Vec<Entry> {
    topic_config::DEFS
        .iter()
        .map(|d| {
            let default = match broker.get(d.name) {
                Some(v) => (d.broker_synonym.to_string(), v.clone(), SOURCE_STATIC_BROKER),
                None => (d.broker_synonym.to_string(), d.default.to_string(), SOURCE_DEFAULT),
            };
            match configs.get(d.name) {
                Some(v) => Entry {
                    name: d.name.into(),
                    value: v.clone(),
                    source: SOURCE_TOPIC,
                    synonyms: vec![(d.name.into(), v.clone(), SOURCE_TOPIC), default],
                    kind: config_type(d.kind),
                    doc: d.doc,
                    read_only: false,
                },
                None => Entry {
                    name: d.name.into(),
                    value: default.1.clone(),
                    source: default.2,
                    synonyms: vec![default],
                    kind: config_type(d.kind),
                    doc: d.doc,
                    read_only: false,
                },
            }
        })
        .collect()
}

/// The broker's configs: those sluice's config file sets, then each topic config's broker
/// synonym (from `topic_defaults`, else Kafka's default).
fn broker_entries(
    c: &BrokerConfig,
    defaults: &std::collections::BTreeMap<String, String>,
    listen: String,
) -> Vec<Entry> {
    let mut out = fixed_broker_entries(c, listen);
    for d in topic_config::DEFS {
        if !out.iter().any(|e| e.name == d.broker_synonym) {
            let (value, source) = match defaults.get(d.name) {
                Some(v) => (v.clone(), SOURCE_STATIC_BROKER),
                None => (d.default.to_string(), SOURCE_DEFAULT),
            };
            out.push(Entry {
                name: d.broker_synonym.into(),
                value: value.clone(),
                source,
                synonyms: vec![(d.broker_synonym.into(), value, source)],
                kind: config_type(d.kind),
                doc: d.doc,
                read_only: source == SOURCE_STATIC_BROKER,
            });
        }
    }
    out
}

/// The broker configs that follow from sluice's own settings (read-only).
fn fixed_broker_entries(c: &BrokerConfig, listen: String) -> Vec<Entry> {
    let fixed = |name: &str, value: String, kind: i8, doc: &'static str| Entry {
        name: name.into(),
        value: value.clone(),
        source: SOURCE_STATIC_BROKER,
        synonyms: vec![(name.into(), value, SOURCE_STATIC_BROKER)],
        kind,
        doc,
        read_only: true,
    };
    vec![
        fixed("node.id", "0".into(), 3, "this broker's id"),
        fixed("broker.id", "0".into(), 3, "this broker's id"),
        fixed("listeners", format!("PLAINTEXT://{listen}"), 7, "sluice `listen`"),
        fixed("log.dirs", c.data_dir.display().to_string(), 2, "sluice `data_dir`"),
        fixed("num.partitions", c.num_partitions.to_string(), 3, "sluice `num_partitions`"),
        fixed(
            "auto.create.topics.enable",
            c.auto_create_topics_enable.to_string(),
            1,
            "sluice `auto_create_topics_enable`",
        ),
        fixed(
            "group.initial.rebalance.delay.ms",
            c.group_initial_rebalance_delay_ms.to_string(),
            3,
            "sluice `group_initial_rebalance_delay_ms`",
        ),
        fixed(
            "group.min.session.timeout.ms",
            c.group_min_session_timeout_ms.to_string(),
            3,
            "sluice `group_min_session_timeout_ms`",
        ),
        fixed(
            "group.max.session.timeout.ms",
            c.group_max_session_timeout_ms.to_string(),
            3,
            "sluice `group_max_session_timeout_ms`",
        ),
        fixed(
            "offsets.retention.minutes",
            c.offsets_retention_minutes.to_string(),
            3,
            "sluice `offsets_retention_minutes`",
        ),
        fixed(
            "offsets.topic.num.partitions",
            c.offsets_topic_num_partitions.to_string(),
            3,
            "sluice `offsets_topic_num_partitions`",
        ),
        fixed("default.replication.factor", "1".into(), 3, "one broker"),
    ]
}

/// The broker's value of a group config: sluice's setting where it has one (with its source),
/// else Kafka's default.
fn group_broker_value(c: &BrokerConfig, d: &topic_config::Def) -> (String, i8) {
    let b = sluice_shard::group_config::resolve(c, None);
    let mine = match d.name {
        "consumer.heartbeat.interval.ms" => Some(b.consumer_heartbeat_interval_ms.to_string()),
        "consumer.session.timeout.ms" => Some(b.consumer_session_timeout_ms.to_string()),
        "share.heartbeat.interval.ms" => Some(b.share_heartbeat_interval_ms.to_string()),
        "share.session.timeout.ms" => Some(b.share_session_timeout_ms.to_string()),
        "share.record.lock.duration.ms" => Some(b.share_record_lock_duration_ms.to_string()),
        "share.delivery.count.limit" => Some(b.share_delivery_count_limit.to_string()),
        "share.partition.max.record.locks" => Some(b.share_partition_max_record_locks.to_string()),
        "share.auto.offset.reset" => Some(b.share_auto_offset_reset),
        _ => None,
    };
    match mine {
        Some(v) if v != d.default => (v, SOURCE_STATIC_BROKER),
        _ => (d.default.to_string(), SOURCE_DEFAULT),
    }
}

/// A group's configs: its own (`set`) over the broker's values.
fn group_entries(c: &BrokerConfig, set: Option<&std::collections::BTreeMap<String, String>>) -> Vec<Entry> {
    topic_config::GROUP_DEFS
        .iter()
        .map(|d| {
            let (value, source) = group_broker_value(c, d);
            let broker = (d.broker_synonym.to_string(), value.clone(), source);
            let (value, source, synonyms) = match set.and_then(|s| s.get(d.name)) {
                Some(v) => {
                    (v.clone(), SOURCE_DYNAMIC_GROUP, vec![(d.name.into(), v.clone(), SOURCE_DYNAMIC_GROUP), broker])
                }
                None => (value, source, vec![broker]),
            };
            Entry {
                name: d.name.into(),
                value,
                source,
                synonyms,
                kind: config_type(d.kind),
                doc: d.doc,
                read_only: false,
            }
        })
        .collect()
}

fn handle(ctx: Rc<Ctx>, req: Request) -> LocalBoxFuture<'static, Result<Reply, FrameError>> {
    async move {
        let body: DescribeConfigsRequest = decode_body(&req)?;
        let shape = Shape { version: req.version, synonyms: body.include_synonyms, docs: body.include_documentation };
        // Kafka answers the resources it refused after the others (ConfigHelper).
        let authz = crate::authz::Authz::new(&ctx, &req);
        let deny =
            |r: &DescribeConfigsResource| authz.config_refusal(op::DESCRIBE_CONFIGS, r.resource_type, &r.resource_name);
        let (allowed, refused): (Vec<_>, Vec<_>) = body.resources.into_iter().partition(|r| deny(r).is_none());
        let refused: Vec<DescribeConfigsResult> = refused
            .into_iter()
            .map(|r| {
                let e = deny(&r).unwrap_or(ResponseError::ClusterAuthorizationFailed);
                DescribeConfigsResult::default()
                    .with_resource_type(r.resource_type)
                    .with_resource_name(r.resource_name)
                    .with_error_code(e.code())
                    .with_error_message(Some(StrBytes::from_static_str(crate::authz::denied_message(e))))
            })
            .collect();
        let results = allowed
            .into_iter()
            .map(|r| {
                let base = DescribeConfigsResult::default()
                    .with_resource_type(r.resource_type)
                    .with_resource_name(r.resource_name.clone());
                match entries_of(&ctx, r.resource_type, &r.resource_name) {
                    Err((code, message)) => {
                        base.with_error_code(code.code()).with_error_message(Some(StrBytes::from_string(message)))
                    }
                    Ok(entries) => base.with_error_code(0).with_configs(
                        entries
                            .into_iter()
                            .filter(|e| {
                                r.configuration_keys.as_ref().is_none_or(|keys| keys.iter().any(|k| **k == *e.name))
                            })
                            .map(|e| config_result(e, &shape))
                            .collect(),
                    ),
                }
            })
            .chain(refused)
            .collect();
        Ok(reply_now(respond(&req, &DescribeConfigsResponse::default().with_results(results))))
    }
    .boxed_local()
}

/// The configs of one resource, or the error and message it is answered with.
fn entries_of(ctx: &Ctx, resource_type: i8, name: &str) -> Result<Vec<Entry>, (ResponseError, String)> {
    match resource_type {
        RESOURCE_TOPIC => match ctx.shard.metadata().topics.get(name) {
            Some(t) => Ok(topic_entries(&t.configs, &ctx.shard.topic_defaults)),
            None => Err((ResponseError::UnknownTopicOrPartition, format!("topic {name} does not exist"))),
        },
        RESOURCE_BROKER if name.is_empty() || name == "0" => Ok(broker_entries(
            &ctx.shard.config,
            &ctx.shard.topic_defaults,
            format!("{}:{}", ctx.advertised_host, ctx.advertised_port),
        )),
        RESOURCE_BROKER => Err((ResponseError::InvalidRequest, format!("no broker {name}; this is broker 0"))),
        RESOURCE_GROUP if name.is_empty() => {
            Err((ResponseError::InvalidRequest, "Group name must not be empty".to_string()))
        }
        RESOURCE_GROUP => Ok(group_entries(&ctx.shard.config, ctx.shard.metadata().group_configs.get(name))),
        other => Err((ResponseError::InvalidRequest, format!("resource type {other} is not supported"))),
    }
}

/// What the request asked each config to carry.
struct Shape {
    version: i16,
    synonyms: bool,
    docs: bool,
}

fn config_result(e: Entry, shape: &Shape) -> DescribeConfigsResourceResult {
    let synonyms = if shape.synonyms {
        e.synonyms
            .into_iter()
            .map(|(n, val, s)| {
                DescribeConfigsSynonym::default()
                    .with_name(StrBytes::from_string(n))
                    .with_value(Some(StrBytes::from_string(val)))
                    .with_source(s)
            })
            .collect()
    } else {
        vec![]
    };
    DescribeConfigsResourceResult::default()
        .with_name(StrBytes::from_string(e.name))
        .with_value(Some(StrBytes::from_string(e.value)))
        .with_read_only(e.read_only)
        .with_config_source(e.source)
        .with_is_sensitive(false)
        .with_synonyms(synonyms)
        .with_config_type(if shape.version >= 3 { e.kind } else { 0 })
        .with_documentation(if shape.version >= 3 && shape.docs {
            Some(StrBytes::from_static_str(e.doc))
        } else {
            None
        })
}
