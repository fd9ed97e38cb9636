//! One shard's share sessions (the epochs of ShareFetch and ShareAcknowledge, KIP-932), without
//! I/O.
//!
//! Contract: a session is keyed by (group, member) and belongs to the connection that opened
//! it (epoch 0; an epoch 0 from another connection replaces the session and takes it over).
//! A positive epoch must be the session's next one and moves it on; -1 closes it. When a
//! connection ends, every session it still owns is closed and named to the caller, who releases
//! the members' acquired records — as Kafka's share session cache does when a connection drops
//! (a client killed while holding records frees them at once, not when their locks expire).
//! At most `MAX_SHARE_SESSIONS_PER_SHARD` sessions: beyond that a new one is refused
//! (SHARE_SESSION_NOT_FOUND, as Kafka answers a full cache).

use sluice_core::TopicPartition;
use std::collections::{BTreeSet, HashMap};

/// A connection of this shard, as the sessions know it.
pub type ConnId = u64;

/// Why a share session refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionError {
    NotFound,
    InvalidEpoch,
}

/// One share session: the connection that owns it, its next expected epoch and the partitions
/// it fetches.
#[derive(Debug, Clone)]
struct Session {
    conn: ConnId,
    next_epoch: i32,
    partitions: BTreeSet<TopicPartition>,
}

/// The share sessions of one shard.
#[derive(Debug, Default)]
pub struct Sessions {
    by_member: HashMap<(String, String), Session>,
    last_conn: ConnId,
}

/// One step of a member's session: which connection asks, and with what.
#[derive(Debug, Clone, Copy)]
pub struct Step<'a> {
    pub conn: ConnId,
    pub epoch: i32,
    pub add: &'a [TopicPartition],
    pub forget: &'a [TopicPartition],
}

impl Sessions {
    /// A new connection's id (never 0, never reused while the shard runs).
    pub fn connect(&mut self) -> ConnId {
        self.last_conn = self.last_conn.checked_add(1).expect("fewer than 2^64 connections per shard");
        self.last_conn
    }

    /// Opens (epoch 0), continues (epoch > 0) or closes (epoch -1) a member's session. Returns
    /// the session's partitions after `add` and `forget` (a closed session: the ones it had).
    pub fn step(&mut self, group: &str, member: &str, s: Step<'_>) -> Result<Vec<TopicPartition>, SessionError> {
        let key = (group.to_string(), member.to_string());
        if s.epoch == 0 {
            if self.by_member.len() >= sluice_core::limits::MAX_SHARE_SESSIONS_PER_SHARD
                && !self.by_member.contains_key(&key)
            {
                return Err(SessionError::NotFound);
            }
            let session = Session { conn: s.conn, next_epoch: 1, partitions: s.add.iter().cloned().collect() };
            let out = session.partitions.iter().cloned().collect();
            self.by_member.insert(key, session);
            return Ok(out);
        }
        let session = self.by_member.get_mut(&key).ok_or(SessionError::NotFound)?;
        if s.epoch == -1 {
            let closed = self.by_member.remove(&key).expect("present");
            return Ok(closed.partitions.into_iter().collect());
        }
        if s.epoch != session.next_epoch {
            return Err(SessionError::InvalidEpoch);
        }
        session.next_epoch = session.next_epoch.checked_add(1).unwrap_or(1);
        session.partitions.extend(s.add.iter().cloned());
        for f in s.forget {
            session.partitions.remove(f);
        }
        Ok(session.partitions.iter().cloned().collect())
    }

    /// The connection ended: closes the sessions it owns and returns their (group, member).
    pub fn disconnect(&mut self, conn: ConnId) -> Vec<(String, String)> {
        let gone: Vec<(String, String)> =
            self.by_member.iter().filter(|(_, s)| s.conn == conn).map(|(k, _)| k.clone()).collect();
        for k in &gone {
            self.by_member.remove(k);
        }
        gone
    }

    /// Open sessions.
    pub fn len(&self) -> usize {
        self.by_member.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_member.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(p: i32) -> TopicPartition {
        TopicPartition::new("t".to_string(), p)
    }

    fn at(conn: ConnId, epoch: i32, add: &[TopicPartition]) -> Step<'_> {
        Step { conn, epoch, add, forget: &[] }
    }

    #[test]
    fn epochs_open_move_on_and_close() {
        let mut s = Sessions::default();
        let c = s.connect();
        assert_eq!(s.step("g", "m", at(c, 1, &[])), Err(SessionError::NotFound));
        assert_eq!(s.step("g", "m", at(c, 0, &[tp(0)])), Ok(vec![tp(0)]));
        assert_eq!(s.step("g", "m", at(c, 2, &[])), Err(SessionError::InvalidEpoch));
        assert_eq!(s.step("g", "m", at(c, 1, &[tp(1)])), Ok(vec![tp(0), tp(1)]));
        let forget = [tp(0)];
        assert_eq!(s.step("g", "m", Step { conn: c, epoch: 2, add: &[], forget: &forget }), Ok(vec![tp(1)]));
        assert_eq!(s.step("g", "m", at(c, -1, &[])), Ok(vec![tp(1)]));
        assert_eq!(s.step("g", "m", at(c, 3, &[])), Err(SessionError::NotFound));
        assert!(s.is_empty());
    }

    #[test]
    fn a_connection_that_ends_closes_only_the_sessions_it_owns() {
        let mut s = Sessions::default();
        let (a, b) = (s.connect(), s.connect());
        assert_ne!(a, b);
        s.step("g", "m1", at(a, 0, &[tp(0)])).unwrap();
        s.step("g", "m2", at(b, 0, &[tp(0)])).unwrap();
        s.step("h", "m1", at(a, 0, &[tp(0)])).unwrap();
        // m3's session was opened on `a`, then reopened on `b` (the client reconnected): `b`
        // owns it now.
        s.step("g", "m3", at(a, 0, &[tp(0)])).unwrap();
        s.step("g", "m3", at(b, 0, &[tp(0)])).unwrap();
        let mut gone = s.disconnect(a);
        gone.sort();
        assert_eq!(gone, vec![("g".to_string(), "m1".to_string()), ("h".to_string(), "m1".to_string())]);
        assert_eq!(s.len(), 2);
        assert_eq!(s.step("g", "m1", at(a, 1, &[])), Err(SessionError::NotFound));
        assert_eq!(s.step("g", "m3", at(b, 1, &[])), Ok(vec![tp(0)]));
        assert!(s.disconnect(a).is_empty(), "a second disconnect finds nothing");
        let mut gone = s.disconnect(b);
        gone.sort();
        assert_eq!(gone, vec![("g".to_string(), "m2".to_string()), ("g".to_string(), "m3".to_string())]);
        assert!(s.is_empty());
    }

    #[test]
    fn a_full_table_refuses_new_sessions_but_not_known_ones() {
        let mut s = Sessions::default();
        let c = s.connect();
        for i in 0..sluice_core::limits::MAX_SHARE_SESSIONS_PER_SHARD {
            s.step("g", &format!("m{i}"), at(c, 0, &[])).unwrap();
        }
        assert_eq!(s.step("g", "new", at(c, 0, &[])), Err(SessionError::NotFound));
        assert!(s.step("g", "m0", at(c, 0, &[])).is_ok(), "a known member may reopen its session");
        // The connection's end frees the table.
        assert_eq!(s.disconnect(c).len(), sluice_core::limits::MAX_SHARE_SESSIONS_PER_SHARD);
        assert!(s.step("g", "new", at(c, 0, &[])).is_ok());
    }
}
