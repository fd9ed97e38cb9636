//! The metadata log's quorum as its leader sees it: what Kafka's DescribeQuorum answers
//! (`kafka-metadata-quorum describe --status / --replication`).
//!
//! Contract:
//! - [`describe`] answers only on the shard hosting the metadata log (shard 0) of the broker
//!   leading it, and `None` everywhere else (a follower, another shard, no group 0): as a
//!   KRaft controller that is not the leader answers NOT_LEADER_OR_FOLLOWER, the caller
//!   forwards or says so. It takes the leader (this broker), the term as leader epoch, the high
//!   watermark (the commit index) and, per voter (every member; sluice has no observers), its
//!   log end offset (its matched Raft index): the metadata log's offsets are its Raft indexes,
//!   every entry taking one, as every record of Kafka's `__cluster_metadata` (its control
//!   records included) does; the partitions' logs, whose Raft control batches take no offset,
//!   would show 0 for a quorum that has committed only those.
//! - Timestamps (ms since the epoch): the leader's own are now, as Kafka's. A follower's are
//!   [`Tracker`]'s: sampled every `RAFT_TICK_MS` while this broker leads the metadata log
//!   ([`spawn_sampler`]): last fetch = the last sample at which its peer links were live
//!   (Raft followers do not fetch: a live link — heartbeats every
//!   `peer_heartbeat_interval_ms` — is the leader hearing from it); last caught up = the last
//!   sample at which it had matched the leader's last index of the sample before (Kafka's
//!   `lastCaughtUpTimestamp`: reached the leader's end as of its previous fetch). -1 until
//!   first seen in the current term (a new leader starts afresh, as Kafka's).
//! - [`encode`] / [`decode`]: the answer as one broker forwards it to another (big-endian, a
//!   version byte, the voter count checked against `MAX_CLUSTER_MEMBERS` and the bytes left
//!   before anything is allocated; trailing bytes refused).

use super::Replicas;
use crate::raft::GroupId;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use sluice_core::limits::{MAX_CLUSTER_MEMBERS, RAFT_TICK_MS};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

/// One voter of the metadata log as the leader sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VoterState {
    pub node: i32,
    /// The offset after its last matched batch; -1 unknown.
    pub log_end_offset: i64,
    /// ms since the epoch; -1 unknown.
    pub last_fetch_ms: i64,
    /// ms since the epoch; -1 unknown.
    pub last_caught_up_ms: i64,
}

/// The metadata log's quorum (DescribeQuorum's partition).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumState {
    pub leader: i32,
    pub leader_epoch: i32,
    pub high_watermark: i64,
    /// Every voter in node-id order, the leader among them.
    pub voters: Vec<VoterState>,
}

/// When each follower was last heard and last caught up, for one term of this broker's
/// leadership (module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracker {
    epoch: i32,
    /// The leader's last index at the previous sample.
    prev_last: u64,
    seen: BTreeMap<i32, (i64, i64)>,
}

impl Tracker {
    pub fn new(epoch: i32, last: u64) -> Tracker {
        Tracker { epoch, prev_last: last, seen: BTreeMap::new() }
    }

    /// One sample at `now_ms`: the leader's last index, each follower's matched index and
    /// whether its links are live.
    pub fn observe(&mut self, now_ms: i64, last: u64, followers: &[(i32, u64, bool)]) {
        for &(node, matched, live) in followers {
            let e = self.seen.entry(node).or_insert((-1, -1));
            if live {
                e.0 = now_ms;
                if matched >= self.prev_last {
                    e.1 = now_ms;
                }
            }
        }
        self.prev_last = last;
    }

    /// (last fetch, last caught up) of `node`, -1 when not seen.
    pub fn times(&self, node: i32) -> (i64, i64) {
        self.seen.get(&node).copied().unwrap_or((-1, -1))
    }
}

thread_local! {
    /// This shard's tracker while it leads the metadata log.
    static TRACKER: RefCell<Option<Tracker>> = const { RefCell::new(None) };
}

/// Samples the metadata log's followers every `RAFT_TICK_MS` while this broker leads it
/// (started once, on the shard hosting the metadata log; ends with the runtime).
pub fn spawn_sampler(r: &Rc<Replicas>) {
    let weak = Rc::downgrade(r);
    glommio::spawn_local(async move {
        loop {
            glommio::timer::sleep(Duration::from_millis(RAFT_TICK_MS)).await;
            let Some(r) = weak.upgrade() else { return };
            sample(&r, sluice_core::clock::now_ms());
        }
    })
    .detach();
}

fn sample(r: &Replicas, now_ms: i64) {
    let Some(p) = r.progress(GroupId::METADATA) else {
        TRACKER.with(|t| t.borrow_mut().take());
        return;
    };
    let epoch = r.leader(GroupId::METADATA).map_or(-1, |(_, e)| e.0);
    let followers: Vec<(i32, u64, bool)> =
        p.matched.iter().filter(|(n, _)| *n != r.me).map(|(n, m)| (n.0, *m, r.is_live(*n))).collect();
    TRACKER.with(|t| {
        let mut t = t.borrow_mut();
        let tracker = match t.as_mut() {
            Some(tr) if tr.epoch == epoch => tr,
            _ => t.insert(Tracker::new(epoch, p.last)),
        };
        tracker.observe(now_ms, p.last, &followers);
    });
}

/// The quorum, on the metadata log's leader (module docs); `None` elsewhere.
pub fn describe(r: &Replicas) -> Option<QuorumState> {
    let group = GroupId::METADATA;
    let p = r.progress(group)?;
    let (_, epoch) = r.leader(group)?;
    let now = sluice_core::clock::now_ms();
    // Offsets of the metadata log are its Raft indexes: every entry takes one, as every record
    // of Kafka's `__cluster_metadata` (its control records included) does.
    let end_of = |index: u64| i64::try_from(index).unwrap_or(i64::MAX);
    let voters = TRACKER.with(|t| {
        let t = t.borrow();
        p.matched
            .iter()
            .map(|(node, matched)| {
                let me = *node == r.me;
                let (fetch, caught_up) = match (me, t.as_ref().filter(|t| t.epoch == epoch.0)) {
                    (true, _) => (now, now),
                    (false, Some(t)) => t.times(node.0),
                    (false, None) => (-1, -1),
                };
                VoterState {
                    node: node.0,
                    log_end_offset: end_of(if me { p.last } else { *matched }),
                    last_fetch_ms: fetch,
                    last_caught_up_ms: caught_up,
                }
            })
            .collect()
    });
    Some(QuorumState { leader: r.me.0, leader_epoch: epoch.0, high_watermark: end_of(p.committed), voters })
}

/// [`describe`] on this broker's shard 0 (where the metadata log is), from any shard.
pub async fn describe_on_broker(shard: &crate::shard::Shard) -> Option<QuorumState> {
    if shard.id.index() == 0 {
        return shard.replicas().and_then(|r| describe(&r));
    }
    let (reply, rx) = futures::channel::oneshot::channel();
    shard.send(crate::shard::shard_id(0), crate::msg::ShardMsg::Quorum { reply }).await.ok()?;
    rx.await.ok().flatten()
}

const WIRE_VERSION: u8 = 1;
const VOTER_BYTES: usize = 4 + 8 + 8 + 8;

/// Why a forwarded quorum answer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuorumWireError {
    #[error("quorum answer of version {0}, this broker reads {WIRE_VERSION}")]
    Version(u8),
    #[error("quorum answer truncated")]
    Truncated,
    #[error("quorum answer lists {0} voters, at most {MAX_CLUSTER_MEMBERS}")]
    TooManyVoters(usize),
    #[error("{0} bytes after the quorum answer")]
    Trailing(usize),
}

/// The answer's wire form (module docs).
pub fn encode(q: &QuorumState) -> Bytes {
    let mut b = BytesMut::with_capacity(1 + 16 + 2 + q.voters.len() * VOTER_BYTES);
    b.put_u8(WIRE_VERSION);
    b.put_i32(q.leader);
    b.put_i32(q.leader_epoch);
    b.put_i64(q.high_watermark);
    let n = u16::try_from(q.voters.len().min(MAX_CLUSTER_MEMBERS)).expect("MAX_CLUSTER_MEMBERS fits a u16");
    b.put_u16(n);
    for v in q.voters.iter().take(usize::from(n)) {
        b.put_i32(v.node);
        b.put_i64(v.log_end_offset);
        b.put_i64(v.last_fetch_ms);
        b.put_i64(v.last_caught_up_ms);
    }
    b.freeze()
}

/// Reads what [`encode`] wrote, checking every length first.
pub fn decode(mut b: &[u8]) -> Result<QuorumState, QuorumWireError> {
    if b.remaining() < 1 + 16 + 2 {
        return Err(QuorumWireError::Truncated);
    }
    let version = b.get_u8();
    if version != WIRE_VERSION {
        return Err(QuorumWireError::Version(version));
    }
    let (leader, leader_epoch, high_watermark) = (b.get_i32(), b.get_i32(), b.get_i64());
    let n = usize::from(b.get_u16());
    if n > MAX_CLUSTER_MEMBERS {
        return Err(QuorumWireError::TooManyVoters(n));
    }
    if b.remaining() < n * VOTER_BYTES {
        return Err(QuorumWireError::Truncated);
    }
    let voters = (0..n)
        .map(|_| VoterState {
            node: b.get_i32(),
            log_end_offset: b.get_i64(),
            last_fetch_ms: b.get_i64(),
            last_caught_up_ms: b.get_i64(),
        })
        .collect();
    if b.has_remaining() {
        return Err(QuorumWireError::Trailing(b.remaining()));
    }
    Ok(QuorumState { leader, leader_epoch, high_watermark, voters })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> QuorumState {
        QuorumState {
            leader: 1,
            leader_epoch: 7,
            high_watermark: 42,
            voters: vec![
                VoterState { node: 0, log_end_offset: 40, last_fetch_ms: 1_000, last_caught_up_ms: 900 },
                VoterState { node: 1, log_end_offset: 42, last_fetch_ms: 1_001, last_caught_up_ms: 1_001 },
                VoterState { node: 2, log_end_offset: -1, last_fetch_ms: -1, last_caught_up_ms: -1 },
            ],
        }
    }

    #[test]
    fn answers_round_trip_and_damage_is_refused() {
        let q = state();
        let b = encode(&q);
        assert_eq!(decode(&b), Ok(q));
        for cut in 0..b.len() {
            assert_eq!(decode(&b[..cut]), Err(QuorumWireError::Truncated), "cut at {cut}");
        }
        let mut long = b.to_vec();
        long.push(0);
        assert_eq!(decode(&long), Err(QuorumWireError::Trailing(1)));
        let mut other = b.to_vec();
        other[0] = 9;
        assert_eq!(decode(&other), Err(QuorumWireError::Version(9)));
        let mut many = b[..17].to_vec();
        many.extend_from_slice(&u16::MAX.to_be_bytes());
        assert_eq!(decode(&many), Err(QuorumWireError::TooManyVoters(usize::from(u16::MAX))));
    }

    #[test]
    fn a_follower_is_caught_up_when_it_reached_the_previous_end() {
        let mut t = Tracker::new(3, 10);
        // Node 2 matched 10 (the end at the previous sample), node 3 is behind at 8.
        t.observe(100, 12, &[(2, 10, true), (3, 8, true)]);
        assert_eq!(t.times(2), (100, 100));
        assert_eq!(t.times(3), (100, -1));
        // Node 3 catches up with 12 (the previous end) while the leader moved on to 15.
        t.observe(200, 15, &[(2, 12, true), (3, 12, true)]);
        assert_eq!(t.times(3), (200, 200));
        // Node 2's links go down: its times stay where they were.
        t.observe(300, 15, &[(2, 12, false), (3, 15, true)]);
        assert_eq!(t.times(2), (200, 200));
        assert_eq!(t.times(3), (300, 300));
        assert_eq!(t.times(4), (-1, -1), "never seen");
    }

    #[test]
    fn a_silent_follower_is_never_heard_nor_caught_up() {
        let mut t = Tracker::new(1, 5);
        t.observe(100, 5, &[(2, 5, false)]);
        assert_eq!(t.times(2), (-1, -1));
    }
}
