//! The replication runtime of one shard: the shard's Raft [`Driver`] over its partition logs,
//! its clock, its Ready rounds and its traffic with other brokers; and the API the metadata
//! layer uses (the metadata log, opening and closing data replicas, leaders, ISR).
//!
//! Contract:
//! - One [`Replicas`] per shard, created by the server when the broker has peers
//!   (`controller_quorum_voters` set); a lone broker has none and keeps the direct path.
//! - Node ids: Raft ids are the cluster node id + 1 (raft-rs reserves 0); this module's API
//!   speaks cluster node ids ([`sluice_core::cluster::NodeId`]).
//! - Rounds: one task runs Ready rounds one after the other: it collects every group's Ready
//!   (entries appended to their logs), sends the leaders' appends at once, then makes every
//!   group's appends durable with the shard's sync round (each log's `wait_durable` for its
//!   last append: the shard's sync task fdatasyncs all of them together) and writes the
//!   changed Raft state files (tmp + fsync + rename + directory fsync, on the blocking pool)
//!   before [`Driver::on_synced`] releases votes and acks. A failed sync or state write fails
//!   the whole broker (panic: restart at once, reopen from what is durable).
//! - Clock: a tick task ticks the driver every `RAFT_TICK_MS` (the driver ticks only active
//!   groups). Peer liveness comes from the transport ([`RaftTransport::is_live`]: the peer
//!   links' heartbeats and connection state), fed to the driver each tick: a live peer as an
//!   empty batch, so the driver's empty keepalive batches are not sent; a peer whose links are
//!   down (a killed broker's connections close at once) as `Driver::peer_down`, also checked
//!   before each received frame is stepped, so the groups it led start electing within a tick.
//! - Traffic: each round's messages to one broker are split by the route of their group on the
//!   receiving broker — `Shard(0)` for the metadata log (group 0, hosted by shard 0 of every
//!   broker), the partition otherwise (the receiver's placement finds the owner shard) — and
//!   every group's messages with the same route travel in one frame ([`wire::encode_batch`]).
//!   A frame that cannot be queued is dropped (Raft retransmits).
//! - High watermark: the driver's `HighWatermark` events advance the log's commit mark
//!   (`PartitionLog::advance_commit`); readers see only below it.
//! - Catch-up: entries raft-rs wants below a group's window (a follower far behind) are read
//!   from the segments by one catch-up task per shard, one read at a time (asynchronous
//!   direct reads, never blocking the shard), and handed back to the driver, which sends the
//!   appends raft-rs waited for (`raft/catchup.rs`).
//!
//! Metadata log API (shard 0 only, see [`Replicas::metadata`]):
//! - [`Replicas::propose`]`(GroupId::METADATA, batch)`: `batch` is one valid Kafka v2 record
//!   batch (any base offset and epoch: they are stamped). Resolves when it commits, with its
//!   offsets, or `Err(ProposeError::NotLeader { leader, term })` at once on a follower (leader
//!   as a Raft id: use [`Replicas::leader`] for the cluster node id), or another error when a
//!   later leader overwrote it (it did not commit: propose again).
//! - [`Replicas::read_committed`]`(group, from, max_bytes)`: committed data batches from
//!   `from` in order (Raft's own control batches left out), and the offset to read next.
//! - [`Replicas::wait_beyond`]`(group, offset)`: completes when the high watermark passes
//!   `offset`.
//! - [`Replicas::leader`]`(group)`: the known leader (cluster node id) and its epoch (term).
//! - [`Replicas::on_leader_change`]: a callback called on every leader or term change of
//!   any group of this shard (after the round that saw it).
//!
//! Data replicas (the shard owning the partition; its log must be installed already):
//! [`Replicas::open_replica`], [`Replicas::close_replica`], [`Replicas::leader`],
//! [`Replicas::isr`].

pub mod convert;
mod delete_records;
pub mod elect;
pub mod epochs;
mod install;
pub mod produce;
pub mod quorum;
pub mod reassign;
pub mod rebalance;

use crate::raft::driver::{Committed, Event, OutBatch, ProposeError};
use crate::raft::kafkalog::{read_catchup, KafkaLog, SyncWork};
use crate::raft::store::{CatchupRead, GroupStore, LogFault, PersistedState};
use crate::raft::{wire, Driver, DriverConfig, GroupId, NodeId};
use bytes::Bytes;
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use sluice_core::batch::BatchHeader;
use sluice_core::cluster::NodeId as ClusterNode;
use sluice_core::{limits, LeaderEpoch, Offset, TopicPartition};
use sluice_storage::log::{LogConfig, PartitionLog};
use sluice_storage::StorageError;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

/// The directory (under the data dir) of the metadata log, as KRaft names it.
pub const METADATA_LOG_DIR: &str = "__cluster_metadata-0";

/// Where a Raft frame goes on the receiving broker.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum RaftRoute {
    Shard(u16),
    Partition(TopicPartition),
}

/// What the runtime needs from the broker-to-broker transport (net implements it).
pub trait RaftTransport {
    /// Queues an encoded batch of Raft messages for broker `to`; false when it was dropped.
    fn send(&self, to: ClusterNode, route: RaftRoute, payload: Bytes) -> bool;
    /// The peer's links heard from it recently and are connected now (a connection closed by
    /// the peer — a killed broker's — makes it not live at once).
    fn is_live(&self, node: ClusterNode) -> bool;
}

/// A leader's view of its followers: last index, commit index, matched index per voter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub last: u64,
    pub committed: u64,
    pub matched: Vec<(ClusterNode, u64)>,
}

/// Called on every leader or term change: group, leader (cluster node id), epoch.
pub type LeaderListener = Box<dyn Fn(GroupId, Option<ClusterNode>, LeaderEpoch)>;
/// Called with a data partition's batches (base offset, bytes) newly below its high watermark,
/// in offset order (the transaction index of the partition follows them).
pub type CommitListener = Box<dyn Fn(&TopicPartition, &[(Offset, Bytes)])>;

/// Why a replica could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    #[error("raft state: {0}")]
    State(String),
    #[error("raft: {0}")]
    Raft(String),
    #[error("partition {0} has no log on this shard")]
    NoLog(TopicPartition),
    #[error("group {0} is already open")]
    AlreadyOpen(GroupId),
}

struct GroupInfo {
    tp: Option<TopicPartition>,
    log: Rc<PartitionLog>,
}

/// One shard's replication runtime.
pub struct Replicas {
    me: ClusterNode,
    peers: Vec<ClusterNode>,
    driver: RefCell<Driver<KafkaLog>>,
    transport: Rc<dyn RaftTransport>,
    kick: LocalSender<()>,
    groups: RefCell<BTreeMap<GroupId, GroupInfo>>,
    listeners: RefCell<Vec<LeaderListener>>,
    commit_listeners: RefCell<Vec<CommitListener>>,
    /// The group of each replicated partition of this shard.
    by_tp: RefCell<HashMap<TopicPartition, GroupId>>,
    /// Idempotent producers' proposals not yet resolved, by (group, producer id).
    inflight: RefCell<HashMap<(GroupId, i64), VecDeque<produce::Inflight>>>,
    /// Catch-up reads below the window waiting for the catch-up task, in order.
    catchup: RefCell<VecDeque<(GroupId, CatchupRead)>>,
    catchup_kick: LocalSender<()>,
    /// Groups stopped to install a snapshot (`install.rs`): opened again by the install only.
    installing: RefCell<std::collections::BTreeSet<GroupId>>,
    /// Log start moves (replicated DeleteRecords) being applied, and the highest offset
    /// waiting behind each (`delete_records.rs`: one at a time per group).
    log_start_moves: RefCell<HashMap<GroupId, Option<Offset>>>,
    this: std::rc::Weak<Replicas>,
}

/// Raft's id of a cluster node.
pub fn raft_id(node: ClusterNode) -> NodeId {
    let id = u64::try_from(node.0).expect("node ids are not negative");
    NodeId(id + 1)
}

/// The cluster node of a Raft id.
pub fn cluster_node(id: NodeId) -> ClusterNode {
    ClusterNode(i32::try_from(id.0 - 1).expect("raft ids come from node ids"))
}

impl Replicas {
    /// The runtime of this shard, its tasks started. `members`: every cluster member (the
    /// controller quorum voters).
    pub fn start(
        me: ClusterNode,
        members: &[ClusterNode],
        shard: usize,
        transport: Rc<dyn RaftTransport>,
    ) -> Rc<Replicas> {
        let cfg = DriverConfig {
            seed: 0x5eed ^ (u64::from(me.0.unsigned_abs()) << 16) ^ shard as u64,
            // Liveness comes from the links' sessions, fed every tick: a peer whose links are
            // down is silent at the next tick, and the groups it led campaign at once.
            peer_silence_ticks: limits::RAFT_PEER_SILENCE_TICKS,
            ..Default::default()
        };
        let logger = crate::raft::logger::logger();
        let (kick, rx) = local_channel::new_bounded(1);
        let (catchup_kick, catchup_rx) = local_channel::new_bounded(1);
        let r = Rc::new_cyclic(|this| Replicas {
            this: this.clone(),
            installing: RefCell::new(std::collections::BTreeSet::new()),
            log_start_moves: RefCell::new(HashMap::new()),
            me,
            peers: members.iter().copied().filter(|m| *m != me).collect(),
            driver: RefCell::new(Driver::new(raft_id(me), cfg, logger)),
            transport,
            kick,
            groups: RefCell::new(BTreeMap::new()),
            listeners: RefCell::new(Vec::new()),
            commit_listeners: RefCell::new(Vec::new()),
            by_tp: RefCell::new(HashMap::new()),
            inflight: RefCell::new(HashMap::new()),
            catchup: RefCell::new(VecDeque::new()),
            catchup_kick,
        });
        glommio::spawn_local(rounds(r.clone(), rx)).detach();
        glommio::spawn_local(catchup(Rc::downgrade(&r), catchup_rx)).detach();
        glommio::spawn_local(clock(Rc::downgrade(&r))).detach();
        r
    }

    pub fn node(&self) -> ClusterNode {
        self.me
    }

    /// The cluster members this shard's peer links hear from now, this broker among them, in
    /// node-id order.
    pub fn live_members(&self) -> Vec<ClusterNode> {
        let mut v: Vec<ClusterNode> = self.peers.iter().copied().filter(|p| self.transport.is_live(*p)).collect();
        v.push(self.me);
        v.sort();
        v
    }

    fn wake(&self) {
        let _ = self.kick.try_send(());
    }

    /// The log of `group` wants its floor moved to be cleaned (`Driver::want_clean`).
    pub fn want_clean(&self, group: GroupId) {
        self.driver.borrow_mut().want_clean(group);
        self.wake();
    }

    /// Opens the metadata log (group 0) in `data_dir`, its voters `voters` (shard 0 only).
    pub async fn open_metadata(
        &self,
        data_dir: &std::path::Path,
        voters: &[ClusterNode],
        clean: bool,
    ) -> Result<(), ReplicaError> {
        let dir = data_dir.join(METADATA_LOG_DIR);
        let (log, _) = PartitionLog::open(&dir, METADATA_LOG_DIR, LogConfig::default(), clean).await?;
        if let Some(parent) = dir.parent() {
            sync_dir(parent.to_path_buf()).await?;
        }
        self.open_group(GroupId::METADATA, None, log, voters).await
    }

    /// Makes the installed log of `tp` the replica of `group` whose members are `replicas`.
    pub async fn open_replica(
        &self,
        log: Rc<PartitionLog>,
        tp: TopicPartition,
        group: GroupId,
        replicas: &[ClusterNode],
    ) -> Result<(), ReplicaError> {
        if self.installing.borrow().contains(&group) {
            return Ok(()); // the install opens it when done
        }
        self.open_group(group, Some(tp), log, replicas).await
    }

    async fn open_group(
        &self,
        group: GroupId,
        tp: Option<TopicPartition>,
        log: Rc<PartitionLog>,
        members: &[ClusterNode],
    ) -> Result<(), ReplicaError> {
        if self.groups.borrow().contains_key(&group) {
            return Err(ReplicaError::AlreadyOpen(group));
        }
        let dir = log.dir().to_path_buf();
        if tp.is_some() {
            install::redo(&log).await?;
        }
        let mut saved = {
            let d = dir.clone();
            sluice_storage::disk::blocking(move || sluice_storage::raft_state::read(&d))
                .await
                .map_err(|e| ReplicaError::State(e.to_string()))?
        };
        // A data replica with no Raft state over a log that holds batches, whose group starts
        // from this broker alone, was a single-replica partition on the direct path: its
        // batches become the group's first entries (`convert.rs`).
        let fresh = saved.is_none();
        let converted = fresh && tp.is_some() && log.log_end() > Offset(0) && members == [self.node()];
        if converted {
            saved = Some(convert::convert(&log, raft_id(self.node()).0).await?);
        }
        let mut klog = KafkaLog::new(log.clone());
        let cap = limits::RAFT_WINDOW_BATCHES;
        // A group created here (no saved state) whose first member is this broker campaigns at
        // once, and again soon while no leader is known; its other members wait their longest
        // election timeout first: the first leader is the preferred replica, as Kafka's
        // controller makes it.
        let preferred_fresh = fresh && members.first() == Some(&self.node());
        let mut store = match saved {
            Some(rec) => {
                let state = PersistedState::from_record(rec);
                let found =
                    klog.load_from(state.floor.next_offset).await.map_err(|e| ReplicaError::Raft(e.to_string()))?;
                GroupStore::open(klog, state, found, cap).map_err(|e| ReplicaError::Raft(e.to_string()))?
            }
            None => {
                let voters = members.iter().map(|m| raft_id(*m).0).collect();
                GroupStore::create(klog, voters, log.log_end(), cap)
            }
        };
        // The state as opened is durable before the group speaks.
        let work = store.log_mut().take_sync_work();
        write_state(&dir, work.state, &log).await?;
        let commit = store.hard_state().commit;
        let hw = store.high_watermark(crate::raft::RaftIndex(commit)).expect("the commit index is in the window");
        log.set_replicated(hw.min(log.durable_end()));
        self.driver.borrow_mut().add_group(group, store).map_err(|e| ReplicaError::Raft(e.to_string()))?;
        if preferred_fresh {
            self.driver.borrow_mut().campaign_first(group);
        } else if fresh {
            self.driver.borrow_mut().defer_first_campaign(group);
        }
        if let Some(tp) = &tp {
            self.by_tp.borrow_mut().insert(tp.clone(), group);
        }
        if converted && log.log_start() > Offset(0) {
            self.carry_log_start(group, log.clone());
        }
        self.groups.borrow_mut().insert(group, GroupInfo { tp, log });
        tracing::info!(%group, members = ?members, "raft group opened");
        self.wake();
        Ok(())
    }

    /// Whether `group` is a data partition's (not the metadata log).
    fn is_data(&self, group: GroupId) -> bool {
        self.groups.borrow().get(&group).is_some_and(|g| g.tp.is_some())
    }

    /// Stops replicating `group` here (its log stays, readable up to its high watermark).
    pub fn close_replica(&self, group: GroupId) -> bool {
        let removed = self.driver.borrow_mut().remove_group(group);
        if let Some(GroupInfo { tp: Some(tp), .. }) = self.groups.borrow_mut().remove(&group) {
            self.by_tp.borrow_mut().remove(&tp);
        }
        self.inflight.borrow_mut().retain(|(g, _), _| *g != group);
        removed
    }

    /// The Raft group of a replicated partition of this shard (None: not replicated here).
    pub fn group_of(&self, tp: &TopicPartition) -> Option<GroupId> {
        self.by_tp.borrow().get(tp).copied()
    }

    /// The leader this replica knows (cluster node id) and the epoch; None for no such group.
    pub fn leader(&self, group: GroupId) -> Option<(Option<ClusterNode>, LeaderEpoch)> {
        let (leader, term) = self.driver.borrow().leader(group)?;
        Some((leader.map(cluster_node), term.epoch().unwrap_or(LeaderEpoch(-1))))
    }

    pub fn is_leader(&self, group: GroupId) -> bool {
        self.driver.borrow().is_leader(group)
    }

    /// On the leader: the replicas in sync (the leader, and followers recently active whose
    /// log matches up to the commit index); None elsewhere.
    pub fn isr(&self, group: GroupId) -> Option<Vec<ClusterNode>> {
        self.driver.borrow().in_sync(group).map(|ids| ids.into_iter().map(cluster_node).collect())
    }

    /// On the leader: the group's last index, commit index and every voter's matched index
    /// (cluster node ids); None elsewhere.
    pub fn progress(&self, group: GroupId) -> Option<Progress> {
        let p = self.driver.borrow().progress(group)?;
        Some(Progress {
            last: p.last,
            committed: p.committed,
            matched: p.matched.into_iter().map(|(n, m)| (cluster_node(n), m)).collect(),
        })
    }

    /// Whether `node`'s links are live (this broker always is).
    pub fn is_live(&self, node: ClusterNode) -> bool {
        node == self.me || self.transport.is_live(node)
    }

    /// The data groups of this shard this broker leads.
    pub fn led_groups(&self) -> Vec<GroupId> {
        let d = self.driver.borrow();
        self.groups.borrow().iter().filter(|(g, i)| i.tp.is_some() && d.is_leader(**g)).map(|(g, _)| *g).collect()
    }

    /// The partition of a data group of this shard (None: the metadata log or no such group).
    pub fn partition_of(&self, group: GroupId) -> Option<TopicPartition> {
        self.groups.borrow().get(&group).and_then(|g| g.tp.clone())
    }

    /// The partition log of a group.
    pub fn log(&self, group: GroupId) -> Option<Rc<PartitionLog>> {
        self.groups.borrow().get(&group).map(|g| g.log.clone())
    }

    /// Registers a leader-change callback.
    pub fn on_leader_change(&self, f: LeaderListener) {
        self.listeners.borrow_mut().push(f);
    }

    /// Registers a callback for data batches reaching the high watermark.
    pub fn on_commit(&self, f: CommitListener) {
        self.commit_listeners.borrow_mut().push(f);
    }

    /// Hands the batches of a data group in `[from, to)` to the commit listeners (from the
    /// window's cache: a batch is there from its append until the window trims it, which
    /// happens only below the applied index).
    fn notify_committed(&self, group: GroupId, from: Offset, to: Offset) {
        if self.commit_listeners.borrow().is_empty() || from >= to {
            return;
        }
        let Some(tp) = self.groups.borrow().get(&group).and_then(|g| g.tp.clone()) else { return };
        let batches = match self.driver.borrow_mut().store_mut(group) {
            Some(s) => s.log_mut().cached_between(from, to),
            None => return,
        };
        for f in self.commit_listeners.borrow().iter() {
            f(&tp, &batches);
        }
    }

    /// Proposes `batch` on the leader; resolves at commit (module docs).
    pub async fn propose(&self, group: GroupId, batch: Bytes) -> Result<Committed, ProposeError> {
        let handle = self.driver.borrow_mut().propose(group, batch)?;
        self.wake();
        handle.await.unwrap_or(Err(ProposeError::GroupStopped))
    }

    /// Committed data batches from `from` (control batches left out) and the next offset.
    pub async fn read_committed(
        &self,
        group: GroupId,
        from: Offset,
        max_bytes: usize,
    ) -> Result<(Vec<Bytes>, Offset), StorageError> {
        let Some(log) = self.log(group) else { return Ok((Vec::new(), from)) };
        let r = log.read(from, max_bytes).await?;
        let mut out = Vec::new();
        let mut next = from;
        let mut rest = r.records;
        while !rest.is_empty() {
            let h = BatchHeader::parse(&rest)?;
            let b = rest.split_to(h.total_len());
            if h.last_offset() < from.0 {
                continue;
            }
            next = Offset(h.last_offset() + 1);
            if !crate::raft::control::is_raft_control(&h, &b) {
                out.push(b);
            }
        }
        Ok((out, next))
    }

    /// Completes when the group's high watermark passes `offset`.
    pub async fn wait_beyond(&self, group: GroupId, offset: Offset) {
        if let Some(log) = self.log(group) {
            log.wait_beyond(offset).await;
        }
    }

    /// A frame of Raft messages from broker `from`.
    pub fn receive(&self, from: ClusterNode, payload: Bytes) {
        match wire::decode_batch(payload) {
            Ok(msgs) => {
                let mut d = self.driver.borrow_mut();
                // Links found down since the last tick count before these messages are
                // stepped: a pre-vote from a replica that saw a leader's links drop first is
                // then judged without the lease of that dead leader (driver `peer_down`).
                self.report_down_peers(&mut d);
                d.receive(raft_id(from), msgs);
                drop(d);
                self.wake();
            }
            Err(e) => tracing::debug!(%from, error = %e, "undecodable raft batch dropped"),
        }
    }

    /// Feeds the transport's liveness to the driver: a live peer counts as heard (an empty
    /// batch), a peer whose links are down is reported down at once.
    fn feed_liveness(&self, d: &mut Driver<KafkaLog>) {
        for p in &self.peers {
            if self.transport.is_live(*p) {
                d.receive(raft_id(*p), Vec::new());
            } else {
                d.peer_down(raft_id(*p));
            }
        }
    }

    /// Reports the peers whose links are down (see [`Driver::peer_down`]).
    fn report_down_peers(&self, d: &mut Driver<KafkaLog>) {
        for p in &self.peers {
            if !self.transport.is_live(*p) {
                d.peer_down(raft_id(*p));
            }
        }
    }

    fn send_outbox(&self) {
        let out = self.driver.borrow_mut().take_outbox();
        for OutBatch { to, msgs } in out {
            if msgs.is_empty() {
                continue; // keepalive: the peer links' heartbeats stand for it
            }
            let mut by_route: BTreeMap<RaftRoute, Vec<wire::RaftMsg>> = BTreeMap::new();
            {
                let groups = self.groups.borrow();
                for m in msgs {
                    let route = match groups.get(&m.group).and_then(|g| g.tp.clone()) {
                        Some(tp) => RaftRoute::Partition(tp),
                        None => RaftRoute::Shard(0),
                    };
                    by_route.entry(route).or_default().push(m);
                }
            }
            for (route, msgs) in by_route {
                self.transport.send(cluster_node(to), route, wire::encode_batch(&msgs));
            }
        }
    }

    fn handle_events(&self) {
        let events = self.driver.borrow_mut().take_events();
        for e in events {
            match e {
                Event::HighWatermark { group, hw } => {
                    if let Some(log) = self.log(group) {
                        let from = log.high_watermark();
                        log.advance_commit(hw);
                        self.notify_committed(group, from, log.high_watermark());
                    }
                }
                Event::Leader { group, leader, term } => {
                    let node = leader.map(cluster_node);
                    let epoch = term.epoch().unwrap_or(LeaderEpoch(-1));
                    tracing::info!(%group, leader = ?node.map(|n| n.0), epoch = epoch.0, "raft leader");
                    for f in self.listeners.borrow().iter() {
                        f(group, node, epoch);
                    }
                }
                Event::Failed { group, error: LogFault::Install(state) } if self.is_data(group) => {
                    if let Some(r) = self.this.upgrade() {
                        glommio::spawn_local(install::install(r, group, *state)).detach();
                    }
                }
                Event::Failed { group, error } => {
                    tracing::error!(%group, %error, "raft group stopped after a log failure");
                    self.close_replica(group);
                }
                Event::LogStart { group, offset } => self.move_log_start(group, offset),
            }
        }
    }

    /// Queues the catch-up reads raft-rs asked for during the last steps.
    fn queue_catchup(&self) {
        let reads = self.driver.borrow_mut().take_catchup_reads();
        if !reads.is_empty() {
            self.catchup.borrow_mut().extend(reads);
            let _ = self.catchup_kick.try_send(());
        }
    }

    fn sync_work(&self) -> Vec<(PathBuf, SyncWork)> {
        let ids: Vec<GroupId> = self.groups.borrow().keys().copied().collect();
        let mut d = self.driver.borrow_mut();
        ids.into_iter()
            .filter_map(|g| d.store_mut(g).map(|s| s.log_mut().take_sync_work()))
            .map(|w| (w.log.dir().to_path_buf(), w))
            .collect()
    }
}

/// The Ready rounds (module docs).
async fn rounds(r: Rc<Replicas>, rx: LocalReceiver<()>) {
    while rx.recv().await.is_some() {
        loop {
            let round = r.driver.borrow_mut().collect_ready();
            r.send_outbox();
            r.handle_events();
            r.queue_catchup();
            let Some(round) = round else { break };
            let work = r.sync_work();
            let syncs = work.into_iter().map(|(dir, w)| async move {
                if let Some(a) = w.append {
                    if let Err(e) = w.log.wait_durable(&a).await {
                        panic!("raft: sync of {} failed: {e}", w.log.name());
                    }
                }
                if let Err(e) = write_state(&dir, w.state, &w.log).await {
                    panic!("raft: state of {} not written: {e}", w.log.name());
                }
            });
            futures::future::join_all(syncs).await;
            r.driver.borrow_mut().on_synced(round.id);
            r.send_outbox();
            r.handle_events();
        }
    }
}

/// Catch-up reads below the window (module docs), one at a time per shard: the memory they
/// take is one read's (`RAFT_CATCHUP_READ_BYTES`) plus each group's last answer. Ends when
/// the runtime is dropped.
async fn catchup(r: std::rc::Weak<Replicas>, rx: LocalReceiver<()>) {
    while rx.recv().await.is_some() {
        loop {
            let Some(r) = r.upgrade() else { return };
            let Some((group, read)) = r.catchup.borrow_mut().pop_front() else { break };
            let log = r.groups.borrow().get(&group).map(|g| g.log.clone());
            let Some(log) = log else { continue };
            let result = read_catchup(&log, read.plan).await;
            if let Ok(out) = &result {
                tracing::debug!(%group, batches = out.kept.len(), from = ?out.kept.first().map(|b| b.0.index), "catch-up read");
            }
            r.driver.borrow_mut().catchup_done(group, read, result);
            r.wake();
        }
    }
}

/// The Raft clock; ends when the runtime is dropped.
async fn clock(r: std::rc::Weak<Replicas>) {
    loop {
        glommio::timer::sleep(Duration::from_millis(limits::RAFT_TICK_MS)).await;
        let Some(r) = r.upgrade() else { return };
        {
            let mut d = r.driver.borrow_mut();
            r.feed_liveness(&mut d);
            d.tick();
        }
        r.wake();
    }
}

/// Writes a group's state durably; then its log may be cleaned below the state's floor (the
/// batches a reopen counts from the floor are never touched by compaction).
async fn write_state(
    dir: &std::path::Path,
    state: Option<sluice_storage::raft_state::RaftStateRecord>,
    log: &PartitionLog,
) -> Result<(), ReplicaError> {
    let Some(state) = state else { return Ok(()) };
    let dir = dir.to_path_buf();
    let floor_next = state.floor_next_offset;
    sluice_storage::disk::blocking(move || sluice_storage::raft_state::write(&dir, &state))
        .await
        .map_err(|e| ReplicaError::State(e.to_string()))?;
    log.set_clean_limit(floor_next);
    Ok(())
}

async fn sync_dir(dir: PathBuf) -> Result<(), ReplicaError> {
    sluice_storage::disk::blocking(move || std::fs::File::open(&dir).and_then(|f| f.sync_all()))
        .await
        .map_err(|e| ReplicaError::State(e.to_string()))
}

/// The replication runtime and Raft group of `tp` when it is replicated on this shard.
pub fn group_of(shard: &crate::shard::Shard, tp: &TopicPartition) -> Option<(Rc<Replicas>, GroupId)> {
    let r = shard.replicas()?;
    let g = r.group_of(tp)?;
    Some((r, g))
}

/// Whether `tp` is to be a Raft group on this broker (a cluster member holding one of its
/// replicas, the partition a Raft group as the metadata says: several replicas, or replicas
/// changed by a reassignment, `PartitionState::raft_backed`) whose group is not open (yet, or
/// any more: a single-replica partition being converted, `convert.rs`). Its log
/// then takes no write and serves no read: from the log's opening (at start, or when the
/// partition arrives) until its group is open the log is not in step with any Raft window, a
/// direct append there would be acknowledged without being replicated (and lost), and the next
/// replicated append would not find the window's end at the log's end.
pub fn awaiting_group(shard: &crate::shard::Shard, tp: &TopicPartition) -> bool {
    if shard.config.controller_quorum_voters.is_empty() {
        return false;
    }
    if shard.replicas().is_some_and(|r| r.group_of(tp).is_some()) {
        return false;
    }
    let me = shard.config.node_id;
    let snap = shard.metadata();
    let state = snap.replication.get(&tp.topic).and_then(|r| r.partitions.get(usize::try_from(tp.partition.0).ok()?));
    state.is_some_and(|p| p.raft_backed() && p.replicas.contains(&me))
}

/// NOT_LEADER_OR_FOLLOWER (no leader known) for a partition [`awaiting_group`] here.
pub fn check_open(shard: &crate::shard::Shard, tp: &TopicPartition) -> Result<(), crate::error::PartitionError> {
    if awaiting_group(shard, tp) {
        return Err(crate::error::PartitionError::NotLeaderOrFollower { leader: None, epoch: -1 });
    }
    Ok(())
}

/// NOT_LEADER_OR_FOLLOWER (with the known leader) for a replicated partition this broker does
/// not lead, or whose group is not open here ([`awaiting_group`]); Ok for any other partition.
pub fn check_leader(shard: &crate::shard::Shard, tp: &TopicPartition) -> Result<(), crate::error::PartitionError> {
    check_open(shard, tp)?;
    let Some(r) = shard.replicas() else { return Ok(()) };
    let Some(group) = r.group_of(tp) else { return Ok(()) };
    if r.is_leader(group) {
        return Ok(());
    }
    let (leader, epoch) = r.leader(group).unwrap_or((None, LeaderEpoch(-1)));
    Err(crate::error::PartitionError::NotLeaderOrFollower { leader: leader.map(|l| l.0), epoch: epoch.0 })
}

/// `records` (whole batches) without sluice's Raft control batches (type 0x5352), except the
/// last batch of the read when it is one that takes an offset (written by an older build,
/// `raft::control`): a consumer advances its position past the control batches it is given
/// (as past transaction markers), so a log ending in such batches must show the client the
/// last of them, or its position would stay below the high watermark forever. A control
/// batch taking no offset never holds a position back and is always dropped. The bytes are
/// copied only when there is one to drop.
pub fn strip_raft_control(records: Bytes) -> Bytes {
    // (start, end, a Raft control batch, takes an offset) of each whole batch.
    let mut spans = Vec::new();
    let mut p = 0usize;
    while p < records.len() {
        let Ok(h) = BatchHeader::parse(&records[p..]) else { break };
        let end = (p + h.total_len()).min(records.len());
        let control = h.is_control() && crate::raft::control::is_raft_control(&h, &records[p..end]);
        spans.push((p, end, control, !h.takes_no_offset()));
        p = end;
    }
    // The last batch taking an offset stays, even a control batch (see above).
    let last_taking = spans.iter().rposition(|s| s.3);
    let keep = |i: usize, s: &(usize, usize, bool, bool)| !s.2 || Some(i) == last_taking;
    if spans.iter().enumerate().all(|(i, s)| keep(i, s)) {
        return records;
    }
    let mut out = bytes::BytesMut::with_capacity(records.len());
    for (i, s) in spans.iter().enumerate() {
        if keep(i, s) {
            out.extend_from_slice(&records[s.0..s.1]);
        }
    }
    // A cut batch after the whole ones (a read ends inside it) stays as it came.
    out.extend_from_slice(&records[p.min(records.len())..]);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::control::Shape;
    use raft::eraftpb::Entry;

    /// A leader's empty entry as an older build wrote it (taking one offset).
    fn noop(base: i64) -> Bytes {
        let e = Entry { term: 1, ..Default::default() };
        crate::raft::control::entry_to_batch(&e, Offset(base), Shape::OneOffset).expect("a noop")
    }

    /// A leader's empty entry as written now (taking no offset).
    fn noop0(base: i64) -> Bytes {
        let e = Entry { term: 1, ..Default::default() };
        crate::raft::control::entry_to_batch(&e, Offset(base), Shape::NoOffset).expect("a noop")
    }

    fn data(base: i64) -> Bytes {
        let mut b = bytes::BytesMut::from(
            &sluice_core::batch::build(&[sluice_core::batch::Record { key: None, value: b"v" }], 0)[..],
        );
        sluice_core::batch::stamp(&mut b, base, 1);
        b.freeze()
    }

    fn bases(records: &Bytes) -> Vec<i64> {
        let mut out = Vec::new();
        let mut p = 0;
        while p < records.len() {
            let h = BatchHeader::parse(&records[p..]).expect("whole batches");
            out.push(h.base_offset);
            p += h.total_len();
        }
        out
    }

    #[test]
    fn raft_control_batches_are_dropped_but_the_last_of_a_read_stays() {
        let read: Bytes = [noop(0), data(1), noop(2), noop(3), data(4)].concat().into();
        assert_eq!(bases(&strip_raft_control(read)), vec![1, 4]);
        // A log ending in control batches: the client is shown the last, so it moves past them.
        let read: Bytes = [data(0), noop(1), noop(2)].concat().into();
        assert_eq!(bases(&strip_raft_control(read)), vec![0, 2]);
        let read: Bytes = [data(0), data(1)].concat().into();
        assert_eq!(bases(&strip_raft_control(read.clone())), vec![0, 1]);
    }

    #[test]
    fn raft_control_batches_taking_no_offset_are_always_dropped() {
        // A new leader's entry before the first record, and one after the last.
        let read: Bytes = [noop0(0), data(0), noop0(1), noop0(1), data(1), noop0(2)].concat().into();
        assert_eq!(bases(&strip_raft_control(read)), vec![0, 1]);
        // An old log's last control batch (one offset) still shows, the new one after it not.
        let read: Bytes = [data(0), noop(1), noop0(2)].concat().into();
        assert_eq!(bases(&strip_raft_control(read)), vec![0, 1]);
        let read: Bytes = [data(0), noop(1)].concat().into();
        assert_eq!(bases(&strip_raft_control(read)), vec![0, 1]);
    }
}
