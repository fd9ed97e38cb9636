//! sluice's own typed Raft messages: what brokers exchange instead of protobuf, converted to
//! and from raft-rs's `eraftpb::Message`, with a hand-checked binary encoding.
//!
//! Contract:
//! - Nothing received from another broker is ever parsed as protobuf (protobuf 2.28 has
//!   RUSTSEC-2024-0437, unbounded recursion on nested input): [`decode_batch`] reads fixed
//!   fields and length-prefixed byte strings with every length and count checked against the
//!   input and the bounds in `limits.rs`, and builds `eraftpb` values field by field.
//! - Conf changes travel as typed [`ConfChangeSpec`]s; inside the process raft-rs wants them as
//!   protobuf bytes in the entry data, which [`ConfChangeSpec::to_entry_data`] writes (encoding,
//!   never parsing). Only bytes this process encoded itself are parsed back
//!   ([`ConfChangeSpec::from_local_entry_data`]).
//! - Message contexts are not carried, except raft-rs's leadership-transfer campaign mark
//!   (`CAMPAIGN_TRANSFER`, as the `transfer` flag: without it voters inside their leader lease
//!   ignore the transferee's vote request); a message type that is local to a node (hup, beat,
//!   unreachable, ...) has no wire form.

use super::types::{GroupId, NodeId};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use protobuf::Message as _;
use raft::eraftpb::{
    ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2, ConfState, Entry, EntryType, Message,
    MessageType, Snapshot, SnapshotMetadata,
};
use sluice_core::limits::{RAFT_MAX_ENTRIES_PER_MSG, RAFT_MAX_MSGS_PER_BATCH};

/// The Raft message kinds that cross the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MsgKind {
    Append,
    AppendResponse,
    RequestVote,
    RequestVoteResponse,
    RequestPreVote,
    RequestPreVoteResponse,
    Snapshot,
    Heartbeat,
    HeartbeatResponse,
    TransferLeader,
    TimeoutNow,
    ReadIndex,
    ReadIndexResp,
}

const KINDS: [(MsgKind, MessageType); 13] = [
    (MsgKind::Append, MessageType::MsgAppend),
    (MsgKind::AppendResponse, MessageType::MsgAppendResponse),
    (MsgKind::RequestVote, MessageType::MsgRequestVote),
    (MsgKind::RequestVoteResponse, MessageType::MsgRequestVoteResponse),
    (MsgKind::RequestPreVote, MessageType::MsgRequestPreVote),
    (MsgKind::RequestPreVoteResponse, MessageType::MsgRequestPreVoteResponse),
    (MsgKind::Snapshot, MessageType::MsgSnapshot),
    (MsgKind::Heartbeat, MessageType::MsgHeartbeat),
    (MsgKind::HeartbeatResponse, MessageType::MsgHeartbeatResponse),
    (MsgKind::TransferLeader, MessageType::MsgTransferLeader),
    (MsgKind::TimeoutNow, MessageType::MsgTimeoutNow),
    (MsgKind::ReadIndex, MessageType::MsgReadIndex),
    (MsgKind::ReadIndexResp, MessageType::MsgReadIndexResp),
];

impl MsgKind {
    fn from_raft(t: MessageType) -> Option<MsgKind> {
        KINDS.iter().find(|k| k.1 == t).map(|k| k.0)
    }
    fn to_raft(self) -> MessageType {
        KINDS.iter().find(|k| k.0 == self).map(|k| k.1).expect("every kind has a raft type")
    }
    fn code(self) -> u8 {
        u8::try_from(KINDS.iter().position(|k| k.0 == self).expect("listed")).expect("13 kinds")
    }
    fn from_code(c: u8) -> Option<MsgKind> {
        KINDS.get(usize::from(c)).map(|k| k.0)
    }
}

/// One membership change of a conf change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    AddVoter,
    RemoveNode,
    AddLearner,
}

/// How a multi-change conf change enters and leaves joint consensus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Auto,
    Implicit,
    Explicit,
}

/// A conf change (raft-rs `ConfChangeV2`), typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfChangeSpec {
    pub transition: Transition,
    pub changes: Vec<(ChangeKind, NodeId)>,
}

impl ConfChangeSpec {
    pub fn to_raft(&self) -> ConfChangeV2 {
        let transition = match self.transition {
            Transition::Auto => ConfChangeTransition::Auto,
            Transition::Implicit => ConfChangeTransition::Implicit,
            Transition::Explicit => ConfChangeTransition::Explicit,
        };
        let changes = self.changes.iter().map(|&(kind, node)| {
            let change_type = match kind {
                ChangeKind::AddVoter => ConfChangeType::AddNode,
                ChangeKind::RemoveNode => ConfChangeType::RemoveNode,
                ChangeKind::AddLearner => ConfChangeType::AddLearnerNode,
            };
            ConfChangeSingle { change_type, node_id: node.0, ..Default::default() }
        });
        ConfChangeV2 { transition, changes: changes.collect::<Vec<_>>().into(), ..Default::default() }
    }

    /// None when a node id is 0.
    pub fn from_raft(cc: &ConfChangeV2) -> Option<ConfChangeSpec> {
        let transition = match cc.transition {
            ConfChangeTransition::Auto => Transition::Auto,
            ConfChangeTransition::Implicit => Transition::Implicit,
            ConfChangeTransition::Explicit => Transition::Explicit,
        };
        let changes = cc.changes.iter().map(|s| {
            let kind = match s.change_type {
                ConfChangeType::AddNode => ChangeKind::AddVoter,
                ConfChangeType::RemoveNode => ChangeKind::RemoveNode,
                ConfChangeType::AddLearnerNode => ChangeKind::AddLearner,
            };
            NodeId::new(s.node_id).map(|n| (kind, n))
        });
        Some(ConfChangeSpec { transition, changes: changes.collect::<Option<_>>()? })
    }

    /// The entry data raft-rs expects for a `EntryConfChangeV2` entry.
    pub fn to_entry_data(&self) -> Bytes {
        Bytes::from(self.to_raft().write_to_bytes().expect("encoding a conf change into memory"))
    }

    /// Reads entry data that this process wrote (raft-rs's own proposal or
    /// [`Self::to_entry_data`]); never called on bytes from the network or the disk.
    pub fn from_local_entry_data(data: &[u8]) -> Option<ConfChangeSpec> {
        let cc = ConfChangeV2::parse_from_bytes(data).ok()?;
        Self::from_raft(&cc)
    }

    fn encode(&self, out: &mut BytesMut) {
        out.put_u8(match self.transition {
            Transition::Auto => 0,
            Transition::Implicit => 1,
            Transition::Explicit => 2,
        });
        out.put_u32(u32::try_from(self.changes.len()).expect("few changes"));
        for &(kind, node) in &self.changes {
            out.put_u8(match kind {
                ChangeKind::AddVoter => 0,
                ChangeKind::RemoveNode => 1,
                ChangeKind::AddLearner => 2,
            });
            out.put_u64(node.0);
        }
    }

    fn decode(r: &mut Reader) -> Result<ConfChangeSpec, WireError> {
        let transition = match r.u8()? {
            0 => Transition::Auto,
            1 => Transition::Implicit,
            2 => Transition::Explicit,
            _ => return Err(WireError::Invalid("conf change transition")),
        };
        let n = r.count(RAFT_MAX_ENTRIES_PER_MSG)?;
        let mut changes = Vec::with_capacity(n);
        for _ in 0..n {
            let kind = match r.u8()? {
                0 => ChangeKind::AddVoter,
                1 => ChangeKind::RemoveNode,
                2 => ChangeKind::AddLearner,
                _ => return Err(WireError::Invalid("conf change kind")),
            };
            changes.push((kind, r.node()?));
        }
        Ok(ConfChangeSpec { transition, changes })
    }

    /// Standalone encoding (the payload of a conf-change control batch in the log).
    pub fn to_bytes(&self) -> Bytes {
        let mut b = BytesMut::new();
        self.encode(&mut b);
        b.freeze()
    }

    pub fn from_bytes(b: &[u8]) -> Result<ConfChangeSpec, WireError> {
        let mut r = Reader(Bytes::copy_from_slice(b));
        let spec = Self::decode(&mut r)?;
        r.end()?;
        Ok(spec)
    }
}

/// What a wire entry carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryBody {
    /// A Kafka record batch (empty: the new leader's no-op entry).
    Batch(Bytes),
    ConfChange(ConfChangeSpec),
}

/// One log entry on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireEntry {
    pub term: u64,
    pub index: u64,
    pub body: EntryBody,
}

impl WireEntry {
    /// None for a legacy v1 conf change or unreadable conf-change data (raft-rs only writes
    /// v2 for sluice, which proposes v2 only).
    pub fn from_raft(e: &Entry) -> Option<WireEntry> {
        let body = match e.entry_type {
            EntryType::EntryNormal => EntryBody::Batch(e.data.clone()),
            EntryType::EntryConfChangeV2 => EntryBody::ConfChange(ConfChangeSpec::from_local_entry_data(&e.data)?),
            EntryType::EntryConfChange => return None,
        };
        Some(WireEntry { term: e.term, index: e.index, body })
    }

    pub fn to_raft(&self) -> Entry {
        let (entry_type, data) = match &self.body {
            EntryBody::Batch(b) => (EntryType::EntryNormal, b.clone()),
            EntryBody::ConfChange(cc) => (EntryType::EntryConfChangeV2, cc.to_entry_data()),
        };
        Entry { entry_type, term: self.term, index: self.index, data, ..Default::default() }
    }
}

/// A snapshot's metadata on the wire; its data is sluice's snapshot description
/// (`store::SnapshotData` encoding), opaque here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireSnapshot {
    pub index: u64,
    pub term: u64,
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
    pub voters_outgoing: Vec<u64>,
    pub learners_next: Vec<u64>,
    pub auto_leave: bool,
    pub data: Bytes,
}

/// One Raft message between two brokers, for one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftMsg {
    pub group: GroupId,
    pub kind: MsgKind,
    pub from: NodeId,
    pub to: NodeId,
    pub term: u64,
    pub log_term: u64,
    pub index: u64,
    pub commit: u64,
    pub commit_term: u64,
    pub reject: bool,
    /// The message carries raft-rs's `CAMPAIGN_TRANSFER` context (a transferee's campaign).
    pub transfer: bool,
    pub reject_hint: u64,
    pub request_snapshot: u64,
    pub priority: i64,
    pub entries: Vec<WireEntry>,
    pub snapshot: Option<WireSnapshot>,
}

impl RaftMsg {
    /// The wire form of an outgoing raft-rs message; None for a local message type, a zero
    /// node id or an entry that has no wire form.
    pub fn from_raft(group: GroupId, m: &Message) -> Option<RaftMsg> {
        let snapshot = m.snapshot.as_ref().filter(|s| s.get_metadata().index != 0).map(|s| {
            let md = s.get_metadata();
            let cs = md.get_conf_state();
            WireSnapshot {
                index: md.index,
                term: md.term,
                voters: cs.voters.clone(),
                learners: cs.learners.clone(),
                voters_outgoing: cs.voters_outgoing.clone(),
                learners_next: cs.learners_next.clone(),
                auto_leave: cs.auto_leave,
                data: s.data.clone(),
            }
        });
        Some(RaftMsg {
            group,
            kind: MsgKind::from_raft(m.msg_type)?,
            from: NodeId::new(m.from)?,
            to: NodeId::new(m.to)?,
            term: m.term,
            log_term: m.log_term,
            index: m.index,
            commit: m.commit,
            commit_term: m.commit_term,
            reject: m.reject,
            transfer: m.context[..] == *raft::CAMPAIGN_TRANSFER,
            reject_hint: m.reject_hint,
            request_snapshot: m.request_snapshot,
            priority: m.priority,
            entries: m.entries.iter().map(WireEntry::from_raft).collect::<Option<_>>()?,
            snapshot,
        })
    }

    pub fn to_raft(&self) -> Message {
        let mut m = Message {
            msg_type: self.kind.to_raft(),
            from: self.from.0,
            to: self.to.0,
            term: self.term,
            log_term: self.log_term,
            index: self.index,
            commit: self.commit,
            commit_term: self.commit_term,
            reject: self.reject,
            reject_hint: self.reject_hint,
            request_snapshot: self.request_snapshot,
            priority: self.priority,
            entries: self.entries.iter().map(WireEntry::to_raft).collect::<Vec<_>>().into(),
            ..Default::default()
        };
        if let Some(s) = &self.snapshot {
            m.set_snapshot(snapshot_to_raft(s));
        }
        if self.transfer {
            m.context = raft::CAMPAIGN_TRANSFER.into();
        }
        m
    }
}

fn snapshot_to_raft(s: &WireSnapshot) -> Snapshot {
    let cs = ConfState {
        voters: s.voters.clone(),
        learners: s.learners.clone(),
        voters_outgoing: s.voters_outgoing.clone(),
        learners_next: s.learners_next.clone(),
        auto_leave: s.auto_leave,
        ..Default::default()
    };
    let mut md = SnapshotMetadata { index: s.index, term: s.term, ..Default::default() };
    md.set_conf_state(cs);
    let mut snap = Snapshot { data: s.data.clone(), ..Default::default() };
    snap.set_metadata(md);
    snap
}

/// Why a received batch was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("raft message batch truncated")]
    Truncated,
    #[error("raft message batch: invalid {0}")]
    Invalid(&'static str),
    #[error("raft message batch: too many {0}")]
    TooMany(&'static str),
}

struct Reader(Bytes);

impl Reader {
    fn need(&self, n: usize) -> Result<(), WireError> {
        if self.0.remaining() < n {
            return Err(WireError::Truncated);
        }
        Ok(())
    }
    fn u8(&mut self) -> Result<u8, WireError> {
        self.need(1)?;
        Ok(self.0.get_u8())
    }
    fn u64(&mut self) -> Result<u64, WireError> {
        self.need(8)?;
        Ok(self.0.get_u64())
    }
    fn node(&mut self) -> Result<NodeId, WireError> {
        NodeId::new(self.u64()?).ok_or(WireError::Invalid("node id 0"))
    }
    fn count(&mut self, max: usize) -> Result<usize, WireError> {
        self.need(4)?;
        let n = usize::try_from(self.0.get_u32()).map_err(|_| WireError::Invalid("count"))?;
        if n > max {
            return Err(WireError::TooMany("items"));
        }
        Ok(n)
    }
    fn bytes(&mut self) -> Result<Bytes, WireError> {
        self.need(4)?;
        let n = usize::try_from(self.0.get_u32()).map_err(|_| WireError::Invalid("length"))?;
        self.need(n)?;
        Ok(self.0.split_to(n))
    }
    fn ids(&mut self) -> Result<Vec<u64>, WireError> {
        let n = self.count(RAFT_MAX_ENTRIES_PER_MSG)?;
        (0..n).map(|_| self.node().map(|x| x.0)).collect()
    }
    fn end(&self) -> Result<(), WireError> {
        if self.0.has_remaining() {
            return Err(WireError::Invalid("trailing bytes"));
        }
        Ok(())
    }
}

fn put_bytes(out: &mut BytesMut, b: &[u8]) {
    out.put_u32(u32::try_from(b.len()).expect("a raft payload is below 4 GiB"));
    out.put_slice(b);
}

fn put_ids(out: &mut BytesMut, ids: &[u64]) {
    out.put_u32(u32::try_from(ids.len()).expect("few ids"));
    ids.iter().for_each(|&i| out.put_u64(i));
}

const WIRE_VERSION: u8 = 1;

/// Encodes the messages of one round for one destination broker.
pub fn encode_batch(msgs: &[RaftMsg]) -> Bytes {
    let mut out = BytesMut::new();
    out.put_u8(WIRE_VERSION);
    out.put_u32(u32::try_from(msgs.len()).expect("a round's messages are bounded"));
    for m in msgs {
        encode_msg(&mut out, m);
    }
    out.freeze()
}

fn encode_msg(out: &mut BytesMut, m: &RaftMsg) {
    out.put_u64(m.group.0);
    out.put_u8(m.kind.code());
    for v in [m.from.0, m.to.0, m.term, m.log_term, m.index, m.commit, m.commit_term, m.reject_hint, m.request_snapshot]
    {
        out.put_u64(v);
    }
    out.put_i64(m.priority);
    out.put_u8(u8::from(m.reject) | (u8::from(m.transfer) << 1));
    out.put_u32(u32::try_from(m.entries.len()).expect("entries per message are bounded"));
    for e in &m.entries {
        out.put_u64(e.term);
        out.put_u64(e.index);
        match &e.body {
            EntryBody::Batch(b) => {
                out.put_u8(0);
                put_bytes(out, b);
            }
            EntryBody::ConfChange(cc) => {
                out.put_u8(1);
                cc.encode(out);
            }
        }
    }
    match &m.snapshot {
        None => out.put_u8(0),
        Some(s) => {
            out.put_u8(1);
            out.put_u64(s.index);
            out.put_u64(s.term);
            for ids in [&s.voters, &s.learners, &s.voters_outgoing, &s.learners_next] {
                put_ids(out, ids);
            }
            out.put_u8(u8::from(s.auto_leave));
            put_bytes(out, &s.data);
        }
    }
}

/// Decodes one batch; every length and count is checked before use.
pub fn decode_batch(buf: Bytes) -> Result<Vec<RaftMsg>, WireError> {
    let mut r = Reader(buf);
    if r.u8()? != WIRE_VERSION {
        return Err(WireError::Invalid("version"));
    }
    let n = r.count(RAFT_MAX_MSGS_PER_BATCH)?;
    let msgs = (0..n).map(|_| decode_msg(&mut r)).collect::<Result<Vec<_>, _>>()?;
    r.end()?;
    Ok(msgs)
}

fn flag(r: &mut Reader) -> Result<bool, WireError> {
    match r.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(WireError::Invalid("flag")),
    }
}

fn decode_msg(r: &mut Reader) -> Result<RaftMsg, WireError> {
    let group = GroupId(r.u64()?);
    let kind = MsgKind::from_code(r.u8()?).ok_or(WireError::Invalid("message kind"))?;
    let (from, to) = (r.node()?, r.node()?);
    let [term, log_term, index, commit, commit_term, reject_hint, request_snapshot] =
        [r.u64()?, r.u64()?, r.u64()?, r.u64()?, r.u64()?, r.u64()?, r.u64()?];
    let priority = i64::from_be_bytes(r.u64()?.to_be_bytes());
    let (reject, transfer) = match r.u8()? {
        bits @ 0..=3 => (bits & 1 != 0, bits & 2 != 0),
        _ => return Err(WireError::Invalid("message flags")),
    };
    let n = r.count(RAFT_MAX_ENTRIES_PER_MSG)?;
    let entries = (0..n).map(|_| decode_entry(r)).collect::<Result<Vec<_>, _>>()?;
    let snapshot = if flag(r)? { Some(decode_snapshot(r)?) } else { None };
    Ok(RaftMsg {
        group,
        kind,
        from,
        to,
        term,
        log_term,
        index,
        commit,
        commit_term,
        reject,
        transfer,
        reject_hint,
        request_snapshot,
        priority,
        entries,
        snapshot,
    })
}

fn decode_entry(r: &mut Reader) -> Result<WireEntry, WireError> {
    let (term, index) = (r.u64()?, r.u64()?);
    let body = match r.u8()? {
        0 => EntryBody::Batch(r.bytes()?),
        1 => EntryBody::ConfChange(ConfChangeSpec::decode(r)?),
        _ => return Err(WireError::Invalid("entry body")),
    };
    Ok(WireEntry { term, index, body })
}

fn decode_snapshot(r: &mut Reader) -> Result<WireSnapshot, WireError> {
    let (index, term) = (r.u64()?, r.u64()?);
    let (voters, learners, voters_outgoing, learners_next) = (r.ids()?, r.ids()?, r.ids()?, r.ids()?);
    let auto_leave = flag(r)?;
    Ok(WireSnapshot { index, term, voters, learners, voters_outgoing, learners_next, auto_leave, data: r.bytes()? })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> RaftMsg {
        RaftMsg {
            group: GroupId::partition(2, 5),
            kind: MsgKind::Append,
            from: NodeId(1),
            to: NodeId(3),
            term: 4,
            log_term: 3,
            index: 17,
            commit: 16,
            commit_term: 3,
            reject: false,
            transfer: true,
            reject_hint: 0,
            request_snapshot: 0,
            priority: -2,
            entries: vec![
                WireEntry { term: 4, index: 18, body: EntryBody::Batch(Bytes::from_static(b"batch")) },
                WireEntry {
                    term: 4,
                    index: 19,
                    body: EntryBody::ConfChange(ConfChangeSpec {
                        transition: Transition::Auto,
                        changes: vec![(ChangeKind::AddLearner, NodeId(4))],
                    }),
                },
            ],
            snapshot: Some(WireSnapshot {
                index: 9,
                term: 2,
                voters: vec![1, 2, 3],
                learners: vec![],
                voters_outgoing: vec![],
                learners_next: vec![],
                auto_leave: false,
                data: Bytes::from_static(b"snap"),
            }),
        }
    }

    #[test]
    fn messages_round_trip_through_bytes_and_raft() {
        let m = sample();
        let back = decode_batch(encode_batch(std::slice::from_ref(&m))).expect("decodes");
        assert_eq!(back, vec![m.clone()]);
        assert_eq!(RaftMsg::from_raft(m.group, &m.to_raft()), Some(m));
    }

    #[test]
    fn every_truncation_and_bad_tag_is_refused() {
        let bytes = encode_batch(&[sample()]);
        for n in 0..bytes.len() {
            assert!(decode_batch(bytes.slice(..n)).is_err(), "prefix of {n} bytes");
        }
        let mut long = bytes.to_vec();
        long.push(0);
        assert_eq!(decode_batch(Bytes::from(long)), Err(WireError::Invalid("trailing bytes")));
        let mut bad = bytes.to_vec();
        bad[13] = 99; // the message kind
        assert_eq!(decode_batch(Bytes::from(bad)), Err(WireError::Invalid("message kind")));
    }

    #[test]
    fn huge_counts_are_refused_before_allocating() {
        let mut b = vec![WIRE_VERSION];
        b.extend_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(decode_batch(Bytes::from(b)), Err(WireError::TooMany("items")));
    }
}
