//! One shard: the state an executor owns, and the dispatcher of messages from other shards.
//!
//! Contract: a `Shard` lives on one executor thread (`!Send`). It alone opens, appends to,
//! reads and closes the logs of the partitions metadata assigns to it. Its metadata copy is
//! replaced whole by [`Shard::install`]; readers take an `Rc` to the current snapshot and never
//! hold a `RefCell` borrow across an `.await`. Installs on one shard run one at a time (a
//! semaphore taken before the first await), the first being the start-up recovery: a Publish
//! that arrives while the shard still recovers waits for it ([`Shard::recovered`]), so no
//! partition is ever opened twice and snapshots are installed in version order. An install
//! reports every partition it could not open ([`InstallError`]); shard 0 then rolls the
//! change back (`admin.rs`).

use crate::error::PartitionError;
use crate::metadata::MetadataSnapshot;
use crate::msg::{Envelope, ShardMsg};
use glommio::channels::channel_mesh::{Receivers, Senders};
use glommio::channels::shared_channel::ConnectedReceiver;
use sluice_core::config::BrokerConfig;
use sluice_core::{ShardId, TopicPartition};
use sluice_storage::format::partition_dir;
use sluice_storage::watermark::Watermark;
use sluice_storage::{LogConfig, PartitionLog};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;

/// An open log and the id of the topic it belongs to (a re-created topic gets a new id).
struct OwnedLog {
    topic_id: [u8; 16],
    log: Rc<PartitionLog>,
}

/// Partition logs opened at once by `install`.
const OPEN_CONCURRENCY: usize = sluice_core::limits::LOG_OPENS_IN_FLIGHT;

/// The partitions one shard could not open (or make durable) while installing a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallError {
    pub shard: ShardId,
    pub failed: Vec<(TopicPartition, PartitionError)>,
}

impl std::fmt::Display for InstallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut sep = "";
        for (tp, e) in &self.failed {
            write!(f, "{sep}cannot open partition {tp} on shard {}: {e}", self.shard)?;
            sep = "; ";
        }
        Ok(())
    }
}

impl std::error::Error for InstallError {}

/// A log's settings from its topic's configs (broker defaults, then Kafka's, where unset), and
/// the broker's `producer_id_expiration_ms`.
/// The id of the shard with this index (`0..n_shards`).
pub fn shard_id(index: usize) -> ShardId {
    ShardId(u16::try_from(index).expect("a shard index fits in u16 (the shard count is checked at start)"))
}

/// The storage settings of a partition log: the broker's, overridden by the topic's.
pub fn log_config(
    configs: &std::collections::BTreeMap<String, String>,
    broker: &std::collections::BTreeMap<String, String>,
    producer_id_expiration_ms: u64,
) -> LogConfig {
    let get = |k: &str| {
        sluice_core::topic_config::effective_with(configs, broker, k).and_then(|v| v.trim().parse::<i64>().ok())
    };
    let d = LogConfig::default();
    // A value below 1 counts as 1.
    let at_least_one = |v: i64| u64::try_from(v).unwrap_or(0).max(1);
    LogConfig {
        leader_epoch: d.leader_epoch,
        segment_bytes: get("segment.bytes").map(at_least_one).unwrap_or(d.segment_bytes),
        segment_ms: get("segment.ms").map(at_least_one).unwrap_or(d.segment_ms),
        index_interval_bytes: get("index.interval.bytes").map(at_least_one).unwrap_or(d.index_interval_bytes),
        // A topic whose cleanup.policy lacks `delete` (compact only) loses nothing to retention.
        retention_ms: if deletes(configs, broker) { get("retention.ms").unwrap_or(d.retention_ms) } else { -1 },
        retention_bytes: if deletes(configs, broker) {
            get("retention.bytes").unwrap_or(d.retention_bytes)
        } else {
            -1
        },
        producer_id_expiration_ms,
        file_delete_delay_ms: get("file.delete.delay.ms")
            .map(|v| u64::try_from(v).unwrap_or(0))
            .unwrap_or(d.file_delete_delay_ms),
    }
}

/// The topic's effective `cleanup.policy` names `policy`.
fn policy_has(
    configs: &std::collections::BTreeMap<String, String>,
    broker: &std::collections::BTreeMap<String, String>,
    policy: &str,
) -> bool {
    sluice_core::topic_config::effective_with(configs, broker, "cleanup.policy")
        .is_some_and(|v| v.split(',').any(|p| p.trim() == policy))
}

fn deletes(
    configs: &std::collections::BTreeMap<String, String>,
    broker: &std::collections::BTreeMap<String, String>,
) -> bool {
    policy_has(configs, broker, "delete")
}

/// The compaction settings of a topic whose `cleanup.policy` contains `compact`, else `None`.
pub fn compaction_config(
    configs: &std::collections::BTreeMap<String, String>,
    broker: &std::collections::BTreeMap<String, String>,
) -> Option<sluice_storage::compact::CompactionConfig> {
    if !policy_has(configs, broker, "compact") {
        return None;
    }
    let d = sluice_storage::compact::CompactionConfig::default();
    let get = |k: &str| sluice_core::topic_config::effective_with(configs, broker, k).map(str::trim);
    let long = |k: &str, default: i64| get(k).and_then(|v| v.parse::<i64>().ok()).unwrap_or(default);
    Some(sluice_storage::compact::CompactionConfig {
        min_cleanable_dirty_ratio: get("min.cleanable.dirty.ratio")
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(d.min_cleanable_dirty_ratio),
        min_compaction_lag_ms: long("min.compaction.lag.ms", d.min_compaction_lag_ms),
        max_compaction_lag_ms: long("max.compaction.lag.ms", d.max_compaction_lag_ms),
        delete_retention_ms: long("delete.retention.ms", d.delete_retention_ms),
        max_index_bytes: u64::try_from(long("segment.index.bytes", 0))
            .ok()
            .filter(|b| *b > 0)
            .unwrap_or(d.max_index_bytes),
    })
}

/// Counters this shard keeps about itself.
#[derive(Debug, Default)]
pub struct ShardStats {
    pub messages_sent: Cell<u64>,
    pub messages_received: Cell<u64>,
    pub truncated_bytes_at_open: Cell<u64>,
}

pub struct Shard {
    pub id: ShardId,
    pub n_shards: usize,
    pub config: BrokerConfig,
    data_dir: PathBuf,
    /// The previous run shut down cleanly: logs may trust their indexes.
    clean_start: bool,
    /// The broker's `topic_defaults`, normalised (validated at start).
    pub topic_defaults: std::collections::BTreeMap<String, String>,
    metadata: RefCell<Rc<MetadataSnapshot>>,
    logs: RefCell<HashMap<TopicPartition, OwnedLog>>,
    senders: Senders<Envelope>,
    /// Producer ids shard 0 may still hand out: [next, end).
    pub(crate) producer_ids: Cell<(i64, i64)>,
    /// Serialises metadata changes; used on shard 0 only.
    pub(crate) admin_lock: glommio::sync::Semaphore,
    /// Consumer groups coordinated by this shard.
    pub(crate) groups: crate::groups::coordinator::Coordinator,
    /// Transactional ids coordinated by this shard (and groups' staged transactional offsets).
    pub(crate) txns: crate::txn::coordinator::TxnCoordinator,
    /// Share groups this shard coordinates, share-partitions it owns, share sessions of its
    /// connections (KIP-932).
    pub(crate) share: crate::share::ShareState,
    /// Open and aborted transactions of the partitions this shard owns.
    pub(crate) txn_partitions: crate::txn::partition::Registry,
    /// 0 while running, 1 once shutdown began.
    stopping: Watermark,
    /// Taken by every install for its whole run: installs on this shard never overlap.
    install_lock: glommio::sync::Semaphore,
    /// 0 until the first install (start-up recovery) finished, then 1.
    recovered: Watermark,
    pub stats: ShardStats,
    /// This shard's replication runtime (brokers with peers; set once at start).
    replicas: RefCell<Option<Rc<crate::replica::Replicas>>>,
}

impl Shard {
    pub(crate) fn new(
        id: ShardId,
        n_shards: usize,
        config: BrokerConfig,
        snapshot: MetadataSnapshot,
        senders: Senders<Envelope>,
        clean_start: bool,
    ) -> Rc<Shard> {
        assert_eq!(senders.peer_id(), id.index(), "mesh peer id must equal the shard id");
        assert_eq!(senders.nr_consumers(), n_shards, "mesh size must equal the shard count");
        Rc::new(Shard {
            id,
            n_shards,
            data_dir: config.data_dir.clone(),
            clean_start,
            topic_defaults: config.topic_defaults().unwrap_or_default(),
            config,
            metadata: RefCell::new(Rc::new(snapshot)),
            logs: RefCell::new(HashMap::new()),
            senders,
            admin_lock: glommio::sync::Semaphore::new(1),
            producer_ids: Cell::new((0, 0)),
            groups: Default::default(),
            txns: Default::default(),
            share: Default::default(),
            txn_partitions: Default::default(),
            stopping: Watermark::new(0),
            install_lock: glommio::sync::Semaphore::new(1),
            recovered: Watermark::new(0),
            stats: ShardStats::default(),
            replicas: RefCell::new(None),
        })
    }

    /// This shard's replication runtime, when the broker has peers.
    pub fn replicas(&self) -> Option<Rc<crate::replica::Replicas>> {
        self.replicas.borrow().clone()
    }

    /// Installs the replication runtime (once, at start).
    pub fn set_replicas(&self, r: Rc<crate::replica::Replicas>) {
        assert!(self.replicas.borrow().is_none(), "one replication runtime per shard");
        *self.replicas.borrow_mut() = Some(r);
    }

    /// Whether the previous run shut down cleanly.
    pub fn clean_start(&self) -> bool {
        self.clean_start
    }

    /// The data directory.
    pub fn data_dir(&self) -> &std::path::Path {
        &self.data_dir
    }

    /// The current metadata snapshot.
    pub fn metadata(&self) -> Rc<MetadataSnapshot> {
        self.metadata.borrow().clone()
    }

    /// The log of an owned partition.
    pub fn log(&self, tp: &TopicPartition) -> Option<Rc<PartitionLog>> {
        self.logs.borrow().get(tp).map(|o| o.log.clone())
    }

    /// Size in bytes of every log this shard owns.
    pub fn log_sizes(&self) -> Vec<(TopicPartition, u64)> {
        self.logs.borrow().iter().map(|(tp, o)| (tp.clone(), o.log.size_bytes())).collect()
    }

    /// Partitions this shard has open.
    pub fn owned_partitions(&self) -> usize {
        self.logs.borrow().len()
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.get() > 0
    }

    /// Completes when shutdown begins.
    pub fn stopping(&self) -> impl std::future::Future<Output = ()> {
        let f = self.stopping.wait_for(1);
        async move {
            let _ = f.await;
        }
    }

    /// Completes once this shard's start-up recovery (its first install) has finished.
    pub fn recovered(&self) -> impl std::future::Future<Output = ()> {
        let f = self.recovered.wait_for(1);
        async move {
            let _ = f.await;
        }
    }

    pub(crate) fn begin_shutdown(&self) {
        if !self.is_stopping() {
            self.stopping.advance(1);
        }
    }

    /// Sends a message to another shard (in order with every other message to it).
    pub(crate) async fn send(&self, to: ShardId, msg: ShardMsg) -> Result<(), PartitionError> {
        debug_assert_ne!(to, self.id, "local work never crosses the mesh");
        self.stats.messages_sent.set(self.stats.messages_sent.get() + 1);
        let envelope = Envelope { sent: std::time::Instant::now(), msg };
        self.senders.send_to(to.index(), envelope).await.map_err(|_| PartitionError::ShuttingDown)
    }

    /// Installs a snapshot: opens logs newly owned here, closes and deletes logs this shard no
    /// longer owns (topic gone or re-created under a new id, or a partition beyond the topic's
    /// count after a rolled-back CreatePartitions). Every partition that cannot be opened is
    /// reported; the others stay installed. The first call is the start-up recovery; later
    /// calls wait for it and for each other.
    pub async fn install(&self, snapshot: MetadataSnapshot) -> Result<(), InstallError> {
        let _permit = self.install_lock.acquire_permit(1).await.expect("the install semaphore never closes");
        let result = self.install_exclusive(snapshot).await;
        if self.recovered.get() == 0 {
            self.recovered.advance(1);
        }
        result
    }

    async fn install_exclusive(&self, snapshot: MetadataSnapshot) -> Result<(), InstallError> {
        {
            let current = self.metadata.borrow();
            assert!(
                snapshot.version >= current.version,
                "metadata versions only move forward ({} < {})",
                snapshot.version,
                current.version
            );
        }
        let snapshot = Rc::new(snapshot);
        *self.metadata.borrow_mut() = snapshot.clone();
        self.drop_unowned(&snapshot).await;
        self.update_configs(&snapshot);
        let wanted = {
            let logs = self.logs.borrow();
            to_open(&snapshot, self.id, |tp| logs.contains_key(tp))
        };
        let (mut failed, opened_any) = self.open_logs(&snapshot, &wanted).await;
        // New partition directories become durable entries of the data dir with one fsync;
        // when it fails, none of them is known to survive a crash.
        if opened_any {
            if let Err(e) = sluice_storage::Disk::Real.sync_dir(&self.data_dir).await {
                let e = PartitionError::Storage(format!("fsync of the data directory: {e}"));
                fail_the_rest(&wanted, &mut failed, &e);
            }
        }
        self.open_replicas_of(&snapshot).await;
        if failed.is_empty() {
            Ok(())
        } else {
            Err(InstallError { shard: self.id, failed })
        }
    }

    /// Closes and deletes the logs no longer owned here under the same topic id.
    async fn drop_unowned(&self, snapshot: &MetadataSnapshot) {
        let gone: Vec<(TopicPartition, Rc<PartitionLog>)> = {
            let mut logs = self.logs.borrow_mut();
            let dead: Vec<TopicPartition> = logs
                .iter()
                .filter(|(tp, o)| !owns(snapshot, self.id, tp, &o.topic_id))
                .map(|(tp, _)| tp.clone())
                .collect();
            dead.into_iter().filter_map(|tp| logs.remove(&tp).map(|o| (tp, o.log))).collect()
        };
        for (tp, log) in gone {
            if let Some(r) = self.replicas() {
                if let Some(group) = r.group_of(&tp) {
                    r.close_replica(group);
                }
            }
            self.txn_partitions.remove(&tp);
            let _ = log.close().await;
            // Its name goes at once; its files are freed in small steps after the topic's
            // `file.delete.delay.ms` (`sluice_storage::reclaim`).
            let retired = log.retire_dir().await;
            drop(log);
            if let Err(e) = retired {
                tracing::warn!(partition = %tp, error = %e, "could not remove the directory of a deleted partition");
            }
        }
    }

    /// Opens the replicas of the current snapshot (see [`Shard::open_replicas_of`]) once the
    /// replication runtime is installed: the start-up recovery ran before it was.
    pub async fn open_replicas(&self) {
        let _permit = self.install_lock.acquire_permit(1).await.expect("the install semaphore never closes");
        let snapshot = self.metadata();
        self.open_replicas_of(&snapshot).await;
    }

    /// Makes every open log of a partition that is a Raft group (`PartitionState::
    /// raft_backed`: more than one replica, or a reassignment changed its replicas; this
    /// broker among them) the replica of its Raft group — topic number and partition — whose
    /// members are the group's origin voters. A single-replica partition's log that already
    /// holds batches is converted first (`replica::convert`). Logs of partitions created with
    /// one replica and never reassigned, and every log on a broker without a replication
    /// runtime, keep the direct path.
    async fn open_replicas_of(&self, snapshot: &MetadataSnapshot) {
        let Some(r) = self.replicas() else { return };
        let me = self.config.node_id;
        for (tp, group, members) in replicated(snapshot, me) {
            if r.group_of(&tp).is_some() {
                continue;
            }
            let Some(log) = self.log(&tp) else { continue };
            let members: Vec<sluice_core::cluster::NodeId> =
                members.into_iter().map(sluice_core::cluster::NodeId).collect();
            if let Err(e) = r.open_replica(log, tp.clone(), group, &members).await {
                tracing::error!(partition = %tp, %group, error = %e, "cannot open the partition's replica");
            }
        }
    }

    /// Gives the logs already open their topic's configs, which may have changed.
    fn update_configs(&self, snapshot: &MetadataSnapshot) {
        for (tp, o) in self.logs.borrow().iter() {
            if let Some(t) = snapshot.topics.get(&tp.topic) {
                let cfg = log_config(&t.configs, &self.topic_defaults, self.config.producer_id_expiration_ms);
                if o.log.config() != cfg {
                    o.log.set_config(cfg);
                }
            }
        }
    }

    /// Opens the `wanted` logs, several at a time (their I/O overlaps in io_uring), and loads
    /// the group state of `__consumer_offsets` partitions. Returns the partitions that failed
    /// and whether any log was opened.
    async fn open_logs(
        &self,
        snapshot: &MetadataSnapshot,
        wanted: &[(TopicPartition, [u8; 16])],
    ) -> (Vec<(TopicPartition, PartitionError)>, bool) {
        let mut failed = Vec::new();
        let mut opened_any = false;
        for chunk in wanted.chunks(OPEN_CONCURRENCY) {
            let opens = chunk.iter().map(|(tp, _)| {
                let dir = partition_dir(&self.data_dir, &tp.topic, tp.partition.0);
                let name = tp.to_string();
                let clean = self.clean_start;
                let cfg = snapshot
                    .topics
                    .get(&tp.topic)
                    .map(|t| log_config(&t.configs, &self.topic_defaults, self.config.producer_id_expiration_ms));
                async move { PartitionLog::open(&dir, &name, cfg.expect("wanted topics exist"), clean).await }
            });
            let opened = futures::future::join_all(opens).await;
            for ((tp, topic_id), result) in chunk.iter().zip(opened) {
                match result {
                    Ok((log, cut)) => {
                        opened_any = true;
                        if let Err(e) = self.adopt(tp, *topic_id, log, cut).await {
                            failed.push((tp.clone(), e));
                        }
                    }
                    Err(e) => {
                        tracing::error!(partition = %tp, error = %e, "cannot open partition log");
                        failed.push((tp.clone(), PartitionError::from(e)));
                    }
                }
            }
        }
        (failed, opened_any)
    }

    /// Takes an opened log into this shard (counting what recovery cut from its tail); an
    /// `__consumer_offsets` partition is replayed into the group coordinator first, and stays
    /// open even when that fails.
    async fn adopt(
        &self,
        tp: &TopicPartition,
        topic_id: [u8; 16],
        log: Rc<PartitionLog>,
        cut: u64,
    ) -> Result<(), PartitionError> {
        if cut > 0 {
            tracing::warn!(partition = %tp, bytes = cut, "recovery cut a torn or corrupt tail");
            let s = &self.stats.truncated_bytes_at_open;
            s.set(s.get() + cut);
        }
        let mut result = Ok(());
        if let Err(e) = self.load_transactions(tp, &log).await {
            tracing::error!(partition = %tp, error = %e, "cannot rebuild transaction state");
            result = Err(PartitionError::from(e));
        }
        if tp.topic == crate::groups::OFFSETS_TOPIC && crate::internal::loads_at_open(self, tp) {
            match self.groups.load(&log, || true).await {
                Ok(pending) => self.txns.restore_staged(pending),
                Err(e) => {
                    tracing::error!(partition = %tp, error = %e, "cannot load group offsets");
                    result = Err(PartitionError::from(e));
                }
            }
        }
        self.logs.borrow_mut().insert(tp.clone(), OwnedLog { topic_id, log });
        result
    }

    /// Rebuilds a partition's open and aborted transactions from its log, and replays the
    /// transaction coordinator's state from a `__transaction_state` partition.
    async fn load_transactions(
        &self,
        tp: &TopicPartition,
        log: &PartitionLog,
    ) -> Result<(), sluice_storage::StorageError> {
        if tp.topic == crate::txn::TXN_TOPIC {
            if !crate::internal::loads_at_open(self, tp) {
                return Ok(()); // loaded when this broker is elected its leader
            }
            return self.txns.load(log, || true).await;
        }
        log.on_cut(self.txn_partitions.cut_listener(tp));
        if log.high_watermark() > log.log_start() {
            let mut txns = crate::txn::partition::rebuild(log).await?;
            crate::txn::partition::settle_unless_replicated(&mut txns, &self.metadata(), tp);
            self.txn_partitions.install(tp, txns);
        }
        Ok(())
    }

    /// Closes every log, waiting until everything appended is durable.
    /// Returns how many logs failed to close cleanly.
    pub async fn close_all(&self) -> usize {
        let logs: Vec<(TopicPartition, Rc<PartitionLog>)> =
            self.logs.borrow_mut().drain().map(|(tp, o)| (tp, o.log)).collect();
        let mut failed = 0;
        for (tp, log) in logs {
            if let Err(e) = log.close().await {
                tracing::error!(partition = %tp, error = %e, "closing partition log failed");
                failed += 1;
            }
        }
        failed
    }

    /// Removes expired producer state from every log of this shard; returns how many producers.
    pub fn expire_producers(&self) -> usize {
        let now = sluice_core::clock::now_ms();
        self.logs.borrow().values().map(|o| o.log.expire_producers(now)).sum()
    }

    /// Deletes segments that retention no longer keeps, on every owned log.
    pub async fn enforce_retention(&self) {
        let logs: Vec<Rc<PartitionLog>> = self.logs.borrow().values().map(|o| o.log.clone()).collect();
        let now = sluice_core::clock::now_ms();
        for log in logs {
            if let Err(e) = log.enforce_retention(now).await {
                tracing::warn!(partition = log.name(), error = %e, "retention failed");
            }
        }
        self.compact_logs().await;
    }

    /// One compaction pass, when due, on every owned log of a compacted topic (after
    /// retention, on the same timer, so the two never overlap on a log). Passes run one log at
    /// a time, in the shard's background task queue (`runtime.rs`), and pause every
    /// `COMPACTION_SLICE_MICROS` so requests wait for them at most about that long.
    async fn compact_logs(&self) {
        type Due = (TopicPartition, Rc<PartitionLog>, sluice_storage::compact::CompactionConfig);
        let due: Vec<Due> = {
            let meta = self.metadata();
            self.logs
                .borrow()
                .iter()
                .filter_map(|(tp, o)| {
                    let configs = &meta.topics.get(&tp.topic)?.configs;
                    Some((tp.clone(), o.log.clone(), compaction_config(configs, &self.topic_defaults)?))
                })
                .collect()
        };
        for (tp, log, cfg) in due {
            if self.is_stopping() {
                return;
            }
            match log.compact(&cfg, sluice_core::clock::now_ms()).await {
                Ok(Some(stats)) => {
                    // Aborted transactions compaction emptied leave the read_committed index
                    // before their markers can go (a later pass).
                    self.txn_partitions.forget_aborted(&tp, &stats.aborted_gone);
                    tracing::debug!(partition = log.name(), ?stats, "compaction pass");
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(partition = log.name(), error = %e, "compaction failed"),
            }
            // A replicated log cleans only below its group's saved floor: the group moves it
            // up to the sealed segments, for the next pass.
            if log.clean_wanted().is_some() {
                if let Some((replicas, group)) = crate::replica::group_of(self, &tp) {
                    replicas.want_clean(group);
                }
            }
        }
    }

    /// Spawns one task per peer that receives its messages, in order.
    pub(crate) fn serve_peers(self: &Rc<Self>, mut receivers: Receivers<Envelope>) {
        for (peer, rx) in receivers.streams() {
            let shard = self.clone();
            glommio::spawn_local(async move { shard.serve_peer(peer, rx).await }).detach();
        }
    }

    async fn serve_peer(self: Rc<Self>, peer: usize, rx: ConnectedReceiver<Envelope>) {
        while let Some(Envelope { sent, msg }) = rx.recv().await {
            crate::metrics::record_stage(crate::metrics::Stage::CrossCoreHop, sent.elapsed());
            self.stats.messages_received.set(self.stats.messages_received.get() + 1);
            // Waits while this shard runs `max_mesh_tasks_per_shard` tasks (crate::msg).
            let slot = crate::msg::task_slot(self.config.max_mesh_tasks_per_shard, &msg).await;
            self.dispatch(msg, slot);
        }
        tracing::trace!(shard = %self.id, peer, "peer channel closed");
    }

    /// Handles one message. Appends happen synchronously here, so they keep the order in
    /// which the peer sent them; everything that waits runs in its own task.
    fn dispatch(self: &Rc<Self>, msg: ShardMsg, slot: crate::msg::TaskSlot) {
        let shard = self.clone();
        match msg {
            ShardMsg::Produce { acks, items, reply } => {
                let done = crate::produce::append_local(self, acks, items);
                run_with(slot, async move { drop(reply.send(done.await)) });
            }
            ShardMsg::Fetch { items, budget, reply } => run_with(slot, async move {
                drop(reply.send(crate::fetch::read_local(&shard, items, budget).await));
            }),
            ShardMsg::WaitForData { items, deadline, reply } => {
                glommio::spawn_local(crate::fetch::serve_wait(shard, items, deadline, reply)).detach();
            }
            ShardMsg::TransferLeaders { items, reply } => {
                drop(reply.send(crate::replica::elect::transfer_local(&shard, items)));
            }
            ShardMsg::ListOffsets { items, reply } => run_with(slot, async move {
                drop(reply.send(crate::offsets::list_local(&shard, items).await));
            }),
            ShardMsg::Admin(call) => run_with(slot, async move { crate::admin::execute(&shard, call).await }),
            ShardMsg::Group(call) => run_with(slot, async move { shard.groups.handle(&shard, call).await }),
            ShardMsg::Share(call) => run_with(slot, crate::share::handle(shard, call)),
            ShardMsg::Txn(call) => run_with(slot, async move { shard.txns.handle(&shard, call).await }),
            ShardMsg::TxnViews { items, reply } => drop(reply.send(crate::txn::view::views_local(self, items))),
            ShardMsg::TxnProducers { items, reply } => {
                drop(reply.send(crate::txn::producers::describe_local(self, items)))
            }
            ShardMsg::TxnOpen { items, reply } => drop(reply.send(crate::txn::verify::open_local(self, items))),
            ShardMsg::DeleteRecords { items, reply } => run_with(slot, async move {
                drop(reply.send(crate::offsets::delete_records_local(&shard, items).await));
            }),
            ShardMsg::Metrics { reply } => drop(reply.send(crate::metrics::local(self))),
            ShardMsg::Quorum { reply } => {
                drop(reply.send(self.replicas().and_then(|r| crate::replica::quorum::describe(&r))))
            }
            ShardMsg::LogSizes { reply } => drop(reply.send(self.log_sizes())),
            ShardMsg::Cluster(m) => crate::admin::cluster::on_message(m),
            ShardMsg::Publish { snapshot, reply } => run_with(slot, async move {
                // A shard still recovering at start installs this after its recovery.
                shard.recovered().await;
                let result = shard.install(*snapshot).await;
                if let Err(e) = &result {
                    tracing::error!(shard = %shard.id, error = %e, "installing metadata failed");
                }
                drop(reply.send(result));
            }),
        }
    }
}

/// Runs a message's work in its own task, holding its slot until the work ends.
fn run_with(slot: crate::msg::TaskSlot, work: impl std::future::Future<Output = ()> + 'static) {
    glommio::spawn_local(async move {
        let _slot = slot;
        work.await;
    })
    .detach();
}

/// Whether `shard` owns `tp` under `topic_id` in `snapshot`.
fn owns(snapshot: &MetadataSnapshot, shard: ShardId, tp: &TopicPartition, topic_id: &[u8; 16]) -> bool {
    snapshot.topics.get(&tp.topic).is_some_and(|t| &t.id == topic_id)
        && snapshot.owner(&tp.topic, tp.partition) == Some(shard)
}

/// The partitions of `snapshot` that are Raft groups (`raft_backed`), `me` among their
/// replicas: each with its
/// Raft group (topic number, partition) and the voters a new replica of the group starts with
/// (its replicas, or the group's origin voters once a reassignment changed them: a joining
/// replica replays the log's membership changes from there).
fn replicated(snapshot: &MetadataSnapshot, me: i32) -> Vec<(TopicPartition, crate::raft::GroupId, Vec<i32>)> {
    let mut out = Vec::new();
    for (name, repl) in &snapshot.replication {
        for (p, state) in repl.partitions.iter().enumerate() {
            if !state.raft_backed() || !state.replicas.contains(&me) {
                continue;
            }
            let (Ok(pi), Ok(pu)) = (i32::try_from(p), u32::try_from(p)) else { break };
            let group = crate::raft::GroupId::partition(repl.number, pu);
            out.push((TopicPartition::new(name.clone(), pi), group, state.raft_origin().to_vec()));
        }
    }
    out
}

/// Marks every `wanted` partition not already in `failed` as failed with `e` (the data
/// directory's fsync failed: none of the new directories is known to survive a crash).
fn fail_the_rest(
    wanted: &[(TopicPartition, [u8; 16])],
    failed: &mut Vec<(TopicPartition, PartitionError)>,
    e: &PartitionError,
) {
    for (tp, _) in wanted {
        if !failed.iter().any(|(f, _)| f == tp) {
            failed.push((tp.clone(), e.clone()));
        }
    }
}

/// The partitions `shard` owns in `snapshot` but has no log for yet, with their topic ids.
fn to_open(
    snapshot: &MetadataSnapshot,
    shard: ShardId,
    is_open: impl Fn(&TopicPartition) -> bool,
) -> Vec<(TopicPartition, [u8; 16])> {
    let mut wanted = Vec::new();
    for (name, t) in snapshot.topics.iter() {
        for (p, owner) in t.shards.iter().enumerate() {
            let Ok(p) = i32::try_from(p) else { break };
            let tp = TopicPartition::new(name.clone(), p);
            if *owner == shard.0 && !is_open(&tp) {
                wanted.push((tp, t.id));
            }
        }
    }
    wanted
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::TopicMeta;

    fn snapshot() -> MetadataSnapshot {
        let mut s = MetadataSnapshot::default();
        s.topics.insert("t".into(), TopicMeta { id: [1; 16], shards: vec![0, 1, 0], configs: Default::default() });
        s.topics.insert("u".into(), TopicMeta { id: [2; 16], shards: vec![1], configs: Default::default() });
        s
    }

    #[test]
    fn to_open_lists_owned_partitions_without_a_log() {
        let s = snapshot();
        let all = to_open(&s, ShardId(0), |_| false);
        assert_eq!(all, vec![(TopicPartition::new("t", 0), [1; 16]), (TopicPartition::new("t", 2), [1; 16])]);
        let rest = to_open(&s, ShardId(0), |tp| tp.partition.0 == 0);
        assert_eq!(rest, vec![(TopicPartition::new("t", 2), [1; 16])]);
        assert_eq!(to_open(&s, ShardId(1), |_| false).len(), 2);
    }

    #[test]
    fn a_failed_directory_sync_fails_every_new_partition_once() {
        let wanted = to_open(&snapshot(), ShardId(0), |_| false);
        let mut failed = vec![(TopicPartition::new("t", 2), PartitionError::UnknownTopicId)];
        fail_the_rest(&wanted, &mut failed, &PartitionError::Storage("fsync".into()));
        assert_eq!(
            failed,
            vec![
                (TopicPartition::new("t", 2), PartitionError::UnknownTopicId),
                (TopicPartition::new("t", 0), PartitionError::Storage("fsync".into())),
            ],
            "the first error of a partition stays"
        );
    }

    #[test]
    fn a_log_is_dropped_when_its_topic_its_id_or_its_partition_goes() {
        let mut s = snapshot();
        assert!(owns(&s, ShardId(0), &TopicPartition::new("t", 2), &[1; 16]));
        assert!(!owns(&s, ShardId(0), &TopicPartition::new("t", 2), &[7; 16]), "re-created topic");
        assert!(!owns(&s, ShardId(1), &TopicPartition::new("t", 2), &[1; 16]), "another shard's");
        s.topics.get_mut("t").unwrap().shards.truncate(2);
        assert!(!owns(&s, ShardId(0), &TopicPartition::new("t", 2), &[1; 16]), "partition count rolled back");
        s.topics.remove("t");
        assert!(!owns(&s, ShardId(0), &TopicPartition::new("t", 0), &[1; 16]), "topic deleted");
    }
}
