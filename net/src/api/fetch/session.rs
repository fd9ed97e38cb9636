//! Fetch sessions (KIP-227) on one shard: which partitions an incremental Fetch stands for, and
//! which partitions its answer must carry.
//!
//! Contract: a full Fetch with session epoch 0 (INITIAL) opens a session (closing the one it
//! names, if any) and is answered with every partition and the new session id; a Fetch with
//! epoch -1 (FINAL) closes the session it names and is answered as a sessionless full fetch
//! (session id 0). An incremental Fetch (id, epoch ≥ 1) must carry the session's next epoch:
//! its partitions are added or updated, its forgotten partitions removed, the whole session is
//! read, and the answer carries only the partitions with records, an error, or a high
//! watermark or log start offset other than the one last answered. An unknown id is answered
//! FETCH_SESSION_ID_NOT_FOUND, a wrong epoch INVALID_FETCH_SESSION_EPOCH, as Kafka does; the
//! client then starts a new session with a full fetch.
//!
//! Why: without sessions every answer is full, and a Java consumer that closes (or whose
//! session changes) while a full fetch is in flight checks that answer against its new,
//! empty session and logs "invalid full fetch response with extraIds" (FetchSessionHandler).
//!
//! Sessions live on the shard that accepted the connection, at most `FETCH_SESSIONS_PER_SHARD`
//! listing at most `FETCH_SESSION_PARTITIONS_PER_SHARD` partitions together (the least
//! recently used are evicted, as Kafka's cache evicts; a full fetch too large for the cache is
//! answered without a session; an incremental one that would outgrow it closes its session). Session ids carry the shard
//! index in their low byte, so an id is never valid on two shards; a client that reconnects to
//! another shard is told its session is not found and starts again. State is only borrowed in
//! synchronous sections, never across an await.

use kafka_protocol::messages::fetch_request::{FetchTopic, ForgottenTopic};
use kafka_protocol::messages::TopicName;
use sluice_core::limits::{FETCH_SESSIONS_PER_SHARD, FETCH_SESSION_PARTITIONS_PER_SHARD};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hasher};

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
    last_used: u64,
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
    clock: u64,
}

thread_local! {
    static CACHE: RefCell<Cache> = RefCell::new(Cache::default());
    static NEXT: Cell<u64> = const { Cell::new(0) };
}

fn key(w: &Wanted) -> (uuid::Uuid, String, i32) {
    (w.topic_id, w.topic.0.to_string(), w.partition)
}

/// The partitions a request's `topics` list.
pub fn wanted(topics: &[FetchTopic]) -> Vec<Wanted> {
    let mut out = Vec::new();
    for t in topics {
        for p in &t.partitions {
            out.push(Wanted {
                topic: t.topic.clone(),
                topic_id: t.topic_id,
                partition: p.partition,
                fetch_offset: p.fetch_offset,
                max_bytes: p.partition_max_bytes,
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
    CACHE.with(|c| c.borrow_mut().plan(shard_index, session_id, epoch, topics, forgotten))
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
        shard_index: usize,
        session_id: i32,
        epoch: i32,
        topics: &[FetchTopic],
        forgotten: &[ForgottenTopic],
    ) -> Plan {
        self.clock += 1;
        match epoch {
            FINAL_EPOCH => {
                self.close(session_id);
                Plan::Full { session_id: 0, wanted: wanted(topics) }
            }
            INITIAL_EPOCH => {
                self.close(session_id);
                let wanted = wanted(topics);
                let id = self.open(shard_index, &wanted);
                Plan::Full { session_id: id, wanted }
            }
            e if e < 0 || session_id == 0 => Plan::Refused(INVALID_FETCH_SESSION_EPOCH),
            e => {
                let clock = self.clock;
                let Some(s) = self.sessions.get_mut(&session_id) else {
                    return Plan::Refused(FETCH_SESSION_ID_NOT_FOUND);
                };
                if s.next_epoch != e {
                    return Plan::Refused(INVALID_FETCH_SESSION_EPOCH);
                }
                s.next_epoch = if e == i32::MAX { 1 } else { e + 1 };
                s.last_used = clock;
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

    /// Opens a session for `wanted` (0: none, when it is larger than the whole cache).
    fn open(&mut self, shard_index: usize, wanted: &[Wanted]) -> i32 {
        if wanted.len() > FETCH_SESSION_PARTITIONS_PER_SHARD {
            return 0;
        }
        while self.sessions.len() >= FETCH_SESSIONS_PER_SHARD
            || self.partitions + wanted.len() > FETCH_SESSION_PARTITIONS_PER_SHARD
        {
            let Some(oldest) = self.sessions.iter().min_by_key(|(_, s)| s.last_used).map(|(id, _)| *id) else {
                break;
            };
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
        self.sessions.insert(id, Session { next_epoch: 1, partitions, last_used: self.clock });
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
    let high = (h.finish() as u32) & 0x007f_ffff;
    let high = if high == 0 { 1 } else { high };
    ((high << 8) | (shard_index as u32 & 0xff)) as i32
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
        let mut c = Cache::default();
        let Plan::Full { session_id, wanted } = c.plan(3, 0, INITIAL_EPOCH, &[topic("a", &[(0, 0), (1, 0)])], &[])
        else {
            panic!("full")
        };
        assert_ne!(session_id, 0);
        assert_eq!(session_id & 0xff, 3);
        assert_eq!(wanted.len(), 2);
        // An incremental fetch moves partition 1 and forgets partition 0.
        let forget =
            ForgottenTopic::default().with_topic(TopicName(StrBytes::from_static_str("a"))).with_partitions(vec![0]);
        let Plan::Incremental { wanted, .. } = c.plan(3, session_id, 1, &[topic("a", &[(1, 7)])], &[forget]) else {
            panic!("incremental")
        };
        assert_eq!(wanted.len(), 1);
        assert_eq!((wanted[0].0.partition, wanted[0].0.fetch_offset), (1, 7));
        // The same epoch again, or a skipped one, is refused; an unknown id too.
        assert_eq!(c.plan(3, session_id, 1, &[], &[]), Plan::Refused(INVALID_FETCH_SESSION_EPOCH));
        assert_eq!(c.plan(3, session_id, 5, &[], &[]), Plan::Refused(INVALID_FETCH_SESSION_EPOCH));
        assert_eq!(c.plan(3, session_id + 256, 1, &[], &[]), Plan::Refused(FETCH_SESSION_ID_NOT_FOUND));
        assert!(matches!(c.plan(3, session_id, 2, &[], &[]), Plan::Incremental { .. }));
        // FINAL closes it and answers without a session.
        assert!(matches!(c.plan(3, session_id, FINAL_EPOCH, &[], &[]), Plan::Full { session_id: 0, .. }));
        assert_eq!(c.plan(3, session_id, 3, &[], &[]), Plan::Refused(FETCH_SESSION_ID_NOT_FOUND));
    }

    #[test]
    fn cache_is_bounded_and_evicts_the_least_recently_used() {
        let mut c = Cache::default();
        let mut first = 0;
        for i in 0..FETCH_SESSIONS_PER_SHARD + 5 {
            let Plan::Full { session_id, .. } = c.plan(0, 0, INITIAL_EPOCH, &[topic("a", &[(0, 0)])], &[]) else {
                panic!("full")
            };
            if i == 0 {
                first = session_id;
            }
        }
        assert_eq!(c.sessions.len(), FETCH_SESSIONS_PER_SHARD);
        assert_eq!(c.plan(0, first, 1, &[], &[]), Plan::Refused(FETCH_SESSION_ID_NOT_FOUND));
        assert_eq!(c.partitions, FETCH_SESSIONS_PER_SHARD);
    }

    #[test]
    fn partitions_are_bounded() {
        let mut c = Cache::default();
        let big: Vec<(i32, i64)> = (0..FETCH_SESSION_PARTITIONS_PER_SHARD as i32 + 1).map(|p| (p, 0)).collect();
        // Too large for the whole cache: answered without a session.
        assert!(matches!(c.plan(0, 0, INITIAL_EPOCH, &[topic("a", &big)], &[]), Plan::Full { session_id: 0, .. }));
        assert_eq!(c.partitions, 0);
        // Half the cache twice, then a third half evicts the oldest.
        let half = &big[..FETCH_SESSION_PARTITIONS_PER_SHARD / 2];
        let open = |c: &mut Cache| match c.plan(0, 0, INITIAL_EPOCH, &[topic("a", half)], &[]) {
            Plan::Full { session_id, .. } => session_id,
            other => panic!("{other:?}"),
        };
        let (a, b) = (open(&mut c), open(&mut c));
        assert!(matches!(c.plan(0, b, 1, &[], &[]), Plan::Incremental { .. }));
        let _ = open(&mut c);
        assert_eq!(c.plan(0, a, 1, &[], &[]), Plan::Refused(FETCH_SESSION_ID_NOT_FOUND));
        assert_eq!(c.partitions, FETCH_SESSION_PARTITIONS_PER_SHARD);
        // Growing a session past the bound closes it.
        assert_eq!(c.plan(0, b, 2, &[topic("b", &[(0, 0)])], &[]), Plan::Refused(FETCH_SESSION_ID_NOT_FOUND));
        assert_eq!(c.partitions, FETCH_SESSION_PARTITIONS_PER_SHARD / 2);
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
