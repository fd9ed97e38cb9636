//! The records of `__transaction_state`: one per state change of a transactional id.
//!
//! Contract: key = version (i16, 0) | transactional id (i16 length, UTF-8), as Kafka's key;
//! value = version (i16, 0) | producer id i64 | epoch i16 | last epoch i16 | timeout i32 |
//! state u8 | start ms i64 | update ms i64 | partitions (i32 count, then topic as i16 length +
//! UTF-8 and partition i32) | groups (i32 count, then i16 length + UTF-8); version 1 (written
//! only for a transaction version 2 state) adds tv2 u8 | previous producer id i64 | next
//! producer id i64. An empty value is a tombstone (the id expired). Decoding never panics: a record that does not parse is `None`
//! and is counted by the caller, never applied.

use super::state::{TxnMeta, TxnState};
use std::collections::BTreeSet;

const VERSION: i16 = 0;

fn put_str(out: &mut Vec<u8>, s: &str) {
    let len = i16::try_from(s.len()).expect("ids and topic names are shorter than 32 KiB (checked on entry)");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Whether a string can be stored (ids and names at most i16::MAX bytes).
pub fn storable(s: &str) -> bool {
    i16::try_from(s.len()).is_ok()
}

pub fn key(transactional_id: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + transactional_id.len());
    out.extend_from_slice(&VERSION.to_be_bytes());
    put_str(&mut out, transactional_id);
    out
}

/// The value version that carries the transaction version 2 fields.
const VALUE_V1: i16 = 1;

fn needs_v1(m: &TxnMeta) -> bool {
    m.tv2 || m.previous_producer_id >= 0 || m.next_producer_id >= 0
}

pub fn value(m: &TxnMeta) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    let version = if needs_v1(m) { VALUE_V1 } else { VERSION };
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(&m.producer_id.to_be_bytes());
    out.extend_from_slice(&m.producer_epoch.to_be_bytes());
    out.extend_from_slice(&m.last_producer_epoch.to_be_bytes());
    out.extend_from_slice(&m.timeout_ms.to_be_bytes());
    out.push(m.state.to_byte());
    out.extend_from_slice(&m.start_ms.to_be_bytes());
    out.extend_from_slice(&m.update_ms.to_be_bytes());
    let n = i32::try_from(m.partitions.len()).expect("partitions per transaction are bounded by the request size");
    out.extend_from_slice(&n.to_be_bytes());
    for (t, p) in &m.partitions {
        put_str(&mut out, t);
        out.extend_from_slice(&p.to_be_bytes());
    }
    let n = i32::try_from(m.groups.len()).expect("groups per transaction are bounded by the request size");
    out.extend_from_slice(&n.to_be_bytes());
    for g in &m.groups {
        put_str(&mut out, g);
    }
    if version == VALUE_V1 {
        out.push(u8::from(m.tv2));
        out.extend_from_slice(&m.previous_producer_id.to_be_bytes());
        out.extend_from_slice(&m.next_producer_id.to_be_bytes());
    }
    out
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.buf.len() < n {
            return None;
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Some(a)
    }
    fn i16(&mut self) -> Option<i16> {
        Some(i16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }
    fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn str(&mut self) -> Option<String> {
        let n = usize::try_from(self.i16()?).ok()?;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
    fn count(&mut self) -> Option<usize> {
        let n = usize::try_from(self.i32()?).ok()?;
        // Each entry takes at least 2 bytes: a count beyond that is damage, not a big list.
        (n <= self.buf.len() / 2).then_some(n)
    }
}

/// A decoded record: the id and its state, or `None` for a tombstone.
pub fn decode(key: &[u8], value: &[u8]) -> Option<(String, Option<TxnMeta>)> {
    let mut k = Reader { buf: key };
    if k.i16()? != VERSION {
        return None;
    }
    let id = k.str()?;
    if value.is_empty() {
        return Some((id, None));
    }
    let mut v = Reader { buf: value };
    let version = v.i16()?;
    if version != VERSION && version != VALUE_V1 {
        return None;
    }
    let producer_id = v.i64()?;
    let producer_epoch = v.i16()?;
    let last_producer_epoch = v.i16()?;
    let timeout_ms = v.i32()?;
    let state = TxnState::from_byte(v.u8()?)?;
    let start_ms = v.i64()?;
    let update_ms = v.i64()?;
    let mut partitions = BTreeSet::new();
    for _ in 0..v.count()? {
        let t = v.str()?;
        partitions.insert((t, v.i32()?));
    }
    let mut groups = BTreeSet::new();
    for _ in 0..v.count()? {
        groups.insert(v.str()?);
    }
    let (tv2, previous_producer_id, next_producer_id) =
        if version == VALUE_V1 { (v.u8()? != 0, v.i64()?, v.i64()?) } else { (false, -1, -1) };
    let meta = TxnMeta {
        producer_id,
        producer_epoch,
        last_producer_epoch,
        timeout_ms,
        state,
        partitions,
        groups,
        start_ms,
        update_ms,
        tv2,
        previous_producer_id,
        next_producer_id,
    };
    Some((id, Some(meta)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_damage_is_refused() {
        let m = TxnMeta {
            producer_id: 42,
            producer_epoch: 3,
            last_producer_epoch: 2,
            timeout_ms: 60_000,
            state: TxnState::PrepareCommit,
            partitions: [("t".to_string(), 1), ("__consumer_offsets".to_string(), 7)].into(),
            groups: ["g".to_string()].into(),
            start_ms: 10,
            update_ms: 20,
            tv2: false,
            previous_producer_id: -1,
            next_producer_id: -1,
        };
        let (k, v) = (key("tx-1"), value(&m));
        assert_eq!(&v[..2], &[0, 0], "a version 1 state keeps the version 0 value");
        let v2 = TxnMeta { tv2: true, previous_producer_id: 41, next_producer_id: 43, ..m.clone() };
        let w = value(&v2);
        assert_eq!(decode(&k, &w), Some(("tx-1".to_string(), Some(v2))));
        for cut in 0..w.len() {
            assert_eq!(decode(&k, &w[..cut]).and_then(|(_, m)| m), None, "cut at {cut}");
        }
        assert_eq!(decode(&k, &v), Some(("tx-1".to_string(), Some(m))));
        assert_eq!(decode(&k, &[]), Some(("tx-1".to_string(), None)));
        for cut in 0..v.len() {
            assert_eq!(decode(&k, &v[..cut]).and_then(|(_, m)| m), None, "cut at {cut}");
        }
        assert_eq!(decode(&[0, 1], &v), None);
    }
}
