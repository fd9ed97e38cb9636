//! Deterministic simulation of the replication core (shard/src/raft): N brokers × G Raft
//! groups on in-memory logs, driven by one seeded PRNG.
//!
//! Faults: messages lost, delayed (so reordered) and duplicated; links cut between brokers and
//! healed (in half the runs the brokers are told at once that a link is down, and sometimes
//! about a link that only flapped: the runtime's fast-failover path, `Driver::peer_down`); brokers crashed (each log keeps its synced image plus, at random, a prefix of what
//! was written after it, and either the last synced or the newest Raft state) and restarted;
//! sync failures (a disk fault stops the broker, as the driver's fail-stop policy says); Ready
//! rounds left unsynced across steps. Every message crosses the real wire encoding.
//!
//! Checked, at every step and at the end:
//! - no committed batch is ever lost or changed: whenever a broker's high watermark moves, its
//!   log below it must equal the committed history seen so far (which only grows);
//! - at most one leader per (group, term), and every broker's view of a term's leader agrees;
//! - each broker's high watermark never goes back within one run of the broker (a restart may
//!   start it lower, as Kafka's lazily checkpointed high watermark does);
//! - after the faults stop and the cluster heals, every group commits a new proposal (liveness)
//!   and every broker's log holds every acknowledged proposal exactly once, at the offset its
//!   acknowledgement gave, and nothing twice (below its log start only when a snapshot
//!   restarted it there: in half the runs DeleteRecords moves data group leaders' log starts,
//!   and followers needing what a leader no longer serves install its snapshot; in half the
//!   runs compactors ask groups to move and save their floors, `Driver::want_clean`).
//!
//! Contract: a run depends only on its seed: a failure prints the seed and the command that
//! replays it. Seeds: `SLUICE_SIM_SEEDS` (count, default 150: about 8 s in release), `SLUICE_SIM_SEED` (one seed);
//! a long run: `SLUICE_SIM_SEEDS=10000 cargo test --release -p sluice-shard --test raft_sim`.

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sluice_core::batch::{self, BatchHeader};
use sluice_core::Offset;
use sluice_shard::raft::driver::{Driver, DriverConfig, Event, ProposalHandle, ReadyRound};
use sluice_shard::raft::memlog::{MemDisk, MemLog};
use sluice_shard::raft::store::GroupStore;
use sluice_shard::raft::{catchup, control, logger, wire, GroupId, NodeId, Term};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::rc::Rc;

/// The shape and fault rates of one run (drawn from the seed).
#[derive(Debug, Clone, Copy)]
struct Params {
    /// Brokers are told at once when their links to a broker drop (a cut, a crash), every
    /// step while it lasts, as the runtime's transport tells its driver (`Driver::peer_down`);
    /// and at random about a link that dropped alone for a moment (`p_flap`). Drawn from a
    /// generator of its own, so the runs without it are the runs of before it.
    link_reports: bool,
    p_flap: f64,
    nodes: u64,
    groups: u32,
    steps: u64,
    p_drop: f64,
    p_dup: f64,
    max_delay: u64,
    p_crash: f64,
    p_cut: f64,
    p_heal: f64,
    p_disk_fault: f64,
    p_propose: f64,
    p_sync: f64,
    /// The Raft window (batches): small in half the runs, so followers that were down or cut
    /// off catch up from below the leader's window (catch-up reads, `raft/catchup.rs`).
    window: usize,
    /// DeleteRecords on a data group's leader (in half the runs): its log start moves to its
    /// high watermark, and followers needing what it no longer serves get snapshots.
    p_delete: f64,
    /// A replica's compactor asking its group to move the saved floor up to its sealed
    /// segments (`Driver::want_clean`), in half the runs: floors move and are saved at any
    /// point, and crashes reopen from them.
    p_clean: f64,
}

impl Params {
    fn draw(seed: u64, rng: &mut StdRng) -> Params {
        let mut links = StdRng::seed_from_u64(seed ^ 0x5eed_11e5);
        let link_reports = links.gen_bool(0.5);
        Params {
            link_reports,
            p_flap: if link_reports { links.gen_range(0.0..0.01) } else { 0.0 },
            nodes: if rng.gen_bool(0.8) { 3 } else { 5 },
            groups: rng.gen_range(2..=8),
            steps: 1500,
            p_drop: rng.gen_range(0.0..0.2),
            p_dup: rng.gen_range(0.0..0.1),
            max_delay: rng.gen_range(0..4),
            p_crash: rng.gen_range(0.0..0.004),
            p_cut: rng.gen_range(0.0..0.005),
            p_heal: 0.02,
            p_disk_fault: rng.gen_range(0.0..0.002),
            p_propose: rng.gen_range(0.2..1.0),
            p_sync: rng.gen_range(0.5..1.0),
            window: if rng.gen_bool(0.5) { rng.gen_range(4..16) } else { WINDOW },
            p_delete: if rng.gen_bool(0.5) { rng.gen_range(0.0..0.004) } else { 0.0 },
            p_clean: if rng.gen_bool(0.5) { rng.gen_range(0.0..0.02) } else { 0.0 },
        }
    }
}

struct Node {
    id: NodeId,
    driver: Option<Driver<MemLog>>,
    disks: BTreeMap<GroupId, Rc<RefCell<MemDisk>>>,
    down_until: u64,
    incarnation: u64,
    /// This incarnation's high watermark per group, and how far its log was checked.
    hw: BTreeMap<GroupId, Offset>,
    verified: BTreeMap<GroupId, Offset>,
    unsynced: VecDeque<ReadyRound>,
}

struct Flight {
    at: u64,
    from: NodeId,
    to: NodeId,
    bytes: Bytes,
}

struct Proposal {
    group: GroupId,
    id: u64,
    handle: ProposalHandle,
}

struct World {
    seed: u64,
    rng: StdRng,
    p: Params,
    nodes: Vec<Node>,
    groups: Vec<GroupId>,
    now: u64,
    net: Vec<Flight>,
    cut: BTreeSet<(NodeId, NodeId)>,
    /// The committed history of each group as observed so far: batches by base offset
    /// (contiguous, except where a broker's log restarted at a snapshot beyond it).
    canon: BTreeMap<GroupId, BTreeMap<Offset, Bytes>>,
    leaders: BTreeMap<(GroupId, Term), NodeId>,
    /// Draws the link flaps (its own generator: see `Params::link_reports`).
    links_rng: StdRng,
    proposals: Vec<Proposal>,
    acked: BTreeMap<GroupId, Vec<(u64, Offset)>>,
    /// The highest offset DeleteRecords moved each group's log start to, on any broker.
    deleted_to: BTreeMap<GroupId, Offset>,
    /// The log start batches proposed (a replicated DeleteRecords): (group, offset).
    log_starts: BTreeSet<(GroupId, Offset)>,
    next_id: u64,
    stats: Stats,
}

/// What a run exercised (printed, and checked to be non-trivial over many seeds).
#[derive(Debug, Default, Clone, Copy)]
struct Stats {
    crashes: u64,
    disk_faults: u64,
    cuts: u64,
    terms: u64,
    failed_proposals: u64,
    truncated_on_crash: u64,
    catchup_reads: u64,
    deletes: u64,
    clean_wants: u64,
    installs: u64,
    flaps: u64,
    log_starts_applied: u64,
}

impl std::ops::AddAssign for Stats {
    fn add_assign(&mut self, o: Stats) {
        self.crashes += o.crashes;
        self.disk_faults += o.disk_faults;
        self.cuts += o.cuts;
        self.terms += o.terms;
        self.failed_proposals += o.failed_proposals;
        self.truncated_on_crash += o.truncated_on_crash;
        self.catchup_reads += o.catchup_reads;
        self.deletes += o.deletes;
        self.clean_wants += o.clean_wants;
        self.installs += o.installs;
        self.flaps += o.flaps;
        self.log_starts_applied += o.log_starts_applied;
    }
}

const WINDOW: usize = 4096;

fn voters(n: u64) -> Vec<u64> {
    (1..=n).collect()
}

impl World {
    fn new(seed: u64) -> World {
        let mut rng = StdRng::seed_from_u64(seed);
        let p = Params::draw(seed, &mut rng);
        World::with(seed, rng, p)
    }

    fn with(seed: u64, rng: StdRng, p: Params) -> World {
        let groups: Vec<GroupId> =
            std::iter::once(GroupId::METADATA).chain((0..p.groups - 1).map(|i| GroupId::partition(1, i))).collect();
        let mut w = World {
            seed,
            rng,
            p,
            nodes: Vec::new(),
            groups,
            now: 0,
            net: Vec::new(),
            cut: BTreeSet::new(),
            canon: BTreeMap::new(),
            leaders: BTreeMap::new(),
            links_rng: StdRng::seed_from_u64(seed ^ 0xf1a9),
            proposals: Vec::new(),
            log_starts: BTreeSet::new(),
            acked: BTreeMap::new(),
            deleted_to: BTreeMap::new(),
            next_id: 1,
            stats: Stats::default(),
        };
        for i in 1..=p.nodes {
            w.nodes.push(Node {
                id: NodeId(i),
                driver: None,
                disks: BTreeMap::new(),
                down_until: 0,
                incarnation: 0,
                hw: BTreeMap::new(),
                verified: BTreeMap::new(),
                unsynced: VecDeque::new(),
            });
            w.create(usize::try_from(i - 1).expect("small"));
        }
        w
    }

    fn driver_config(&self, n: &Node) -> DriverConfig {
        DriverConfig { seed: self.seed ^ (n.id.0 << 48) ^ (n.incarnation << 32), ..DriverConfig::default() }
    }

    /// A brand-new broker: empty logs, every group with all brokers as voters.
    fn create(&mut self, i: usize) {
        let cfg = self.driver_config(&self.nodes[i]);
        let n = &mut self.nodes[i];
        let mut d = Driver::new(n.id, cfg, logger::logger());
        for &g in &self.groups {
            let disk = Rc::new(RefCell::new(MemDisk::new(Offset(0))));
            let store = GroupStore::create(MemLog(disk.clone()), voters(self.p.nodes), Offset(0), self.p.window);
            disk.borrow_mut().sync().expect("no fault armed");
            d.add_group(g, store).expect("a new group");
            n.disks.insert(g, disk);
        }
        n.driver = Some(d);
    }

    /// Reopens a broker from its disks.
    fn restart(&mut self, i: usize) {
        self.nodes[i].incarnation += 1;
        let cfg = self.driver_config(&self.nodes[i]);
        let n = &mut self.nodes[i];
        let mut d = Driver::new(n.id, cfg, logger::logger());
        for (&g, disk) in &n.disks {
            let rec = disk.borrow().recover();
            let store = GroupStore::open(MemLog(disk.clone()), rec.state, rec.found, self.p.window)
                .expect("memory logs do not fail");
            d.add_group(g, store).expect("a reopened group");
        }
        n.driver = Some(d);
        n.hw.clear();
        n.verified.clear();
    }

    fn crash(&mut self, i: usize) {
        let down = self.rng.gen_range(20..150);
        let keeps: Vec<(usize, bool)> =
            self.nodes[i].disks.keys().map(|_| (self.rng.gen_range(0..3), self.rng.gen_bool(0.5))).collect();
        self.stats.crashes += 1;
        let n = &mut self.nodes[i];
        n.driver = None;
        n.unsynced.clear();
        for (disk, (keep, keep_state)) in n.disks.values().zip(keeps) {
            let before = disk.borrow().batches().len();
            disk.borrow_mut().crash(keep, keep_state);
            self.stats.truncated_on_crash += u64::from(disk.borrow().batches().len() < before);
        }
        n.down_until = self.now + down;
    }

    fn fail(&self, what: String) -> ! {
        panic!("seed {}: step {}: {what}", self.seed, self.now);
    }

    fn step(&mut self, faults: bool) {
        self.now += 1;
        if faults {
            self.inject_faults();
        }
        self.restart_due();
        // The runtime checks its links before it steps a received frame and again right
        // before each tick.
        self.report_links(faults);
        self.deliver();
        self.report_links(false);
        if faults || self.rng.gen_bool(0.3) {
            self.maybe_propose();
        }
        for i in 0..self.nodes.len() {
            self.run_node(i);
        }
        self.poll_proposals();
    }

    fn inject_faults(&mut self) {
        let n = self.nodes.len();
        for i in 0..n {
            if self.nodes[i].driver.is_some() && self.rng.gen_bool(self.p.p_crash) {
                self.crash(i);
            }
            if self.nodes[i].driver.is_some() && self.rng.gen_bool(self.p.p_disk_fault) {
                let k = self.rng.gen_range(0..self.groups.len());
                self.nodes[i].disks[&self.groups[k]].borrow_mut().fail_next_sync = true;
            }
        }
        if self.rng.gen_bool(self.p.p_cut) {
            self.stats.cuts += 1;
            let a = NodeId(self.rng.gen_range(1..=self.p.nodes));
            if self.rng.gen_bool(0.5) {
                for b in 1..=self.p.nodes {
                    self.cut.insert(pair(a, NodeId(b)));
                }
            } else {
                let b = NodeId(self.rng.gen_range(1..=self.p.nodes));
                self.cut.insert(pair(a, b));
            }
        }
        if !self.cut.is_empty() && self.rng.gen_bool(self.p.p_heal) {
            self.cut.clear();
        }
        if self.p.p_delete > 0.0 && self.rng.gen_bool(self.p.p_delete) {
            self.delete_records();
        }
        if self.p.p_clean > 0.0 && self.rng.gen_bool(self.p.p_clean) {
            self.want_clean();
        }
    }

    /// A compactor on one broker wants a group's log cleaned up to an offset inside it (a
    /// sealed segments' end, `ReplicaLog::clean_wanted`): the group moves its floor there once
    /// applied and saves it at once.
    fn want_clean(&mut self) {
        let i = self.rng.gen_range(0..self.nodes.len());
        let g = self.groups[self.rng.gen_range(0..self.groups.len())];
        let Some(disk) = self.nodes[i].disks.get(&g).cloned() else { return };
        let Some(d) = self.nodes[i].driver.as_mut() else { return };
        let (start, end) = {
            let d = disk.borrow();
            (d.log_start(), log_end(&d))
        };
        if end <= start {
            return;
        }
        disk.borrow_mut().clean_wanted = Some(Offset(self.rng.gen_range(start.0 + 1..=end.0)));
        d.want_clean(g);
        self.stats.clean_wants += 1;
    }

    /// DeleteRecords on a data group's leader: its log start moves to its high watermark (at
    /// most the end of the committed history checked so far, a batch boundary like it), or to
    /// any offset below it (inside a batch, as DeleteRecords allows).
    fn delete_records(&mut self) {
        let data: Vec<GroupId> = self.groups.iter().copied().filter(|g| *g != GroupId::METADATA).collect();
        if data.is_empty() {
            return;
        }
        let g = data[self.rng.gen_range(0..data.len())];
        let leader = (0..self.nodes.len()).find(|&i| self.nodes[i].driver.as_ref().is_some_and(|d| d.is_leader(g)));
        let Some(i) = leader else { return };
        let Some(hw) = self.nodes[i].driver.as_ref().and_then(|d| d.high_watermark(g)) else { return };
        let canon_end = self.canon.get(&g).and_then(|c| c.last_key_value()).map_or(Offset(0), |(_, b)| next_offset(b));
        let to = hw.min(canon_end);
        let disk = self.nodes[i].disks[&g].clone();
        let start = disk.borrow().log_start();
        if to <= start {
            return;
        }
        let to = if self.rng.gen_bool(0.5) { to } else { Offset(self.rng.gen_range(start.0 + 1..=to.0)) };
        disk.borrow_mut().delete_records(to);
        let max = self.deleted_to.entry(g).or_insert(to);
        *max = (*max).max(to);
        self.stats.deletes += 1;
    }

    /// With `link_reports`: each broker up is told about every broker its links to are down
    /// (cut off, or crashed: a dead broker's connections close at once), as the runtime's
    /// clock tells its driver every tick; while faults run, now and then about a link that
    /// only dropped for a moment (a flap: nothing is cut).
    fn report_links(&mut self, faults: bool) {
        if !self.p.link_reports {
            return;
        }
        let ids: Vec<NodeId> = self.nodes.iter().map(|n| n.id).collect();
        let up: Vec<bool> = self.nodes.iter().map(|n| n.driver.is_some()).collect();
        for node in &mut self.nodes {
            let me = node.id;
            let Some(d) = node.driver.as_mut() else { continue };
            for (&b, &b_up) in ids.iter().zip(&up) {
                if b != me && (!b_up || self.cut.contains(&pair(me, b))) {
                    d.peer_down(b);
                }
            }
        }
        if faults && self.links_rng.gen_bool(self.p.p_flap) {
            let i = self.links_rng.gen_range(0..self.nodes.len());
            let b = NodeId(self.links_rng.gen_range(1..=self.p.nodes));
            if let Some(d) = self.nodes[i].driver.as_mut() {
                d.peer_down(b);
                self.stats.flaps += 1;
            }
        }
    }

    fn restart_due(&mut self) {
        for i in 0..self.nodes.len() {
            if self.nodes[i].driver.is_none() && self.nodes[i].down_until <= self.now {
                self.restart(i);
            }
        }
    }

    fn deliver(&mut self) {
        let now = self.now;
        let (due, later): (Vec<Flight>, Vec<Flight>) =
            std::mem::take(&mut self.net).into_iter().partition(|f| f.at <= now);
        self.net = later;
        for f in due {
            let i = usize::try_from(f.to.0 - 1).expect("small");
            if self.cut.contains(&pair(f.from, f.to)) {
                continue;
            }
            let Some(d) = self.nodes[i].driver.as_mut() else { continue };
            let msgs =
                wire::decode_batch(f.bytes).unwrap_or_else(|e| panic!("seed {}: a batch we encoded: {e}", self.seed));
            d.receive(f.from, msgs);
        }
    }

    fn maybe_propose(&mut self) {
        if !self.rng.gen_bool(self.p.p_propose) {
            return;
        }
        let g = self.groups[self.rng.gen_range(0..self.groups.len())];
        let leaders: Vec<usize> =
            (0..self.nodes.len()).filter(|&i| self.nodes[i].driver.as_ref().is_some_and(|d| d.is_leader(g))).collect();
        if leaders.is_empty() {
            return;
        }
        let i = leaders[self.rng.gen_range(0..leaders.len())];
        self.propose_on(i, g);
    }

    fn propose_on(&mut self, i: usize, g: GroupId) -> bool {
        let id = self.next_id;
        self.next_id += 1;
        if id % 16 == 15 {
            return self.propose_log_start(i, g);
        }
        let records = self.rng.gen_range(1..=4);
        let b = data_batch(id, records);
        let d = self.nodes[i].driver.as_mut().expect("up");
        match d.propose(g, b) {
            Ok(handle) => {
                self.proposals.push(Proposal { group: g, id, handle });
                true
            }
            Err(_) => false,
        }
    }

    /// A replicated DeleteRecords up to the proposer's high watermark (its answer is not
    /// waited for: every replica applying it is checked in `on_log_start`).
    fn propose_log_start(&mut self, i: usize, g: GroupId) -> bool {
        let to = self.nodes[i].hw.get(&g).copied().unwrap_or(Offset(0));
        let b = Bytes::from(sluice_core::control::log_start_batch(to.0));
        let d = self.nodes[i].driver.as_mut().expect("up");
        let proposed = d.propose(g, b).is_ok();
        if proposed {
            self.log_starts.insert((g, to));
        }
        proposed
    }

    /// A replica applies a committed log start batch: one that was proposed, never above the
    /// replica's high watermark (the event follows the round's high watermark).
    fn on_log_start(&mut self, i: usize, group: GroupId, offset: Offset) {
        let me = self.nodes[i].id;
        if !self.log_starts.contains(&(group, offset)) {
            self.fail(format!("{group}: {me} applied log start {offset}, never proposed"));
        }
        let hw = self.nodes[i].hw.get(&group).copied().unwrap_or(Offset(0));
        if offset > hw {
            self.fail(format!("{group}: {me} applied log start {offset} above its high watermark {hw}"));
        }
        self.stats.log_starts_applied += 1;
    }

    fn run_node(&mut self, i: usize) {
        if self.nodes[i].driver.is_none() {
            return;
        }
        self.nodes[i].driver.as_mut().expect("up").tick();
        for _ in 0..4 {
            let round = self.nodes[i].driver.as_mut().expect("up").collect_ready();
            if let Some(r) = round {
                self.nodes[i].unsynced.push_back(r);
            }
            self.catch_up(i);
            if !self.sync_some(i) {
                return;
            }
        }
        self.drain_events(i);
        self.send(i);
    }

    /// Makes the catch-up reads the broker's groups asked for (from the in-memory log, a few
    /// batches at a time so long catch-ups take several reads), or leaves them for a later
    /// step; raft-rs sends the appends it waited for when a read is handed back.
    fn catch_up(&mut self, i: usize) {
        if self.rng.gen_bool(0.3) {
            return;
        }
        let reads = self.nodes[i].driver.as_mut().expect("up").take_catchup_reads();
        for (g, read) in reads {
            let disk = self.nodes[i].disks.get(&g).expect("hosted").clone();
            // DeleteRecords keeps the batches below the log start (as a segment keeps them until
            // retention deletes it), so reads from a located log start and reads asked for
            // before the log start moved both succeed.
            let out = catchup::scan_batches(read.plan, disk.borrow().batches(), 600);
            if let Err(e) = &out {
                self.fail(format!("group {g}: catch-up read failed: {e}"));
            }
            self.stats.catchup_reads += 1;
            self.nodes[i].driver.as_mut().expect("up").catchup_done(g, read, out);
        }
    }

    /// Syncs the pending rounds (all, or none this time). False when the broker crashed.
    fn sync_some(&mut self, i: usize) -> bool {
        if !self.rng.gen_bool(self.p.p_sync) {
            return true;
        }
        while let Some(r) = self.nodes[i].unsynced.pop_front() {
            for g in &r.sync {
                if self.nodes[i].disks[g].borrow_mut().sync().is_err() {
                    self.stats.disk_faults += 1;
                    self.crash(i);
                    return false;
                }
            }
            self.nodes[i].driver.as_mut().expect("up").on_synced(r.id);
        }
        true
    }

    fn drain_events(&mut self, i: usize) {
        let events = self.nodes[i].driver.as_mut().expect("up").take_events();
        let me = self.nodes[i].id;
        for e in events {
            match e {
                Event::HighWatermark { group, hw } => self.on_hw(i, group, hw),
                Event::Leader { group, leader: Some(l), term } => {
                    if !self.leaders.contains_key(&(group, term)) {
                        self.stats.terms += 1;
                    }
                    let prev = *self.leaders.entry((group, term)).or_insert(l);
                    if prev != l {
                        self.fail(format!("{group} term {} has leaders {prev} and {l} (seen by {me})", term.0));
                    }
                }
                Event::Leader { .. } => {}
                Event::Failed { group, error } => self.fail(format!("{group} failed on {me}: {error}")),
                Event::LogStart { group, offset } => self.on_log_start(i, group, offset),
            }
        }
    }

    fn on_hw(&mut self, i: usize, group: GroupId, hw: Offset) {
        let before = self.nodes[i].hw.get(&group).copied().unwrap_or(Offset(0));
        if hw < before {
            self.fail(format!("{group}: hw went back from {before} to {hw} on {}", self.nodes[i].id));
        }
        self.nodes[i].hw.insert(group, hw);
        let from = self.nodes[i].verified.get(&group).copied().unwrap_or(Offset(0));
        let upto = self.check_log(i, group, hw, from);
        self.nodes[i].verified.insert(group, upto);
    }

    /// Checks the broker's batches below `hw` (from offset `from`) against the committed
    /// history, extending it. Returns the offset checked up to now.
    fn check_log(&mut self, i: usize, group: GroupId, hw: Offset, from: Offset) -> Offset {
        let disk = self.nodes[i].disks[&group].clone();
        let disk = disk.borrow();
        let canon = self.canon.entry(group).or_default();
        let mut end = None;
        // Batches taking no offset (Raft control batches) hold no record at any offset: the
        // history is of the batches that take offsets.
        let taking = disk.batches().iter().filter(|(_, b)| !takes_no_offset(b));
        for (base, b) in taking.filter(|(base, _)| *base >= from).take_while(|(base, _)| *base < hw) {
            match canon.get(base) {
                Some(cbytes) if cbytes == b => {}
                Some(cbytes) => panic!(
                    "seed {}: {group}: committed batch at {base} differs on {} (hw {hw}, incarnation {}): has {}, history has {}",
                    self.seed,
                    self.nodes[i].id,
                    self.nodes[i].incarnation,
                    describe(b),
                    describe(cbytes)
                ),
                None => {
                    // Contiguous with the history before it, unless this log restarted here
                    // (a snapshot installed beyond what the history holds yet).
                    let prev = canon.range(..*base).next_back().map_or(Offset(0), |(_, c)| next_offset(c));
                    let restarted = disk.batches().first().is_some_and(|(f, _)| f == base) && *base > prev;
                    assert!(
                        prev == *base || restarted,
                        "seed {}: {group}: a hole in the committed history before {base} (history ends at {prev})",
                        self.seed
                    );
                    if let Some((next, _)) = canon.range(*base..).next() {
                        assert!(next_offset(b) <= *next, "seed {}: {group}: {base} overlaps the history", self.seed);
                    }
                    canon.insert(*base, b.clone());
                }
            }
            end = Some(next_offset(b));
        }
        if let Some(end) = end {
            if end != hw {
                panic!(
                    "seed {}: {group}: hw {hw} is not a batch boundary on {} (ends at {end})",
                    self.seed, self.nodes[i].id
                );
            }
        }
        end.unwrap_or(from).max(from)
    }

    fn send(&mut self, i: usize) {
        let from = self.nodes[i].id;
        let out = self.nodes[i].driver.as_mut().expect("up").take_outbox();
        for b in out {
            let kept: Vec<_> = b.msgs.into_iter().filter(|_| !self.rng.gen_bool(self.p.p_drop)).collect();
            let bytes = wire::encode_batch(&kept);
            let copies = if self.rng.gen_bool(self.p.p_dup) { 2 } else { 1 };
            for _ in 0..copies {
                let at = self.now + self.rng.gen_range(0..=self.p.max_delay);
                self.net.push(Flight { at, from, to: b.to, bytes: bytes.clone() });
            }
        }
    }

    fn poll_proposals(&mut self) {
        let mut still = Vec::new();
        for mut p in std::mem::take(&mut self.proposals) {
            match p.handle.try_recv() {
                Ok(None) => still.push(p),
                Ok(Some(Ok(c))) => self.acked.entry(p.group).or_default().push((p.id, c.base)),
                Ok(Some(Err(_))) | Err(_) => self.stats.failed_proposals += 1,
            }
        }
        self.proposals = still;
    }

    /// Heals everything and runs without faults until every group commits a new proposal.
    fn settle(&mut self) {
        self.cut.clear();
        for n in &mut self.nodes {
            n.down_until = self.now;
            n.disks.values().for_each(|d| d.borrow_mut().fail_next_sync = false);
        }
        let mut need: BTreeSet<GroupId> = self.groups.iter().copied().collect();
        let mut mine: BTreeMap<GroupId, u64> = BTreeMap::new();
        for _ in 0..4000 {
            self.step(false);
            for &g in &need.clone() {
                let acked =
                    mine.get(&g).is_some_and(|id| self.acked.get(&g).is_some_and(|a| a.iter().any(|x| x.0 == *id)));
                if acked {
                    need.remove(&g);
                    continue;
                }
                let pending = mine.get(&g).is_some_and(|id| self.proposals.iter().any(|p| p.id == *id));
                if !pending {
                    if let Some(i) =
                        (0..self.nodes.len()).find(|&i| self.nodes[i].driver.as_ref().is_some_and(|d| d.is_leader(g)))
                    {
                        let id = self.next_id;
                        if self.propose_on(i, g) {
                            mine.insert(g, id);
                        }
                    }
                }
            }
            if need.is_empty() && self.converged() {
                return;
            }
        }
        self.fail(format!(
            "no progress after healing: groups {need:?} never committed a new proposal (or brokers never converged)"
        ));
    }

    fn converged(&self) -> bool {
        self.nodes.iter().all(|n| n.driver.is_some())
            && self.groups.iter().all(|g| {
                let hws: BTreeSet<Offset> =
                    self.nodes.iter().filter_map(|n| n.driver.as_ref()?.high_watermark(*g)).collect();
                let ends: BTreeSet<Offset> = self.nodes.iter().map(|n| log_end(&n.disks[g].borrow())).collect();
                hws.len() == 1 && ends.len() == 1 && hws == ends
            })
    }

    /// Every broker's log holds every acknowledged proposal once, where it was acknowledged,
    /// and no proposal twice; every batch matches the committed history.
    fn final_check(&mut self) {
        for i in 0..self.nodes.len() {
            for g in self.groups.clone() {
                let hw = self.nodes[i].driver.as_ref().and_then(|d| d.high_watermark(g)).expect("up after settle");
                self.check_log(i, g, hw, Offset(0));
            }
        }
        for n in &self.nodes {
            for (g, disk) in &n.disks {
                let disk = disk.borrow();
                self.stats.installs += disk.installs;
                // A snapshot restarts a log at the batch holding its leader's log start, never
                // above it (the batches between the log start and the leader's window are sent
                // too): never past what DeleteRecords moved a log start to.
                if disk.installs > 0 {
                    let deleted = self.deleted_to.get(g).copied().unwrap_or(Offset(0));
                    assert!(
                        disk.log_start() <= deleted,
                        "seed {}: {g}: {} restarted at {} above every deleted offset ({deleted})",
                        self.seed,
                        n.id,
                        disk.log_start()
                    );
                }
                let mut seen: BTreeMap<u64, Offset> = BTreeMap::new();
                for (base, b) in disk.batches() {
                    let Some(id) = payload_id(b) else { continue };
                    if let Some(prev) = seen.insert(id, *base) {
                        panic!("seed {}: {g}: proposal {id} twice on {} (at {prev} and {base})", self.seed, n.id);
                    }
                }
                for (id, base) in self.acked.get(g).into_iter().flatten() {
                    // A log restarted by a snapshot lacks what lies below its start.
                    let restarted_past = *base < disk.log_start() && disk.installs > 0;
                    if seen.get(id) != Some(base) && (!restarted_past || seen.contains_key(id)) {
                        panic!(
                            "seed {}: {g}: acknowledged proposal {id} (at {base}) is at {:?} on {}",
                            self.seed,
                            seen.get(id),
                            n.id
                        );
                    }
                }
            }
        }
    }
}

fn pair(a: NodeId, b: NodeId) -> (NodeId, NodeId) {
    (a.min(b), a.max(b))
}

fn data_batch(id: u64, records: usize) -> Bytes {
    let value = id.to_be_bytes();
    let recs: Vec<_> = (0..records).map(|_| batch::Record { key: None, value: &value }).collect();
    Bytes::from(batch::build(&recs, 0))
}

/// The proposal id in a data batch; None for sluice's Raft control batches.
fn payload_id(b: &Bytes) -> Option<u64> {
    let h = BatchHeader::parse(b).expect("stored batches parse");
    if control::is_raft_control(&h, b) {
        return None;
    }
    let recs = batch::records(b).expect("uncompressed");
    let v = recs.first()?.value?;
    Some(u64::from_be_bytes(v.try_into().expect("8-byte ids")))
}

fn describe(b: &Bytes) -> String {
    let h = BatchHeader::parse(b).expect("stored batches parse");
    format!(
        "[epoch {} offsets {}..={} proposal {:?}]",
        h.partition_leader_epoch,
        h.base_offset,
        h.last_offset(),
        payload_id(b)
    )
}

fn takes_no_offset(b: &Bytes) -> bool {
    BatchHeader::parse(b).expect("stored batches parse").takes_no_offset()
}

fn next_offset(b: &Bytes) -> Offset {
    Offset(BatchHeader::parse(b).expect("stored batches parse").last_offset() + 1)
}

fn log_end(d: &MemDisk) -> Offset {
    d.batches().last().map_or(d.log_start(), |(_, b)| next_offset(b))
}

fn run(seed: u64) -> (u64, usize, Stats) {
    let mut w = World::new(seed);
    for _ in 0..w.p.steps {
        w.step(true);
    }
    w.settle();
    w.final_check();
    let acked = w.acked.values().map(Vec::len).sum();
    (w.now, acked, w.stats)
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| v.parse().unwrap_or_else(|_| panic!("{name} must be a number")))
}

#[test]
fn raft_sim() {
    let seeds: Vec<u64> = match env_u64("SLUICE_SIM_SEED") {
        Some(s) => vec![s],
        None => (0..env_u64("SLUICE_SIM_SEEDS").unwrap_or(150)).collect(),
    };
    let started = std::time::Instant::now();
    let (mut steps, mut acked, mut stats) = (0, 0, Stats::default());
    for &seed in &seeds {
        let r = std::panic::catch_unwind(|| run(seed));
        match r {
            Ok((s, a, st)) => {
                steps += s;
                acked += a;
                stats += st;
            }
            Err(e) => {
                eprintln!("raft_sim failed at seed {seed}; replay: SLUICE_SIM_SEED={seed} cargo test --release -p sluice-shard --test raft_sim");
                std::panic::resume_unwind(e);
            }
        }
    }
    eprintln!(
        "raft_sim: {} seeds, {steps} steps, {acked} acknowledged proposals checked, {stats:?}, {:?}",
        seeds.len(),
        started.elapsed()
    );
    if seeds.len() >= 20 {
        assert!(stats.log_starts_applied > 0, "no replicated DeleteRecords was applied in {} seeds", seeds.len());
        assert!(stats.clean_wants > 0, "no floor was moved for cleaning in {} seeds", seeds.len());
    }
}

/// Three brokers, twelve groups, no faults, no random proposals, every write synced.
fn calm_params() -> Params {
    Params {
        link_reports: false,
        p_flap: 0.0,
        nodes: 3,
        groups: 12,
        steps: 0,
        p_drop: 0.0,
        p_dup: 0.0,
        max_delay: 1,
        p_crash: 0.0,
        p_cut: 0.0,
        p_heal: 0.0,
        p_disk_fault: 0.0,
        p_propose: 0.0,
        p_sync: 1.0,
        window: WINDOW,
        p_delete: 0.0,
        p_clean: 0.0,
    }
}

/// A group with every voter matched goes quiet (not ticked, no heartbeats: brokers exchange
/// only empty keepalive batches); a leader's broker dying wakes its groups on the others, which
/// elect new leaders and commit again.
#[test]
fn idle_groups_go_quiet_and_wake_when_a_broker_dies() {
    let mut w = World::with(7, StdRng::seed_from_u64(7), calm_params());
    w.settle();
    for _ in 0..200 {
        w.step(false);
    }
    let active: Vec<usize> = w.nodes.iter().map(|n| n.driver.as_ref().expect("up").active_groups()).collect();
    assert_eq!(active, vec![0, 0, 0], "every idle group is quiet");
    w.step(false);
    let idle_msgs: usize = w.net.iter().map(|f| wire::decode_batch(f.bytes.clone()).expect("ours").len()).sum();
    assert_eq!(idle_msgs, 0, "quiet groups send nothing; brokers exchange empty keepalives only");

    // Kill the broker leading the most groups for longer than the test runs.
    let leads = |w: &World, i: usize| {
        w.groups.iter().filter(|&&g| w.nodes[i].driver.as_ref().is_some_and(|d| d.is_leader(g))).count()
    };
    let victim = (0..3).max_by_key(|&i| leads(&w, i)).expect("three brokers");
    assert!(leads(&w, victim) > 0);
    w.crash(victim);
    w.nodes[victim].down_until = u64::MAX;
    let mut elected = false;
    for _ in 0..400 {
        w.step(false);
        let covered = w
            .groups
            .iter()
            .all(|&g| (0..3).any(|i| i != victim && w.nodes[i].driver.as_ref().is_some_and(|d| d.is_leader(g))));
        if covered {
            elected = true;
            break;
        }
    }
    assert!(elected, "every group elected a leader among the surviving brokers");
    let before = w.acked.values().map(Vec::len).sum::<usize>();
    for _ in 0..200 {
        w.step(false);
        for g in w.groups.clone() {
            if let Some(i) = (0..3).find(|&i| w.nodes[i].driver.as_ref().is_some_and(|d| d.is_leader(g))) {
                w.propose_on(i, g);
            }
        }
    }
    let after = w.acked.values().map(Vec::len).sum::<usize>();
    assert!(after >= before + w.groups.len(), "the surviving majority commits in every group");
}

/// A new group's first leader is its preferred replica even when that replica's first vote
/// requests are lost (the other brokers had not opened the group yet): it campaigns again
/// quickly, while the others wait their longest election timeout before their first campaign.
#[test]
fn a_new_groups_preferred_replica_leads_even_when_its_first_campaign_is_lost() {
    let mut w = World::with(11, StdRng::seed_from_u64(11), calm_params());
    let preferred = |k: usize| k % 3;
    for (k, &g) in w.groups.clone().iter().enumerate() {
        for i in 0..3 {
            let d = w.nodes[i].driver.as_mut().expect("up");
            if i == preferred(k) {
                assert!(d.campaign_first(g));
            } else {
                assert!(d.defer_first_campaign(g));
            }
        }
    }
    for i in 0..3 {
        w.run_node(i);
    }
    w.net.clear(); // the first vote requests find no group and are dropped
    let leader = |w: &World, g: GroupId| (0..3).find(|&i| w.nodes[i].driver.as_ref().is_some_and(|d| d.is_leader(g)));
    for _ in 0..100 {
        w.step(false);
        if w.groups.iter().all(|&g| leader(&w, g).is_some()) {
            break;
        }
    }
    let got: Vec<Option<usize>> = w.groups.iter().map(|&g| leader(&w, g)).collect();
    let want: Vec<Option<usize>> = (0..w.groups.len()).map(|k| Some(preferred(k))).collect();
    assert_eq!(got, want, "every group is led by its preferred replica");
}

/// With every broker up and every link healthy, a leader counts every voter in sync at every
/// step under steady proposals — also right after raft-rs's quorum check (once per election
/// timeout), which clears its `recent_active` flags until the followers' next messages: an
/// ISR taken from those flags dropped below `min.insync.replicas` for a moment each time, and
/// acks=all produce met NOT_ENOUGH_REPLICAS with all replicas alive.
#[test]
fn a_healthy_groups_leader_counts_every_voter_in_sync_at_every_step() {
    let mut w = World::with(5, StdRng::seed_from_u64(5), calm_params());
    w.settle();
    let g = w.groups[1];
    let mut checked = 0;
    for _ in 0..300 {
        let leader = (0..3).find(|&i| w.nodes[i].driver.as_ref().is_some_and(|d| d.is_leader(g)));
        if let Some(i) = leader {
            w.propose_on(i, g);
        }
        w.step(false);
        let Some(i) = leader else { continue };
        let Some(isr) = w.nodes[i].driver.as_ref().and_then(|d| d.in_sync(g)) else { continue };
        let hw = w.nodes[i].driver.as_ref().and_then(|d| d.high_watermark(g));
        // A follower whose last append is not acknowledged yet may trail the commit index;
        // the leader and one follower always make the commit, so at least two are in sync.
        assert!(isr.len() >= 2, "step {}: ISR {isr:?} (hw {hw:?})", w.now);
        checked += 1;
    }
    assert!(checked > 250, "the leader stayed: {checked} steps checked");
}

/// The groups each broker leads, by broker index.
fn led_by(w: &World, i: usize) -> Vec<GroupId> {
    w.groups.iter().copied().filter(|&g| w.nodes[i].driver.as_ref().is_some_and(|d| d.is_leader(g))).collect()
}

/// A leader cut off from both other brokers while alive (not a crash), its links reported
/// down on every side at once: the other two elect new leaders for its groups within a few
/// ticks (well before an election timeout: the fast path), the old leader steps down within
/// two election timeouts (check-quorum), at most one leader per term throughout (the World
/// checks every step), and nothing it took after the cut is ever acknowledged.
#[test]
fn a_cut_off_leaders_groups_elect_within_a_few_ticks_and_it_steps_down() {
    let mut p = calm_params();
    p.link_reports = true;
    let mut w = World::with(13, StdRng::seed_from_u64(13), p);
    w.settle();
    for _ in 0..200 {
        w.step(false); // idle: every group quiet, the worst case for waking
    }
    let victim = (0..3).max_by_key(|&i| led_by(&w, i).len()).expect("three brokers");
    let led = led_by(&w, victim);
    assert!(!led.is_empty());
    let vid = w.nodes[victim].id;
    let term_before: BTreeMap<GroupId, Term> = led
        .iter()
        .map(|&g| (g, w.nodes[victim].driver.as_ref().and_then(|d| d.leader(g)).expect("hosted").1))
        .collect();
    for b in 1..=3 {
        w.cut.insert(pair(vid, NodeId(b)));
    }
    let stale_from = w.next_id;
    for &g in &led {
        assert!(w.propose_on(victim, g), "the old leader still takes proposals");
    }
    let stale_to = w.next_id;
    let others = |w: &World, g: GroupId| {
        (0..3).find(|&i| i != victim && w.nodes[i].driver.as_ref().is_some_and(|d| d.is_leader(g)))
    };
    let mut elected_after = None;
    for t in 1..=40u64 {
        w.step(false);
        if led.iter().all(|&g| others(&w, g).is_some()) {
            elected_after = Some(t);
            break;
        }
    }
    let election = u64::try_from(DriverConfig::default().election_ticks).expect("small");
    let elected_after = elected_after.expect("the majority side elected leaders for every group");
    assert!(elected_after < election, "new leaders after {elected_after} ticks: not before an election timeout");
    for &g in &led {
        let i = others(&w, g).expect("elected");
        let term = w.nodes[i].driver.as_ref().and_then(|d| d.leader(g)).expect("hosted").1;
        assert!(term > term_before[&g], "{g}: a new term");
    }
    let mut stepped_down = false;
    for _ in 0..(3 * election) {
        w.step(false);
        if led_by(&w, victim).is_empty() {
            stepped_down = true;
            break;
        }
    }
    assert!(stepped_down, "the cut-off leader stepped down (check-quorum)");
    w.settle();
    w.final_check();
    let acked_stale: Vec<u64> =
        w.acked.values().flatten().map(|(id, _)| *id).filter(|id| (stale_from..stale_to).contains(id)).collect();
    assert!(acked_stale.is_empty(), "proposals the cut-off leader took were acknowledged: {acked_stale:?}");
}

/// One follower told, again and again, that its links to a leader are down while the other
/// follower still hears that leader (and messages still flow): that follower's quick
/// campaigns are pre-votes the others ignore (check-quorum's lease), so no term changes, the
/// leader keeps every group and proposals keep committing.
#[test]
fn a_link_reported_down_on_one_follower_alone_changes_no_leader() {
    let mut w = World::with(17, StdRng::seed_from_u64(17), calm_params());
    w.settle();
    for _ in 0..200 {
        w.step(false);
    }
    let leader = (0..3).max_by_key(|&i| led_by(&w, i).len()).expect("three brokers");
    let led = led_by(&w, leader);
    assert!(!led.is_empty());
    let lid = w.nodes[leader].id;
    let follower = (leader + 1) % 3;
    let terms = |w: &World| -> Vec<Term> {
        led.iter()
            .flat_map(|&g| w.nodes.iter().map(move |n| n.driver.as_ref().and_then(|d| d.leader(g)).expect("hosted").1))
            .collect()
    };
    let before = terms(&w);
    let acked_before = w.acked.values().map(Vec::len).sum::<usize>();
    for step in 0..60 {
        if step % 5 == 0 {
            for &g in &led {
                w.propose_on(leader, g);
            }
        }
        // `World::step` without faults, the follower told of the leader's links right before
        // each tick, as the runtime's clock tells its driver.
        w.now += 1;
        w.deliver();
        w.nodes[follower].driver.as_mut().expect("up").peer_down(lid);
        for i in 0..3 {
            w.run_node(i);
        }
        w.poll_proposals();
        assert_eq!(terms(&w), before, "step {step}: a term changed");
        assert_eq!(led_by(&w, leader), led, "step {step}: the leader lost a group");
    }
    let acked_after = w.acked.values().map(Vec::len).sum::<usize>();
    assert!(acked_after >= acked_before + led.len() * 8, "proposals kept committing: {acked_before} → {acked_after}");
}

/// A group shrunk to one voter (a reassignment to one replica: the other brokers drop theirs)
/// reopens with that voter after a crash that loses everything not synced, and leads: the
/// membership change's state is written in the round that applied it. It was left for the
/// group's next Ready, which a one-voter group at rest never has, so the reopened group had
/// its three old voters and no one left to vote for it.
#[test]
fn a_group_shrunk_to_one_voter_reopens_with_that_voter_after_a_crash() {
    let mut w = World::with(7, StdRng::seed_from_u64(7), calm_params());
    w.settle();
    let g = w.groups[0];
    let leads = |w: &World, i: usize| w.nodes[i].driver.as_ref().is_some_and(|d| d.is_leader(g));
    let l = (0..3).find(|&i| leads(&w, i)).expect("a settled group has a leader");
    let me = w.nodes[l].id;
    let others: Vec<usize> = (0..3).filter(|&i| i != l).collect();
    let changes = others.iter().map(|&i| (wire::ChangeKind::RemoveNode, w.nodes[i].id)).collect();
    let spec = wire::ConfChangeSpec { transition: wire::Transition::Auto, changes };
    let _handle = w.nodes[l].driver.as_mut().expect("up").propose_conf_change(g, &spec).expect("proposed");
    let alone = |w: &World| {
        w.nodes[l]
            .driver
            .as_ref()
            .and_then(|d| d.membership(g))
            .is_some_and(|m| m.voters == vec![me] && !m.joint && !m.change_pending)
    };
    for _ in 0..300 {
        if alone(&w) {
            break;
        }
        w.step(false);
    }
    assert!(alone(&w), "the change applied: {:?}", w.nodes[l].driver.as_ref().and_then(|d| d.membership(g)));
    for &i in &others {
        w.nodes[i].driver.as_mut().expect("up").remove_group(g);
    }
    for _ in 0..20 {
        w.step(false);
    }
    // A crash that keeps only what was synced, then a reopen.
    let n = &mut w.nodes[l];
    n.driver = None;
    n.unsynced.clear();
    for disk in n.disks.values() {
        disk.borrow_mut().crash(0, false);
    }
    w.restart(l);
    for _ in 0..300 {
        if leads(&w, l) {
            break;
        }
        w.step(false);
    }
    assert!(
        leads(&w, l),
        "the one voter leads after its reopen: {:?}",
        w.nodes[l].driver.as_ref().and_then(|d| d.membership(g))
    );
}
