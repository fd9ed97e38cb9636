//! Fetch sessions (KIP-227) on one shard: which partitions an incremental Fetch stands for, and
//! which partitions its answer must carry.
//!
//! Contract: a full Fetch with session epoch 0 (INITIAL) opens a session (closing the one it
//! names, if any) and is answered with every partition and the new session id; a Fetch with
//! epoch -1 (FINAL) closes the session it names and is answered as a sessionless full fetch
//! (session id 0). An incremental Fetch (id, epoch ≥ 1) must carry the session's next epoch:
//! its partitions are added or updated, its forgotten partitions removed, the whole session is
//! read, and the answer carries only the partitions with records, an error, or a high
//! watermark or log start offset other than the one last answered. As in Kafka's
//! FetchManager, every epoch other than 0 and -1 is incremental: an unknown session id
//! (session id 0 included) is answered FETCH_SESSION_ID_NOT_FOUND, a known one with another
//! epoch INVALID_FETCH_SESSION_EPOCH; the client then starts a new session with a full fetch.
//! Sessions hold owned copies of topic names, never slices of a request frame (a frame's
//! trailing bytes would otherwise stay in memory as long as the session).
//!
//! Why: without sessions every answer is full, and a Java consumer that closes (or whose
//! session changes) while a full fetch is in flight checks that answer against its new,
//! empty session and logs "invalid full fetch response with extraIds" (FetchSessionHandler).
//!
//! Sessions live on the shard that accepted the connection, at most `FETCH_SESSIONS_PER_SHARD`
//! listing at most `FETCH_SESSION_PARTITIONS_PER_SHARD` partitions together. To make room a
//! new session evicts only sessions unused for longer than `FETCH_SESSION_EVICTION_IDLE_MS`
//! (least recently used first, as Kafka's cache evicts stale sessions); if that is not enough,
//! the full fetch is answered without a session (session id 0), so a client opening sessions
//! over and over cannot evict active consumers' sessions. An incremental fetch that would
//! outgrow the partition bound closes its session. Session ids carry the shard index in their
//! low byte, so an id is never valid on two shards; a client that reconnects to
//! another shard is told its session is not found and starts again. State is only borrowed in
//! synchronous sections, never across an await.

use kafka_protocol::messages::fetch_request::{FetchTopic, ForgottenTopic};
use kafka_protocol::messages::TopicName;
use kafka_protocol::protocol::StrBytes;
use sluice_core::limits::{
    FETCH_SESSIONS_PER_SHARD, FETCH_SESSION_EVICTION_IDLE_MS, FETCH_SESSION_PARTITIONS_PER_SHARD,
};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant};

pub const INITIAL_EPOCH: i32 = 0;
pub const FINAL_EPOCH: i32 = -1;

/// A partition a fetch reads: its topic as the request named it, and where to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub topic: TopicName,
    pub topic_id: uuid::Uuid,
    pub partition: i32,
    pub fetch_offset: i64,
    pub max_bytes: i32,
    /// The leader epoch the client believes current (-1: none); an incremental fetch that
    /// lists the partition again updates it, as Kafka's `CachedPartition`.
    pub current_leader_epoch: i32,
}

/// What a partition's last answer in a session told the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answered {
    pub high_watermark: i64,
    pub log_start: i64,
}

#[derive(Debug)]
struct Session {
    /// The epoch the next incremental fetch must carry.
    next_epoch: i32,
    /// Keyed by (topic id, topic name, partition): ids from v13 on, names before.
    partitions: BTreeMap<(uuid::Uuid, String, i32), (Wanted, Option<Answered>)>,
    last_used: Instant,
}

/// How a Fetch request relates to the session cache.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    /// Answer every wanted partition, with this session id (0: no session).
    Full { session_id: i32, wanted: Vec<Wanted> },
    /// Answer the session's partitions that changed since they were last answered.
    Incremental { session_id: i32, wanted: Vec<(Wanted, Option<Answered>)> },
    /// Answer only this top-level error code.
    Refused(i16),
}

const FETCH_SESSION_ID_NOT_FOUND: i16 = 70;
const INVALID_FETCH_SESSION_EPOCH: i16 = 71;

#[derive(Default)]
struct Cache {
    sessions: HashMap<i32, Session>,
    /// Partitions listed by all sessions together.
    partitions: usize,
}

thread_local! {
    static CACHE: RefCell<Cache> = RefCell::new(Cache::default());
    static NEXT: Cell<u64> = const { Cell::new(0) };
}

fn key(w: &Wanted) -> (uuid::Uuid, String, i32) {
    (w.topic_id, w.topic.0.to_string(), w.partition)
}

/// The partitions a request's `topics` list. Topic names are copied: decoded names are slices
/// of the request frame, which must not outlive the request in a session.
pub fn wanted(topics: &[FetchTopic]) -> Vec<Wanted> {
    let mut out = Vec::new();
    for t in topics {
        let topic = TopicName(StrBytes::from_string(t.topic.0.to_string()));
        for p in &t.partitions {
            out.push(Wanted {
                topic: topic.clone(),
                topic_id: t.topic_id,
                partition: p.partition,
                fetch_offset: p.fetch_offset,
                max_bytes: p.partition_max_bytes,
                current_leader_epoch: p.current_leader_epoch,
            });
        }
    }
    out
}

/// Decides how to answer a Fetch on shard `shard_index`, updating the cache.
pub fn plan(
    shard_index: usize,
    session_id: i32,
    epoch: i32,
    topics: &[FetchTopic],
    forgotten: &[ForgottenTopic],
) -> Plan {
    let now = Instant::now();
    CACHE.with(|c| c.borrow_mut().plan(now, shard_index, session_id, epoch, topics, forgotten))
}

/// Records what was answered for a session's partitions (after a full or incremental answer).
pub fn answered(session_id: i32, answers: &[(Wanted, Answered)]) {
    if session_id == 0 {
        return;
    }
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if let Some(s) = c.sessions.get_mut(&session_id) {
            for (w, a) in answers {
                if let Some(entry) = s.partitions.get_mut(&key(w)) {
                    entry.1 = Some(*a);
                }
            }
        }
    })
}

/// Whether an incremental answer must carry a partition.
pub fn changed(before: Option<Answered>, now: Answered, has_records: bool, is_error: bool) -> bool {
    has_records || is_error || before != Some(now)
}

impl Cache {
    fn plan(
        &mut self,
        now: Instant,
        shard_index: usize,
        session_id: i32,
        epoch: i32,
        topics: &[FetchTopic],
        forgotten: &[ForgottenTopic],
    ) -> Plan {
        match epoch {
            FINAL_EPOCH => {
                self.close(session_id);
                Plan::Full { session_id: 0, wanted: wanted(topics) }
            }
            INITIAL_EPOCH => {
                self.close(session_id);
                let wanted = wanted(topics);
                let id = self.open(now, shard_index, &wanted);
                Plan::Full { session_id: id, wanted }
            }
            // Every other epoch is incremental (Kafka's FetchMetadata.isFull): session id 0 is
            // never a session, so it is not found; an epoch below -1 never matches.
            e => {
                let Some(s) = self.sessions.get_mut(&session_id) else {
                    return Plan::Refused(FETCH_SESSION_ID_NOT_FOUND);
                };
                if s.next_epoch != e {
                    return Plan::Refused(INVALID_FETCH_SESSION_EPOCH);
                }
                s.next_epoch = if e == i32::MAX { 1 } else { e + 1 };
                s.last_used = now;
                let had = s.partitions.len();
                for f in forgotten {
                    for p in &f.partitions {
                        s.partitions.remove(&(f.topic_id, f.topic.0.to_string(), *p));
                    }
                }
                for w in wanted(topics) {
                    let k = key(&w);
                    let before = s.partitions.get(&k).and_then(|(_, a)| *a);
                    s.partitions.insert(k, (w, before));
                }
                let now = s.partitions.len();
                let wanted = s.partitions.values().cloned().collect();
                self.partitions = self.partitions - had + now;
                if self.partitions > FETCH_SESSION_PARTITIONS_PER_SHARD {
                    self.close(session_id);
                    return Plan::Refused(FETCH_SESSION_ID_NOT_FOUND);
                }
                Plan::Incremental { session_id, wanted }
            }
        }
    }

    /// Opens a session for `wanted` (0: none, when it is larger than the whole cache or the
    /// cache is full of sessions used within `FETCH_SESSION_EVICTION_IDLE_MS`).
    fn open(&mut self, now: Instant, shard_index: usize, wanted: &[Wanted]) -> i32 {
        if wanted.len() > FETCH_SESSION_PARTITIONS_PER_SHARD {
            return 0;
        }
        let idle_bound = Duration::from_millis(FETCH_SESSION_EVICTION_IDLE_MS);
        while self.sessions.len() >= FETCH_SESSIONS_PER_SHARD
            || self.partitions + wanted.len() > FETCH_SESSION_PARTITIONS_PER_SHARD
        {
            let Some((oldest, last_used)) =
                self.sessions.iter().min_by_key(|(_, s)| s.last_used).map(|(id, s)| (*id, s.last_used))
            else {
                break;
            };
            if now.saturating_duration_since(last_used) <= idle_bound {
                return 0;
            }
            self.close(oldest);
        }
        let id = loop {
            let id = new_id(shard_index);
            if !self.sessions.contains_key(&id) {
                break id;
            }
        };
        let partitions: BTreeMap<_, _> = wanted.iter().map(|w| (key(w), (w.clone(), None))).collect();
        self.partitions += partitions.len();
        self.sessions.insert(id, Session { next_epoch: 1, partitions, last_used: now });
        assert!(self.sessions.len() <= FETCH_SESSIONS_PER_SHARD, "fetch session cache over its bound");
        assert!(self.partitions <= FETCH_SESSION_PARTITIONS_PER_SHARD, "fetch session partitions over their bound");
        id
    }

    fn close(&mut self, session_id: i32) {
        if let Some(s) = self.sessions.remove(&session_id) {
            self.partitions -= s.partitions.len();
        }
    }
}

/// A random positive session id whose low byte is the shard index.
fn new_id(shard_index: usize) -> i32 {
    let n = NEXT.with(|c| {
        c.set(c.get() + 1);
        c.get()
    });
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(n);
    // 23 random bits above the shard's byte: positive, never 0.
    let high = u32::try_from(h.finish() & 0x007f_ffff).expect("23 bits");
    let high = if high == 0 { 1 } else { high };
    let low = u32::try_from(shard_index & 0xff).expect("8 bits");
    i32::try_from((high << 8) | low).expect("31 bits")
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::fetch_request::FetchPartition;
    use kafka_protocol::protocol::StrBytes;

    fn topic(name: &'static str, parts: &[(i32, i64)]) -> FetchTopic {
        FetchTopic::default().with_topic(TopicName(StrBytes::from_static_str(name))).with_partitions(
            parts.iter().map(|(p, o)| FetchPartition::default().with_partition(*p).with_fetch_offset(*o)).collect(),
        )
    }

    #[test]
    fn open_update_forget_close() {
        let now = Instant::now();
        let mut c = Cache::default();
        let Plan::Full { session_id, wanted } = c.plan(now, 3, 0, INITIAL_EPOCH, &[topic("a", &[(0, 0), (1, 0)])], &[])
        else {
            panic!("full")
        };
        assert_ne!(session_id, 0);
        assert_eq!(session_id & 0xff, 3);
        assert_eq!(wanted.len(), 2);
        // An incremental fetch moves partition 1 and forgets partition 0.
        let forget =
            ForgottenTopic::default().with_topic(TopicName(StrBytes::from_static_str("a"))).with_partitions(vec![0]);
        let Plan::Incremental { wanted, .. } = c.plan(now, 3, session_id, 1, &[topic("a", &[(1, 7)])], &[forget])
        else {
            panic!("incremental")
        };
        assert_eq!(wanted.len(), 1);
        assert_eq!((wanted[0].0.partition, wanted[0].0.fetch_offset), (1, 7));
        // The same epoch again, or a skipped one, is refused; an unknown id too.
        assert_eq!(c.plan(now, 3, session_id, 1, &[], &[]), Plan::Refused(INVALID_FETCH_SESSION_EPOCH));
        assert_eq!(c.plan(now, 3, session_id, 5, &[], &[]), Plan::Refused(INVALID_FETCH_SESSION_EPOCH));
        assert_eq!(c.plan(now, 3, session_id + 256, 1, &[], &[]), Plan::Refused(FETCH_SESSION_ID_NOT_FOUND));
        assert!(matches!(c.plan(now, 3, session_id, 2, &[], &[]), Plan::Incremental { .. }));
        // FINAL closes it and answers without a session.
        assert!(matches!(c.plan(now, 3, session_id, FINAL_EPOCH, &[], &[]), Plan::Full { session_id: 0, .. }));
        assert_eq!(c.plan(now, 3, session_id, 3, &[], &[]), Plan::Refused(FETCH_SESSION_ID_NOT_FOUND));
    }

    const IDLE: Duration = Duration::from_millis(FETCH_SESSION_EVICTION_IDLE_MS);

    fn open_at(c: &mut Cache, now: Instant, topics: &[FetchTopic]) -> i32 {
        match c.plan(now, 0, 0, INITIAL_EPOCH, topics, &[]) {
            Plan::Full { session_id, .. } => session_id,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn epochs_follow_kafkas_rules() {
        let now = Instant::now();
        let mut c = Cache::default();
        // Session id 0 with an incremental epoch names no session.
        assert_eq!(c.plan(now, 0, 0, 1, &[], &[]), Plan::Refused(FETCH_SESSION_ID_NOT_FOUND));
        assert_eq!(c.plan(now, 0, 0, -2, &[], &[]), Plan::Refused(FETCH_SESSION_ID_NOT_FOUND));
        assert_eq!(c.plan(now, 0, 0, i32::MIN, &[], &[]), Plan::Refused(FETCH_SESSION_ID_NOT_FOUND));
        // FINAL with session id 0: sessionless full fetch.
        assert!(matches!(
            c.plan(now, 0, 0, FINAL_EPOCH, &[topic("a", &[(0, 0)])], &[]),
            Plan::Full { session_id: 0, .. }
        ));
        let id = open_at(&mut c, now, &[topic("a", &[(0, 0)])]);
        // An epoch below -1 on a known session is the wrong epoch; on an unknown one, not found.
        assert_eq!(c.plan(now, 0, id, -2, &[], &[]), Plan::Refused(INVALID_FETCH_SESSION_EPOCH));
        assert_eq!(c.plan(now, 0, id + 256, -2, &[], &[]), Plan::Refused(FETCH_SESSION_ID_NOT_FOUND));
        assert!(matches!(c.plan(now, 0, id, 1, &[], &[]), Plan::Incremental { .. }));
        // INITIAL naming a session closes it and opens another.
        let Plan::Full { session_id: again, .. } = c.plan(now, 0, id, INITIAL_EPOCH, &[], &[]) else { panic!("full") };
        assert!(again != id && again != 0);
        assert_eq!(c.plan(now, 0, id, 2, &[], &[]), Plan::Refused(FETCH_SESSION_ID_NOT_FOUND));
        assert_eq!(c.sessions.len(), 1);
    }

    #[test]
    fn a_full_cache_evicts_only_idle_sessions() {
        let t0 = Instant::now();
        let mut c = Cache::default();
        let ids: Vec<i32> =
            (0..FETCH_SESSIONS_PER_SHARD).map(|_| open_at(&mut c, t0, &[topic("a", &[(0, 0)])])).collect();
        // Full of sessions used just now: new full fetches get no session and evict nothing,
        // however often they come.
        for _ in 0..10 {
            assert_eq!(open_at(&mut c, t0 + IDLE, &[topic("a", &[(0, 0)])]), 0);
        }
        assert_eq!(c.sessions.len(), FETCH_SESSIONS_PER_SHARD);
        assert!(matches!(c.plan(t0 + IDLE, 0, ids[0], 1, &[], &[]), Plan::Incremental { .. }));
        // Once the others have been idle past the bound, the least recently used is evicted.
        let later = t0 + IDLE + Duration::from_millis(1);
        let new = open_at(&mut c, later, &[topic("a", &[(0, 0)])]);
        assert_ne!(new, 0);
        assert_eq!(c.sessions.len(), FETCH_SESSIONS_PER_SHARD);
        assert!(matches!(c.plan(later, 0, ids[0], 2, &[], &[]), Plan::Incremental { .. }));
        let evicted = ids[1..].iter().filter(|id| !c.sessions.contains_key(id)).count();
        assert_eq!(evicted, 1);
        assert_eq!(c.partitions, FETCH_SESSIONS_PER_SHARD);
    }

    #[test]
    fn partitions_are_bounded() {
        let t0 = Instant::now();
        let mut c = Cache::default();
        let big: Vec<(i32, i64)> =
            (0..i32::try_from(FETCH_SESSION_PARTITIONS_PER_SHARD).unwrap() + 1).map(|p| (p, 0)).collect();
        // Too large for the whole cache: answered without a session.
        assert_eq!(open_at(&mut c, t0, &[topic("a", &big)]), 0);
        assert_eq!(c.partitions, 0);
        // Half the cache twice; a third half finds no idle session and gets none.
        let half = &big[..FETCH_SESSION_PARTITIONS_PER_SHARD / 2];
        let (a, b) = (open_at(&mut c, t0, &[topic("a", half)]), open_at(&mut c, t0, &[topic("a", half)]));
        assert!(a != 0 && b != 0);
        assert_eq!(open_at(&mut c, t0, &[topic("a", half)]), 0);
        // Later, with b used recently and a idle past the bound, it evicts a.
        let later = t0 + IDLE + Duration::from_millis(1);
        assert!(matches!(c.plan(later, 0, b, 1, &[], &[]), Plan::Incremental { .. }));
        assert_ne!(open_at(&mut c, later, &[topic("a", half)]), 0);
        assert_eq!(c.plan(later, 0, a, 1, &[], &[]), Plan::Refused(FETCH_SESSION_ID_NOT_FOUND));
        assert_eq!(c.partitions, FETCH_SESSION_PARTITIONS_PER_SHARD);
        // Growing a session past the bound closes it.
        assert_eq!(c.plan(later, 0, b, 2, &[topic("b", &[(0, 0)])], &[]), Plan::Refused(FETCH_SESSION_ID_NOT_FOUND));
        assert_eq!(c.partitions, FETCH_SESSION_PARTITIONS_PER_SHARD / 2);
    }

    #[test]
    fn sessions_keep_no_slice_of_the_request() {
        let frame = bytes::Bytes::from(b"topic-in-a-frame".to_vec());
        let name = StrBytes::from_utf8(frame.slice(0..5)).expect("utf-8");
        let t = FetchTopic::default()
            .with_topic(TopicName(name))
            .with_partitions(vec![FetchPartition::default().with_partition(0)]);
        let w = wanted(&[t]);
        assert_eq!(&*w[0].topic.0, "topic");
        // The frame is uniquely owned again: nothing the session keeps points into it.
        assert!(frame.is_unique());
    }

    #[test]
    fn only_changes_are_answered_incrementally() {
        let a = Answered { high_watermark: 5, log_start: 0 };
        assert!(!changed(Some(a), a, false, false));
        assert!(changed(Some(a), a, true, false));
        assert!(changed(Some(a), a, false, true));
        assert!(changed(None, a, false, false));
        assert!(changed(Some(a), Answered { high_watermark: 6, log_start: 0 }, false, false));
    }
}
