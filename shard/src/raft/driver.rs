//! The per-shard multi-group Raft driver: every Raft group (partition replica, metadata log)
//! this shard hosts, driven together.
//!
//! Contract:
//! - Sans-I/O: the caller feeds ticks ([`Driver::tick`]), received message batches
//!   ([`Driver::receive`]) and proposals ([`Driver::propose`]); it takes outgoing batches
//!   ([`Driver::take_outbox`]: one batch per destination broker per round, every group's
//!   messages to that broker in it), events ([`Driver::take_events`]) and Ready rounds.
//! - Durability: [`Driver::collect_ready`] writes the entries, snapshots and hard states of
//!   every group that has a Ready and names the groups whose logs must be synced; the caller
//!   makes them all durable with ONE sync round (the shard's write pipeline) and then calls
//!   [`Driver::on_synced`]. Only then are the messages that promise durability (votes,
//!   follower acks) released and raft-rs told the entries are persisted — so a commit (and an
//!   acks=all answer) means a majority has the batch durable. A leader's own appends go out
//!   before its sync (Raft thesis 10.2.1); its own vote in the commit waits for the sync.
//!   Rounds complete in order; several may be in flight.
//! - Ticks: only active groups tick. A group is *quiet* (not ticked, sends no heartbeats) when
//!   for `idle_ticks_before_quiet` consecutive ticks it was a leader whose every voter matched
//!   its last index with everything committed and no proposal pending, or a follower with a
//!   known leader whose broker was heard within an election timeout. Any message or proposal
//!   for a group wakes it (it ticks again); all but the traffic of an idle group (heartbeats,
//!   their responses, appends without entries and accepted append responses) also restart its
//!   idle count, so an idle group's last heartbeats do not keep it awake; so does a peer
//!   broker falling silent for `peer_silence_ticks` (each batch, even empty, counts as hearing
//!   it; the driver sends an empty batch to each peer every heartbeat interval it had nothing
//!   else to send), or at once when the caller reports its links down
//!   ([`Driver::peer_down`]), or being heard again after such a silence: every group with a
//!   replica on that broker wakes.
//! - Fast failover: the groups a newly silent broker led are orphaned on this replica: it
//!   gives up its leader lease and campaigns after its rank's stagger, a few quick times at
//!   most (see `hurry`). Pre-vote and check-quorum stay on, so a replica that still hears the
//!   leader ignores such a campaign and no term is bumped by a report that was wrong.
//! - Proposals resolve exactly once: Ok when their index commits with their term, Err when
//!   that index commits with another term, or as soon as a new leader's entries replace
//!   theirs in this replica's log (overwritten: it can never commit), or the group goes away.
//! - Election timeouts are drawn from the driver's own seeded generator (in [election,
//!   2 × election) ticks, as raft-rs does), redrawn whenever a group's election clock restarts,
//!   so a run is replayable from its seeds (raft-rs's own draw uses the thread's RNG).
//! - The high watermark of a group is the offset after the batch of its applied index (applied
//!   ≤ committed and ≤ durable here); it is reported when it grows.

use super::catchup::{ScanError, ScanOutcome};
use super::store::{CatchupRead, GroupStore, LogFault, ReplicaLog};
use super::types::{GroupId, NodeId, RaftIndex, Term};
use super::wire::{ConfChangeSpec, MsgKind, RaftMsg};
use bytes::Bytes;
use futures::channel::oneshot;
use raft::eraftpb::{Entry, EntryType, HardState, Message, MessageType};
use raft::{RawNode, SnapshotStatus, StateRole, Storage as _};
use sluice_core::limits;
use sluice_core::Offset;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// The driver's bounds (defaults from `limits.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DriverConfig {
    pub election_ticks: usize,
    pub heartbeat_ticks: usize,
    pub max_inflight_msgs: usize,
    pub max_size_per_msg: u64,
    pub window_batches: usize,
    pub idle_ticks_before_quiet: u32,
    /// Ticks without hearing a peer before it counts as silent (its groups wake, and those it
    /// led campaign at once).
    pub peer_silence_ticks: usize,
    /// Ticks between the campaigns of the replicas of a group whose leader fell silent.
    pub orphan_stagger_ticks: usize,
    /// Seeds the driver's election-timeout draws (a simulation replays from it).
    pub seed: u64,
}

impl Default for DriverConfig {
    fn default() -> Self {
        DriverConfig {
            election_ticks: limits::RAFT_ELECTION_TICKS,
            heartbeat_ticks: limits::RAFT_HEARTBEAT_TICKS,
            max_inflight_msgs: limits::RAFT_MAX_INFLIGHT_MSGS,
            max_size_per_msg: limits::RAFT_MAX_SIZE_PER_MSG,
            window_batches: limits::RAFT_WINDOW_BATCHES,
            idle_ticks_before_quiet: limits::RAFT_IDLE_TICKS_BEFORE_QUIET,
            peer_silence_ticks: limits::RAFT_ELECTION_TICKS,
            orphan_stagger_ticks: limits::RAFT_ORPHAN_STAGGER_TICKS,
            seed: 0x5eed,
        }
    }
}

/// Where a committed proposal landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    pub index: RaftIndex,
    pub term: Term,
    pub base: Offset,
    pub last: Offset,
}

/// Why a proposal was refused or failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// NOT_LEADER_OR_FOLLOWER, with what this replica knows of the leader (KIP-951).
    #[error("not the leader (leader {leader:?}, term {term:?})")]
    NotLeader { leader: Option<NodeId>, term: Term },
    #[error("unknown raft group {0}")]
    UnknownGroup(GroupId),
    /// Raft refused it (leadership transfer in progress, uncommitted-size bound).
    #[error("proposal dropped by raft")]
    Dropped,
    /// Its index was committed with another leader's entry.
    #[error("proposal overwritten by a later leader")]
    Overwritten,
    /// The group was removed or failed before the proposal committed.
    #[error("raft group stopped")]
    GroupStopped,
}

/// Resolved when the proposal commits (or fails).
pub type ProposalHandle = oneshot::Receiver<Result<Committed, ProposeError>>;

/// What the caller learns from a round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The group's high watermark grew (consumers may read below it; acks=all waiters at or
    /// below it can be answered).
    HighWatermark { group: GroupId, hw: Offset },
    /// The group's leader or term changed.
    Leader { group: GroupId, leader: Option<NodeId>, term: Term },
    /// A log write failed: the group stopped; reopen it from its durable state.
    Failed { group: GroupId, error: LogFault },
    /// A committed log start batch (a replicated DeleteRecords,
    /// `sluice_core::control::log_start_batch`): this replica moves its log start to `offset`
    /// (after the high watermark event of the same round, which covers every offset below it).
    LogStart { group: GroupId, offset: Offset },
}

/// A group whose leader's broker fell silent (see [`hurry`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Orphan {
    /// Ticks this replica waits before it campaigns: its rank among the live replicas times
    /// the stagger.
    stagger: usize,
    /// Quick campaigns left before the group falls back to Raft's own election timeouts (no
    /// quorum may be reachable: no need to campaign every few ticks for long).
    quick_left: u32,
}

/// A leader's view of its followers (see [`Driver::progress`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub last: u64,
    pub committed: u64,
    /// Every voter (the leader included) and the last index known to match the leader's log.
    pub matched: Vec<(NodeId, u64)>,
}

/// A leader's view of its group's configuration (see [`Driver::membership`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    pub voters: Vec<NodeId>,
    pub learners: Vec<NodeId>,
    /// In joint consensus (leaving it is automatic).
    pub joint: bool,
    /// A proposed configuration change is not applied yet.
    pub change_pending: bool,
    pub committed: u64,
    /// Every member's matched index (the leader's own included).
    pub matched: Vec<(NodeId, u64)>,
}

/// Messages of one round for one broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutBatch {
    pub to: NodeId,
    pub msgs: Vec<RaftMsg>,
}

/// Groups whose logs the caller must make durable before [`Driver::on_synced`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadyRound {
    pub id: u64,
    pub sync: Vec<GroupId>,
}

struct Pending {
    index: RaftIndex,
    term: Term,
    tx: oneshot::Sender<Result<Committed, ProposeError>>,
}

struct Group<L: ReplicaLog> {
    raw: RawNode<GroupStore<L>>,
    pending: VecDeque<Pending>,
    quiet: bool,
    idle_ticks: u32,
    hw: Offset,
    leader: Option<NodeId>,
    term: Term,
    /// Set while the broker of this group's last leader is silent and no other leader is known.
    orphan: Option<Orphan>,
    /// Ready numbers handed to raft-rs but not yet persisted, with the messages to release then.
    unsynced: VecDeque<(u64, u64, Vec<Message>)>,
    /// The index of a snapshot installed by a Ready not yet persisted: once it is, the applied
    /// index moves up to it (raft-rs restores `committed`, never `applied`, and checks the
    /// entries between them when it campaigns).
    snapshot_to_apply: Option<u64>,
}

#[derive(Debug, Clone, Copy)]
struct Peer {
    last_heard: u64,
    last_sent: u64,
    silent: bool,
}

/// All the Raft groups of one shard.
pub struct Driver<L: ReplicaLog> {
    id: NodeId,
    cfg: DriverConfig,
    logger: slog::Logger,
    groups: BTreeMap<GroupId, Group<L>>,
    peers: BTreeMap<NodeId, Peer>,
    outbox: BTreeMap<NodeId, Vec<RaftMsg>>,
    events: Vec<Event>,
    now: u64,
    next_round: u64,
    /// Rounds collected and not yet synced, oldest first.
    rounds: VecDeque<u64>,
    /// Groups whose log asked for the floor to move so it can be cleaned ([`Driver::want_clean`]).
    clean_due: BTreeSet<GroupId>,
    rng: SplitMix,
}

/// splitmix64: small, seeded, good enough to spread election timeouts.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A draw in [lo, hi).
    fn below(&mut self, lo: usize, hi: usize) -> usize {
        let span = u64::try_from(hi - lo).expect("small");
        lo + usize::try_from(self.next() % span).expect("below span")
    }
}

impl<L: ReplicaLog> Driver<L> {
    pub fn new(id: NodeId, cfg: DriverConfig, logger: slog::Logger) -> Driver<L> {
        assert!(cfg.heartbeat_ticks < cfg.election_ticks, "heartbeats come before elections");
        assert!(cfg.peer_silence_ticks >= 1 && cfg.orphan_stagger_ticks >= 1, "silence and stagger take ticks");
        Driver {
            id,
            cfg,
            logger,
            groups: BTreeMap::new(),
            peers: BTreeMap::new(),
            outbox: BTreeMap::new(),
            events: Vec::new(),
            now: 0,
            next_round: 1,
            rounds: VecDeque::new(),
            clean_due: BTreeSet::new(),
            rng: SplitMix(cfg.seed),
        }
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    pub fn config(&self) -> DriverConfig {
        self.cfg
    }

    fn raft_config(&self, applied: u64) -> raft::Config {
        raft::Config {
            id: self.id.0,
            election_tick: self.cfg.election_ticks,
            heartbeat_tick: self.cfg.heartbeat_ticks,
            applied,
            max_size_per_msg: self.cfg.max_size_per_msg,
            max_inflight_msgs: self.cfg.max_inflight_msgs,
            check_quorum: true,
            pre_vote: true,
            ..Default::default()
        }
    }

    /// Hosts a group on this shard from its (created or reopened) store.
    pub fn add_group(&mut self, group: GroupId, store: GroupStore<L>) -> Result<(), raft::Error> {
        assert!(!self.groups.contains_key(&group), "a group is added once");
        let applied = store.hard_state().commit;
        let hw = store.high_watermark(RaftIndex(applied)).expect("the commit index is in the window");
        let members = members(&store.initial_state()?.conf_state);
        let raw = RawNode::new(&self.raft_config(applied), store, &self.logger)?;
        for m in members {
            self.add_peer(m);
        }
        let mut g = Group {
            raw,
            pending: VecDeque::new(),
            quiet: false,
            idle_ticks: 0,
            hw,
            leader: None,
            term: Term(0),
            orphan: None,
            unsynced: VecDeque::new(),
            snapshot_to_apply: None,
        };
        redraw_timeout(&mut g, &mut self.rng, self.cfg.election_ticks);
        self.groups.insert(group, g);
        self.events.push(Event::HighWatermark { group, hw });
        Ok(())
    }

    fn add_peer(&mut self, m: u64) {
        if m != self.id.0 {
            let now = self.now;
            self.peers.entry(NodeId(m)).or_insert(Peer { last_heard: now, last_sent: now, silent: false });
        }
    }

    /// Stops hosting a group; its pending proposals fail. Returns whether it was hosted.
    pub fn remove_group(&mut self, group: GroupId) -> bool {
        let Some(mut g) = self.groups.remove(&group) else { return false };
        fail_all(&mut g.pending, &ProposeError::GroupStopped);
        true
    }

    pub fn group_ids(&self) -> impl Iterator<Item = GroupId> + '_ {
        self.groups.keys().copied()
    }

    pub fn store(&self, group: GroupId) -> Option<&GroupStore<L>> {
        self.groups.get(&group).map(|g| g.raw.store())
    }

    pub fn store_mut(&mut self, group: GroupId) -> Option<&mut GroupStore<L>> {
        self.groups.get_mut(&group).map(|g| g.raw.mut_store())
    }

    /// The leader this replica knows and the term.
    pub fn leader(&self, group: GroupId) -> Option<(Option<NodeId>, Term)> {
        self.groups.get(&group).map(|g| (NodeId::new(g.raw.raft.leader_id), Term(g.raw.raft.term)))
    }

    pub fn is_leader(&self, group: GroupId) -> bool {
        self.groups.get(&group).is_some_and(|g| g.raw.raft.state == StateRole::Leader)
    }

    /// On the leader: itself and the voters recently active whose log matches up to the
    /// commit index (Kafka's ISR); None when not the leader.
    pub fn in_sync(&self, group: GroupId) -> Option<Vec<NodeId>> {
        let g = self.groups.get(&group)?;
        let r = &g.raw.raft;
        if r.state != StateRole::Leader {
            return None;
        }
        let committed = r.raft_log.committed;
        let voters = r.prs().conf().voters().ids();
        // Liveness is the driver's own (the peer links heard from the broker within
        // `peer_silence_ticks`), not raft-rs's `recent_active`: raft-rs clears that flag on
        // every follower at each quorum check (once per election timeout) until the follower's
        // next message, so an acks=all produce arriving in between met NOT_ENOUGH_REPLICAS
        // with every follower alive and caught up (and the idempotent producer's later
        // batches in flight OUT_OF_ORDER_SEQUENCE_NUMBER).
        let live = |id: u64| self.peers.get(&NodeId(id)).is_some_and(|p| !p.silent);
        let mut out: Vec<NodeId> = r
            .prs()
            .iter()
            .filter(|(id, p)| voters.contains(**id) && (**id == self.id.0 || (live(**id) && p.matched >= committed)))
            .map(|(id, _)| NodeId(*id))
            .collect();
        out.sort();
        Some(out)
    }

    /// On the leader: its last index, its commit index and each voter's matched index (itself
    /// included), for the ISR's lag tracking; None when not the leader.
    pub fn progress(&self, group: GroupId) -> Option<Progress> {
        let g = self.groups.get(&group)?;
        let r = &g.raw.raft;
        if r.state != StateRole::Leader {
            return None;
        }
        let voters = r.prs().conf().voters().ids();
        let mut matched: Vec<(NodeId, u64)> =
            r.prs().iter().filter(|(id, _)| voters.contains(**id)).map(|(id, p)| (NodeId(*id), p.matched)).collect();
        matched.sort();
        Some(Progress { last: r.raft_log.last_index(), committed: r.raft_log.committed, matched })
    }

    /// On the leader: the group's configuration and every member's progress (learners
    /// included), for membership changes; None when not the leader.
    pub fn membership(&self, group: GroupId) -> Option<Membership> {
        let g = self.groups.get(&group)?;
        let r = &g.raw.raft;
        if r.state != StateRole::Leader {
            return None;
        }
        let cs = r.prs().conf().to_conf_state();
        let mut matched: Vec<(NodeId, u64)> = r.prs().iter().map(|(id, p)| (NodeId(*id), p.matched)).collect();
        matched.sort();
        let ids = |v: &[u64]| v.iter().copied().map(NodeId).collect::<Vec<_>>();
        Some(Membership {
            voters: ids(&cs.voters),
            learners: ids(&cs.learners),
            joint: !cs.voters_outgoing.is_empty() || !cs.learners_next.is_empty(),
            change_pending: r.pending_conf_index > r.raft_log.applied,
            committed: r.raft_log.committed,
            matched,
        })
    }

    pub fn high_watermark(&self, group: GroupId) -> Option<Offset> {
        self.groups.get(&group).map(|g| g.hw)
    }

    /// Groups that tick now.
    pub fn active_groups(&self) -> usize {
        self.groups.values().filter(|g| !g.quiet).count()
    }

    /// Proposes a Kafka batch on the leader; the handle resolves when it commits.
    pub fn propose(&mut self, group: GroupId, batch: Bytes) -> Result<ProposalHandle, ProposeError> {
        self.propose_entry(group, Entry { data: batch, ..Default::default() })
    }

    /// Asks the group's leader to hand leadership to `to` (raft-rs's leadership transfer; a
    /// follower forwards the request to the leader it knows). False for no such group.
    pub fn transfer_leader(&mut self, group: GroupId, to: NodeId) -> bool {
        let Some(g) = self.groups.get_mut(&group) else { return false };
        g.raw.transfer_leader(to.0);
        wake(g);
        true
    }

    /// Starts an election for `group` now (a new group's preferred replica, so that the first
    /// leader is the assignment's first replica, as Kafka's controller makes it). Pre-vote
    /// still applies. False for no such group or a failed step.
    pub fn campaign(&mut self, group: GroupId) -> bool {
        let Some(g) = self.groups.get_mut(&group) else { return false };
        let ok = g.raw.campaign().is_ok();
        wake(g);
        ok
    }

    /// A new group's preferred replica: campaigns now, and again after a short pause (a few
    /// times, as an orphaned group does) while no leader is known: its first vote requests may
    /// reach replicas that have not opened the group yet and drop them. False for no such
    /// group or a failed step.
    pub fn campaign_first(&mut self, group: GroupId) -> bool {
        let stagger = self.cfg.orphan_stagger_ticks;
        let Some(g) = self.groups.get_mut(&group) else { return false };
        g.orphan = Some(Orphan { stagger, quick_left: limits::RAFT_ORPHAN_QUICK_CAMPAIGNS });
        self.campaign(group)
    }

    /// A new group's other replicas: their first campaign waits the longest election timeout,
    /// so the preferred replica's quick campaigns win and the first leader is the assignment's
    /// first replica. False for no such group.
    pub fn defer_first_campaign(&mut self, group: GroupId) -> bool {
        let e = self.cfg.election_ticks;
        let Some(g) = self.groups.get_mut(&group) else { return false };
        g.raw.raft.set_randomized_election_timeout(2 * e - 1);
        true
    }

    /// Proposes a membership change on the leader.
    pub fn propose_conf_change(&mut self, group: GroupId, cc: &ConfChangeSpec) -> Result<ProposalHandle, ProposeError> {
        let e = Entry { entry_type: EntryType::EntryConfChangeV2, data: cc.to_entry_data(), ..Default::default() };
        self.propose_entry(group, e)
    }

    fn propose_entry(&mut self, group: GroupId, e: Entry) -> Result<ProposalHandle, ProposeError> {
        let id = self.id.0;
        let g = self.groups.get_mut(&group).ok_or(ProposeError::UnknownGroup(group))?;
        if g.raw.raft.state != StateRole::Leader {
            return Err(ProposeError::NotLeader {
                leader: NodeId::new(g.raw.raft.leader_id),
                term: Term(g.raw.raft.term),
            });
        }
        let before = g.raw.raft.raft_log.last_index();
        let m = Message { msg_type: MessageType::MsgPropose, from: id, entries: vec![e].into(), ..Default::default() };
        g.raw.step(m).map_err(|_| ProposeError::Dropped)?;
        let index = g.raw.raft.raft_log.last_index();
        assert_eq!(index, before + 1, "a proposal adds one entry");
        let (tx, rx) = oneshot::channel();
        g.pending.push_back(Pending { index: RaftIndex(index), term: Term(g.raw.raft.term), tx });
        wake(g);
        redraw_timeout(g, &mut self.rng, self.cfg.election_ticks);
        Ok(rx)
    }

    /// One tick of the Raft clock (`RAFT_TICK_MS`).
    pub fn tick(&mut self) {
        self.now += 1;
        self.check_peers();
        let e = self.cfg.election_ticks;
        let silent = self.silent_peers();
        for g in self.groups.values_mut().filter(|g| !g.quiet) {
            hurry(g, &silent, &mut self.rng, e);
            g.raw.tick();
            redraw_timeout(g, &mut self.rng, e);
            let idle = can_be_quiet(g, &self.peers, self.now, self.cfg.election_ticks);
            g.idle_ticks = if idle { g.idle_ticks + 1 } else { 0 };
            if g.idle_ticks >= self.cfg.idle_ticks_before_quiet {
                g.quiet = true;
            }
        }
        self.keepalives();
    }

    /// The transport reports every link to broker `node` down (a killed broker's connections
    /// close at once, long before its heartbeats are missed): the peer is silent now, without
    /// waiting `peer_silence_ticks`. The groups it led are orphaned here at once and give up
    /// their leader lease now (their first campaign comes at the next tick, staggered by rank
    /// as for any silence), so a pre-vote from a replica that saw the same drop a moment
    /// earlier is granted instead of ignored. Called again while the links stay down it keeps
    /// the peer silent (messages received from it meanwhile do not make it heard: this broker
    /// cannot answer it). Safety does not rest on it: a wrong report only starts a pre-vote,
    /// which a replica still hearing the leader ignores (see ARCHITECTURE.md, "Fast failover").
    pub fn peer_down(&mut self, node: NodeId) {
        let timeout = u64::try_from(self.cfg.peer_silence_ticks).expect("small");
        let now = self.now;
        let Some(p) = self.peers.get_mut(&node) else { return };
        p.last_heard = p.last_heard.min(now.saturating_sub(timeout));
        if p.silent || now.saturating_sub(p.last_heard) < timeout {
            return; // already silent, or too early in this driver's life to be
        }
        let orphaned = self.check_peers();
        let silent = self.silent_peers();
        let e = self.cfg.election_ticks;
        for gid in orphaned {
            if let Some(g) = self.groups.get_mut(&gid) {
                hurry(g, &silent, &mut self.rng, e);
            }
        }
    }

    fn silent_peers(&self) -> BTreeSet<u64> {
        self.peers.iter().filter(|(_, p)| p.silent).map(|(id, _)| id.0).collect()
    }

    /// Peers silent for `peer_silence_ticks`, or heard again after that, wake their groups;
    /// the groups a newly silent peer led are orphaned: their replicas here campaign soon,
    /// staggered by rank. Returns the groups orphaned.
    fn check_peers(&mut self) -> Vec<GroupId> {
        let timeout = u64::try_from(self.cfg.peer_silence_ticks).expect("small");
        let mut changed = BTreeSet::new();
        let mut fell_silent = BTreeSet::new();
        for (&id, p) in self.peers.iter_mut() {
            let silent = self.now.saturating_sub(p.last_heard) >= timeout;
            if silent != p.silent {
                p.silent = silent;
                changed.insert(id.0);
                if silent {
                    fell_silent.insert(id.0);
                }
            }
        }
        let mut orphaned = Vec::new();
        if changed.is_empty() {
            return orphaned;
        }
        let silent = self.silent_peers();
        for (gid, g) in self.groups.iter_mut() {
            let cs = g.raw.raft.prs().conf().to_conf_state();
            if !members(&cs).iter().any(|m| changed.contains(m)) {
                continue;
            }
            wake(g);
            let r = &g.raw.raft;
            if r.state != StateRole::Leader && fell_silent.contains(&r.leader_id) && cs.voters.contains(&self.id.0) {
                let rank = orphan_rank(*gid, self.id.0, &cs.voters, &silent);
                g.orphan = Some(Orphan {
                    stagger: rank * self.cfg.orphan_stagger_ticks,
                    quick_left: limits::RAFT_ORPHAN_QUICK_CAMPAIGNS,
                });
                orphaned.push(*gid);
            }
        }
        orphaned
    }

    /// An empty batch to every peer that got nothing for a heartbeat interval.
    fn keepalives(&mut self) {
        let every = u64::try_from(self.cfg.heartbeat_ticks).expect("small");
        for (&id, p) in self.peers.iter() {
            if self.now.saturating_sub(p.last_sent) >= every {
                self.outbox.entry(id).or_default();
            }
        }
    }

    /// A batch received from broker `from` (possibly empty).
    pub fn receive(&mut self, from: NodeId, msgs: Vec<RaftMsg>) {
        let now = self.now;
        if let Some(p) = self.peers.get_mut(&from) {
            p.last_heard = now;
        }
        for m in msgs {
            // A follower forwards a leadership-transfer request with the transferee as sender
            // (raft-rs's `step_follower`): the only message whose sender is not the broker's.
            let forwarded = m.kind == MsgKind::TransferLeader;
            if (m.from != from && !forwarded) || m.to != self.id {
                continue; // misaddressed: never step it
            }
            let Some(g) = self.groups.get_mut(&m.group) else { continue };
            g.quiet = false;
            if !is_idle_traffic(&m) {
                g.idle_ticks = 0;
            }
            // Errors: a response from a peer no longer in the group, or a local type; dropped.
            let _ = g.raw.step(m.to_raft());
            if g.raw.raft.state != StateRole::Leader && !g.pending.is_empty() {
                fail_lost(g);
            }
            redraw_timeout(g, &mut self.rng, self.cfg.election_ticks);
        }
    }

    /// Writes every group's Ready; returns the groups to sync, or None when nothing to do.
    pub fn collect_ready(&mut self) -> Option<ReadyRound> {
        let round = self.next_round;
        let mut sync = self.trim_for_cleaning();
        let ids: Vec<GroupId> = self.groups.iter().filter(|(_, g)| g.raw.has_ready()).map(|(&id, _)| id).collect();
        for id in ids {
            match self.handle_ready(id, round) {
                Ok(true) => sync.push(id),
                Ok(false) => {}
                Err(error) => self.fail_group(id, error),
            }
        }
        if sync.is_empty() {
            return None;
        }
        self.next_round += 1;
        self.rounds.push_back(round);
        Some(ReadyRound { id: round, sync })
    }

    /// The log of `id` wants its floor moved to be cleaned (`ReplicaLog::clean_wanted`): the
    /// next round trims the window up to what the group applied and saves that floor, even
    /// when the group is idle (a compacted partition whose last segment just rolled).
    pub fn want_clean(&mut self, id: GroupId) {
        self.clean_due.insert(id);
    }

    /// Trims the windows [`Driver::want_clean`] asked for; returns the groups with no Ready to
    /// carry the floor so saved (they are synced for it alone).
    fn trim_for_cleaning(&mut self) -> Vec<GroupId> {
        let mut alone = Vec::new();
        for id in std::mem::take(&mut self.clean_due) {
            let Some(g) = self.groups.get_mut(&id) else { continue };
            let applied = RaftIndex(g.raw.raft.raft_log.applied);
            g.raw.mut_store().compact(applied);
            if !g.raw.has_ready() && g.raw.mut_store().save_if_dirty() {
                alone.push(id);
            }
        }
        alone
    }

    /// Returns whether the round must run for the group: it waits for the round's sync, or
    /// handed its log a state to write.
    fn handle_ready(&mut self, id: GroupId, round: u64) -> Result<bool, LogFault> {
        let g = self.groups.get_mut(&id).expect("listed");
        let mut rd = g.raw.ready();
        let mut out = rd.take_messages();
        if !rd.snapshot().is_empty() {
            // The state installed with the snapshot carries the Ready's term and vote (not its
            // commit index, which may already be past the snapshot: set with the entries below).
            if let Some(hs) = rd.hs() {
                let commit = g.raw.store().hard_state().commit;
                g.raw.mut_store().set_hard_state(HardState { commit, ..hs.clone() });
            }
            g.raw.mut_store().apply_snapshot(rd.snapshot())?;
            g.snapshot_to_apply = Some(rd.snapshot().get_metadata().index);
        }
        g.raw.mut_store().append_entries(rd.entries())?;
        if let Some(hs) = rd.hs() {
            g.raw.mut_store().set_hard_state(hs.clone());
        }
        let needs_sync = rd.must_sync() || !rd.entries().is_empty() || !rd.snapshot().is_empty();
        let committed = rd.take_committed_entries();
        let persisted = rd.take_persisted_messages();
        let number = rd.number();
        g.raw.advance_append_async(rd);
        let saved_before = g.raw.mut_store().save_if_dirty();
        let waits = needs_sync || !g.unsynced.is_empty();
        if waits {
            g.unsynced.push_back((round, number, persisted));
        } else {
            g.raw.on_persist_ready(number);
            apply_persisted_snapshot(g);
            out.extend(persisted);
        }
        self.apply(id, committed)?;
        // A state handed to the log (before or after applying: a membership change, a floor
        // moved far enough) is written with this round: a later Ready may never come (a one-voter group has nothing more
        // to say), and a reopen would find the old voters.
        let saved = self.groups.get_mut(&id).expect("listed").raw.mut_store().save_if_dirty();
        self.note_leader(id);
        self.route(id, out);
        Ok(waits || saved_before || saved)
    }

    /// The caller made every log of round `id` (and of every earlier round) durable.
    pub fn on_synced(&mut self, id: u64) {
        assert_eq!(self.rounds.front(), Some(&id), "rounds are synced in order");
        self.rounds.pop_front();
        let ids: Vec<GroupId> = self.groups.keys().copied().collect();
        for gid in ids {
            let g = self.groups.get_mut(&gid).expect("listed");
            let mut out = Vec::new();
            while g.unsynced.front().is_some_and(|u| u.0 <= id) {
                let (_, number, msgs) = g.unsynced.pop_front().expect("checked");
                g.raw.on_persist_ready(number);
                apply_persisted_snapshot(g);
                out.extend(msgs);
            }
            let persisted = RaftIndex(g.raw.raft.raft_log.persisted);
            g.raw.mut_store().mark_synced(persisted);
            self.route(gid, out);
        }
    }

    /// Applies committed entries: conf changes, proposals, the high watermark.
    fn apply(&mut self, id: GroupId, committed: Vec<Entry>) -> Result<(), LogFault> {
        let Some(last) = committed.last().map(|e| e.index) else { return Ok(()) };
        let g = self.groups.get_mut(&id).expect("listed");
        let mut new_members = BTreeSet::new();
        for e in &committed {
            if e.entry_type == EntryType::EntryConfChangeV2 {
                apply_conf_change(g, e);
                new_members.extend(members(&g.raw.raft.prs().conf().to_conf_state()));
            }
            resolve(g, e);
        }
        g.raw.advance_apply_to(last);
        let hw = g.raw.store().high_watermark(RaftIndex(last)).expect("applied entries are in the window");
        assert!(hw >= g.hw, "the high watermark never goes back");
        if hw > g.hw {
            g.hw = hw;
            self.events.push(Event::HighWatermark { group: id, hw });
        }
        for offset in committed.iter().filter_map(log_start_of) {
            self.events.push(Event::LogStart { group: id, offset });
        }
        g.raw.mut_store().compact(RaftIndex(last));
        // A replica that joined the group is a peer whose silence counts from now.
        for m in new_members {
            self.add_peer(m);
        }
        Ok(())
    }

    fn note_leader(&mut self, id: GroupId) {
        let g = self.groups.get_mut(&id).expect("listed");
        let (leader, term) = (NodeId::new(g.raw.raft.leader_id), Term(g.raw.raft.term));
        if (leader, term) != (g.leader, g.term) {
            g.leader = leader;
            g.term = term;
            self.events.push(Event::Leader { group: id, leader, term });
        }
    }

    fn route(&mut self, id: GroupId, msgs: Vec<Message>) {
        let now = self.now;
        for m in msgs {
            if m.msg_type == MessageType::MsgSnapshot {
                // The snapshot carries no bulk data (store.rs): it is done once sent.
                if let Some(g) = self.groups.get_mut(&id) {
                    g.raw.report_snapshot(m.to, SnapshotStatus::Finish);
                }
            }
            let Some(w) = RaftMsg::from_raft(id, &m) else { continue };
            if let Some(p) = self.peers.get_mut(&w.to) {
                p.last_sent = now;
            }
            self.outbox.entry(w.to).or_default().push(w);
        }
    }

    fn fail_group(&mut self, id: GroupId, error: LogFault) {
        if let Some(mut g) = self.groups.remove(&id) {
            fail_all(&mut g.pending, &ProposeError::GroupStopped);
        }
        self.events.push(Event::Failed { group: id, error });
    }

    /// The catch-up reads below the window that raft-rs waits for, every group's (the caller
    /// makes each and hands it back with [`Driver::catchup_done`]).
    pub fn take_catchup_reads(&mut self) -> Vec<(GroupId, CatchupRead)> {
        let mut out = Vec::new();
        for (&id, g) in &mut self.groups {
            out.extend(g.raw.mut_store().take_catchup_reads().into_iter().map(|r| (id, r)));
        }
        out
    }

    /// A catch-up read finished: its batches are installed and raft-rs sends the appends it
    /// waited for (nothing when the group went away meanwhile).
    pub fn catchup_done(&mut self, group: GroupId, read: CatchupRead, result: Result<ScanOutcome, ScanError>) {
        let Some(g) = self.groups.get_mut(&group) else { return };
        if let Err(e) = &result {
            tracing::warn!(%group, error = %e, "catch-up read below the window failed");
        }
        g.raw.mut_store().install_catchup(&read, result);
        wake(g);
        g.raw.on_entries_fetched(read.ctx);
    }

    /// This round's batches, one per destination broker (empty ones are keepalives).
    pub fn take_outbox(&mut self) -> Vec<OutBatch> {
        let now = self.now;
        let out = std::mem::take(&mut self.outbox);
        out.into_iter()
            .map(|(to, msgs)| {
                if let Some(p) = self.peers.get_mut(&to) {
                    p.last_sent = now;
                }
                OutBatch { to, msgs }
            })
            .collect()
    }

    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }
}

/// Every replica of a conf state (voters, learners, incoming and outgoing).
fn members(cs: &raft::eraftpb::ConfState) -> BTreeSet<u64> {
    cs.voters.iter().chain(&cs.learners).chain(&cs.voters_outgoing).chain(&cs.learners_next).copied().collect()
}

/// A fresh election timeout whenever the group's election clock restarted.
fn redraw_timeout<L: ReplicaLog>(g: &mut Group<L>, rng: &mut SplitMix, election: usize) {
    if g.raw.raft.election_elapsed == 0 {
        g.raw.raft.set_randomized_election_timeout(rng.below(election, 2 * election));
    }
}

/// Messages an idle group still exchanges: they wake it without restarting its idle count.
fn is_idle_traffic(m: &RaftMsg) -> bool {
    match m.kind {
        MsgKind::Heartbeat | MsgKind::HeartbeatResponse => true,
        MsgKind::Append => m.entries.is_empty(),
        MsgKind::AppendResponse => !m.reject,
        _ => false,
    }
}

/// This replica's place among the live voters of a group (rotated by the group, so the first
/// to campaign differs from group to group and leaders spread).
fn orphan_rank(group: GroupId, me: u64, voters: &[u64], silent: &BTreeSet<u64>) -> usize {
    let mut live: Vec<u64> = voters.iter().copied().filter(|v| !silent.contains(v)).collect();
    live.sort_unstable();
    let Some(pos) = live.iter().position(|v| *v == me) else { return 0 };
    let shift = usize::try_from(group.0 % u64::try_from(live.len()).expect("small")).expect("below the length");
    (pos + live.len() - shift) % live.len()
}

/// An orphaned group (its leader's broker silent, no other leader known) campaigns soon: its
/// leader lease is given up (so it grants others' pre-votes at once) and its election timeout
/// set to pass after its stagger (the first campaign) or after the stagger plus a short pause
/// (when a campaign restarted its clock). A group that sees a live leader again, or leads,
/// stops being orphaned. Pre-vote still applies: a replica that hears the leader refuses.
fn hurry<L: ReplicaLog>(g: &mut Group<L>, silent: &BTreeSet<u64>, rng: &mut SplitMix, election: usize) {
    let Some(Orphan { stagger, quick_left }) = g.orphan else { return };
    let r = &mut g.raw.raft;
    if r.state == StateRole::Leader || (r.leader_id != raft::INVALID_ID && !silent.contains(&r.leader_id)) {
        g.orphan = None;
        return;
    }
    if r.election_elapsed < election {
        // Every quick campaign counts, the first too: a replica told again and again that the
        // leader's links are down while its messages still arrive (one direction of a link
        // down) re-arms its first campaign each time it follows the leader again; a bound keeps
        // that to a few refused pre-votes.
        if quick_left == 0 {
            g.orphan = None;
            return;
        }
        g.orphan = Some(Orphan { stagger, quick_left: quick_left - 1 });
        let first = r.state == StateRole::Follower && r.leader_id != raft::INVALID_ID;
        let pause = if first { 1 } else { 1 + stagger + rng.below(0, 3) };
        r.election_elapsed = election;
        r.set_randomized_election_timeout((election + stagger + pause).min(2 * election - 1));
    }
}

fn wake<L: ReplicaLog>(g: &mut Group<L>) {
    g.quiet = false;
    g.idle_ticks = 0;
}

fn can_be_quiet<L: ReplicaLog>(g: &Group<L>, peers: &BTreeMap<NodeId, Peer>, now: u64, timeout: usize) -> bool {
    let r = &g.raw.raft;
    match r.state {
        StateRole::Leader => {
            let last = r.raft_log.last_index();
            g.pending.is_empty() && r.raft_log.committed == last && r.prs().iter().all(|(_, p)| p.matched == last)
        }
        StateRole::Follower => NodeId::new(r.leader_id).is_some_and(|l| {
            peers.get(&l).is_some_and(|p| now.saturating_sub(p.last_heard) < u64::try_from(timeout).expect("small"))
        }),
        StateRole::Candidate | StateRole::PreCandidate => false,
    }
}

fn apply_conf_change<L: ReplicaLog>(g: &mut Group<L>, e: &Entry) {
    let Some(spec) = ConfChangeSpec::from_local_entry_data(&e.data) else { return };
    // A refused change (raft-rs validates) leaves the configuration as it is.
    if let Ok(cs) = g.raw.apply_conf_change(&spec.to_raft()) {
        g.raw.mut_store().set_conf_state(cs);
    }
}

/// Resolves the proposals at or below a committed entry.
/// Moves the applied index up to an installed snapshot once it is persisted (see
/// `snapshot_to_apply`); raft-rs requires applied <= min(persisted, committed).
fn apply_persisted_snapshot<L: ReplicaLog>(g: &mut Group<L>) {
    let Some(index) = g.snapshot_to_apply else { return };
    let log = &g.raw.raft.raft_log;
    if log.persisted >= index && log.committed >= index {
        if log.applied < index {
            g.raw.advance_apply_to(index);
        }
        g.snapshot_to_apply = None;
    }
}

/// The offset a committed entry moves the log start to, when it is a log start batch.
fn log_start_of(e: &Entry) -> Option<Offset> {
    if e.entry_type != EntryType::EntryNormal || e.data.is_empty() {
        return None;
    }
    let h = sluice_core::batch::BatchHeader::parse(&e.data).ok().filter(|h| h.is_control())?;
    sluice_core::control::log_start_of(&h, &e.data).map(Offset)
}

fn resolve<L: ReplicaLog>(g: &mut Group<L>, e: &Entry) {
    while g.pending.front().is_some_and(|p| p.index.0 <= e.index) {
        let p = g.pending.pop_front().expect("checked");
        let result = if p.index.0 == e.index && p.term.0 == e.term {
            let meta = *g.raw.store().window().get(p.index).expect("a committed entry being applied is in the window");
            Ok(Committed { index: p.index, term: p.term, base: meta.base, last: meta.last })
        } else {
            Err(ProposeError::Overwritten)
        };
        let _ = p.tx.send(result);
    }
}

/// On a replica that no longer leads: fails at once the proposals whose entry a new leader's
/// log replaced (the term at their index is another, or their index is past the truncated
/// log's end): by log matching they can never commit. Without this they would wait until an
/// entry committed at their index, which may be never when nothing more is written (a
/// producer waiting for their answers writes nothing more).
fn fail_lost<L: ReplicaLog>(g: &mut Group<L>) {
    let log = &g.raw.raft.raft_log;
    let mut kept = VecDeque::with_capacity(g.pending.len());
    for p in g.pending.drain(..) {
        match log.term(p.index.0) {
            Ok(t) if t != p.term.0 => {
                let _ = p.tx.send(Err(ProposeError::Overwritten));
            }
            _ => kept.push_back(p),
        }
    }
    g.pending = kept;
}

fn fail_all(pending: &mut VecDeque<Pending>, e: &ProposeError) {
    for p in pending.drain(..) {
        let _ = p.tx.send(Err(e.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orphaned_replicas_rank_differently_and_skip_silent_voters() {
        let voters = [1, 2, 3];
        let silent: BTreeSet<u64> = [1].into_iter().collect();
        for g in 0..6u64 {
            let ranks: BTreeSet<usize> =
                [2, 3].iter().map(|me| orphan_rank(GroupId(g), *me, &voters, &silent)).collect();
            assert_eq!(ranks, [0, 1].into_iter().collect(), "group {g}: one campaigns first, the other next");
        }
        // The first to campaign changes with the group, so leaders spread.
        let firsts: BTreeSet<u64> =
            (0..6u64).map(|g| if orphan_rank(GroupId(g), 2, &voters, &silent) == 0 { 2 } else { 3 }).collect();
        assert_eq!(firsts.len(), 2);
        // A replica that is not a voter (or is silent itself) ranks first: it cannot win anyway.
        assert_eq!(orphan_rank(GroupId(1), 9, &voters, &silent), 0);
    }
}
