//! Connections for the admin CLI: one [`Conn`] per broker over [`crate::client`], with
//! the versions the broker announced in ApiVersions, and a [`Cluster`] that finds partition
//! leaders and group coordinators and connects to them.
//!
//! Contract: every call is bounded by the request timeout; a refused, unresolvable or lost
//! connection is [`AdminError::Connect`] (exit 3), a version the broker does not support is
//! [`AdminError::Other`] naming the API.

use super::{check, AdminError, Result};
use crate::client::{self, ClientError, Receiver, Sender};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::ListOffsetsRequest;
use kafka_protocol::messages::{
    ApiVersionsRequest, BrokerId, FindCoordinatorRequest, MetadataRequest, MetadataResponse, TopicName,
};
use kafka_protocol::protocol::{Request, StrBytes};
use sluice_core::limits;
use std::collections::BTreeMap;
use std::collections::HashMap;
use std::time::Duration;

/// One connection to one broker.
pub struct Conn {
    tx: Sender,
    rx: Receiver,
    addr: String,
    /// api key → (min, max) the broker supports.
    versions: HashMap<i16, (i16, i16)>,
    timeout: Duration,
}

fn lost(addr: &str, e: ClientError) -> AdminError {
    match e {
        ClientError::Io(e) => AdminError::Connect(format!("connection to {addr} failed: {e}")),
        ClientError::Protocol(m) => AdminError::Other(format!("{addr}: {m}")),
        e @ ClientError::Stalled { .. } => AdminError::Connect(format!("{addr}: {e}")),
    }
}

impl Conn {
    /// Connects and asks for the supported versions.
    pub async fn open(addr: &str, timeout: Duration) -> Result<Conn> {
        let (mut tx, rx) = match with_timeout(timeout, client::connect(addr)).await {
            Some(Ok(c)) => c,
            Some(Err(e)) => return Err(AdminError::Connect(format!("cannot connect to {addr}: {}", io_text(e)))),
            None => return Err(AdminError::Connect(format!("cannot connect to {addr}: timed out"))),
        };
        tx.set_client_id("sluice-admin");
        let mut conn = Conn { tx, rx, addr: addr.to_string(), versions: HashMap::new(), timeout };
        // v0 is answered by every broker generation.
        let resp = conn.call_at(&ApiVersionsRequest::default(), 0).await?;
        check(resp.error_code, || format!("ApiVersions from {addr}"), None)?;
        conn.versions = resp.api_keys.iter().map(|k| (k.api_key, (k.min_version, k.max_version))).collect();
        Ok(conn)
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The version to use for `R`: `want`, lowered to what the broker supports.
    pub fn version<R: Request>(&self, want: i16) -> Result<i16> {
        let name = api_name(R::KEY);
        let (min, max) = self
            .versions
            .get(&R::KEY)
            .copied()
            .ok_or_else(|| AdminError::Other(format!("{} does not support the {name} API", self.addr)))?;
        let v = want.min(max).min(R::VERSIONS.max);
        if v < min || v < R::VERSIONS.min {
            return Err(AdminError::Other(format!(
                "{} supports {name} v{min}-v{max}, this client needs v{want} or an older one it knows",
                self.addr
            )));
        }
        Ok(v)
    }

    /// Sends `req` at (at most) version `want` and waits for the answer.
    pub async fn call<R: Request>(&mut self, req: &R, want: i16) -> Result<R::Response> {
        let v = self.version::<R>(want)?;
        self.call_at(req, v).await
    }

    /// Like [`call`](Self::call) with an explicit extra allowance for long-poll or rebalance
    /// waits on top of the request timeout.
    pub async fn call_wait<R: Request>(&mut self, req: &R, want: i16, extra: Duration) -> Result<R::Response> {
        let v = self.version::<R>(want)?;
        let saved = self.timeout;
        self.timeout += extra;
        let r = self.call_at(req, v).await;
        self.timeout = saved;
        r
    }

    /// Sends without reading an answer (Produce with acks=0).
    pub async fn send_only<R: Request>(&mut self, req: &R, want: i16) -> Result<()> {
        let v = self.version::<R>(want)?;
        let addr = self.addr.clone();
        self.tx.send(req, v).await.map(|_| ()).map_err(|e| lost(&addr, e))
    }

    async fn call_at<R: Request>(&mut self, req: &R, v: i16) -> Result<R::Response> {
        let addr = self.addr.clone();
        let timeout = self.timeout;
        match with_timeout(timeout, client::call(&mut self.tx, &mut self.rx, req, v)).await {
            Some(r) => r.map_err(|e| lost(&addr, e)),
            None => Err(AdminError::Connect(format!("{addr}: no answer to {} within {timeout:?}", api_name(R::KEY)))),
        }
    }
}

/// `None` when `f` did not finish within `d`.
pub async fn with_timeout<T>(d: Duration, f: impl std::future::Future<Output = T>) -> Option<T> {
    futures_lite::future::or(async { Some(f.await) }, async {
        glommio::timer::sleep(d).await;
        None
    })
    .await
}

fn io_text(e: ClientError) -> String {
    match e {
        ClientError::Io(e) => e.to_string(),
        ClientError::Protocol(m) => m,
        e @ ClientError::Stalled { .. } => e.to_string(),
    }
}

fn api_name(key: i16) -> String {
    match kafka_protocol::messages::ApiKey::try_from(key) {
        Ok(k) => format!("{k:?}"),
        Err(_) => format!("API {key}"),
    }
}

/// The bootstrap connection plus lazily opened connections to other brokers.
pub struct Cluster {
    pub boot: Conn,
    pub timeout: Duration,
    nodes: HashMap<i32, String>,
    conns: HashMap<i32, Conn>,
}

impl Cluster {
    pub async fn connect(common: &super::CommonArgs) -> Result<Cluster> {
        let timeout = Duration::from_millis(common.request_timeout_ms.max(1));
        let boot = Conn::open(&common.bootstrap_server, timeout).await?;
        Ok(Cluster { boot, timeout, nodes: HashMap::new(), conns: HashMap::new() })
    }

    /// Metadata for `topics` (all topics when `None`); remembers the brokers.
    pub async fn metadata(&mut self, topics: Option<&[String]>, auto_create: bool) -> Result<MetadataResponse> {
        let req = MetadataRequest::default()
            .with_topics(topics.map(|ts| {
                ts.iter()
                    .map(|t| {
                        MetadataRequestTopic::default().with_name(Some(TopicName(StrBytes::from_string(t.clone()))))
                    })
                    .collect()
            }))
            .with_allow_auto_topic_creation(auto_create);
        let resp = self.boot.call(&req, 12).await?;
        check(resp.error_code, || "Metadata".to_string(), None)?;
        for b in &resp.brokers {
            self.nodes.insert(b.node_id.0, format!("{}:{}", b.host, b.port));
        }
        Ok(resp)
    }

    /// Every broker known from the last Metadata.
    pub fn node_ids(&self) -> Vec<i32> {
        let mut ids: Vec<i32> = self.nodes.keys().copied().collect();
        ids.sort();
        ids
    }

    /// The connection to broker `id` (known from Metadata or FindCoordinator).
    pub async fn node(&mut self, id: i32) -> Result<&mut Conn> {
        if self.nodes.get(&id).map(String::as_str) == Some(self.boot.addr()) {
            return Ok(&mut self.boot);
        }
        if !self.conns.contains_key(&id) {
            let addr = self
                .nodes
                .get(&id)
                .cloned()
                .ok_or_else(|| AdminError::Other(format!("broker {id} is not in the cluster metadata")))?;
            let conn = Conn::open(&addr, self.timeout).await?;
            self.conns.insert(id, conn);
        }
        Ok(self.conns.get_mut(&id).expect("just inserted"))
    }

    /// Finds the coordinator of `group` (retrying while it is being loaded or the offsets topic
    /// is being created) and returns its node id.
    pub async fn coordinator(&mut self, group: &str) -> Result<i32> {
        let req = FindCoordinatorRequest::default().with_key(StrBytes::from_string(group.to_string())).with_key_type(0);
        let mut attempt = 0;
        loop {
            let resp = self.boot.call(&req, 3).await?;
            if resp.error_code == 0 {
                self.nodes.insert(resp.node_id.0, format!("{}:{}", resp.host, resp.port));
                return Ok(resp.node_id.0);
            }
            // COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR
            attempt += 1;
            if !matches!(resp.error_code, 14..=16) || attempt >= limits::CLIENT_FIND_COORDINATOR_ATTEMPTS {
                return Err(AdminError::broker(
                    format!("FindCoordinator for group '{group}'"),
                    resp.error_code,
                    resp.error_message.as_deref(),
                ));
            }
            glommio::timer::sleep(Duration::from_millis(limits::CLIENT_RETRY_PAUSE_MS)).await;
        }
    }

    /// partition → leader node of `topic`, waiting briefly for a just auto-created topic to
    /// get leaders.
    pub async fn leaders(&mut self, topic: &str, auto_create: bool) -> Result<BTreeMap<i32, i32>> {
        let mut attempt = 0;
        loop {
            let md = self.metadata(Some(&[topic.to_string()]), auto_create).await?;
            let t = md
                .topics
                .first()
                .ok_or_else(|| AdminError::Other(format!("Metadata answer without topic '{topic}'")))?;
            if t.error_code == 0 && !t.partitions.is_empty() && t.partitions.iter().all(|p| p.leader_id.0 >= 0) {
                return Ok(t.partitions.iter().map(|p| (p.partition_index, p.leader_id.0)).collect());
            }
            // LEADER_NOT_AVAILABLE, or UNKNOWN_TOPIC_OR_PARTITION while being auto-created
            let retriable = t.error_code == 5 || t.error_code == 0 || (auto_create && t.error_code == 3);
            attempt += 1;
            if attempt >= limits::CLIENT_LEADER_ATTEMPTS || !retriable {
                let code = if t.error_code == 0 { 5 } else { t.error_code };
                return Err(AdminError::broker(format!("topic '{topic}'"), code, None));
            }
            glommio::timer::sleep(Duration::from_millis(limits::CLIENT_LEADER_PAUSE_MS)).await;
        }
    }

    /// ListOffsets of `partitions` of `topic` at `timestamp` (-2 earliest, -1 latest).
    pub async fn list_offsets(
        &mut self,
        topic: &str,
        leaders: &BTreeMap<i32, i32>,
        partitions: &[i32],
        timestamp: i64,
    ) -> Result<BTreeMap<i32, i64>> {
        let mut by_leader: BTreeMap<i32, Vec<ListOffsetsPartition>> = BTreeMap::new();
        for p in partitions {
            let leader = *leaders.get(p).ok_or_else(|| {
                AdminError::broker(format!("partition {topic}-{p}"), 3, Some("not in the topic's metadata"))
            })?;
            by_leader.entry(leader).or_default().push(
                ListOffsetsPartition::default()
                    .with_partition_index(*p)
                    .with_current_leader_epoch(-1)
                    .with_timestamp(timestamp),
            );
        }
        let mut out = BTreeMap::new();
        for (leader, parts) in by_leader {
            let req = ListOffsetsRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_isolation_level(0)
                .with_topics(vec![ListOffsetsTopic::default().with_name(topic_name(topic)).with_partitions(parts)]);
            let resp = self.node(leader).await?.call(&req, 7).await?;
            for t in resp.topics {
                for p in t.partitions {
                    check(p.error_code, || format!("ListOffsets of {topic}-{}", p.partition_index), None)?;
                    out.insert(p.partition_index, p.offset);
                }
            }
        }
        Ok(out)
    }

    /// Forgets a broker's connection (after it was lost or a coordinator moved).
    pub fn drop_node(&mut self, id: i32) {
        self.conns.remove(&id);
    }
}

pub fn topic_name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

pub fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

pub fn broker_ids(ids: &[BrokerId]) -> String {
    ids.iter().map(|b| b.0.to_string()).collect::<Vec<_>>().join(",")
}
