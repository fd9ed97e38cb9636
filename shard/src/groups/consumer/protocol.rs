//! The classic consumer protocol's embedded bytes (Kafka's `ConsumerProtocolSubscription` and
//! `ConsumerProtocolAssignment`, the metadata of a JoinGroup protocol and a SyncGroup
//! assignment when the protocol type is `consumer`), read and written for classic members of
//! a KIP-848 group and for the conversions between the two kinds of group.
//!
//! ```text
//! subscription: version i16 | topics [string] | user data bytes? | v1+: owned [topic, [i32]]
//!               | v2+: generation i32 | v3+: rack string?
//! assignment:   version i16 | assigned [topic, [i32]] | user data bytes?
//! [x]: i32 count then items; string: i16 length + UTF-8 (-1: null); bytes: i32 length (-1: null)
//! ```
//!
//! Contract: the decoders never panic and return `None` for bytes they cannot read whole (a
//! newer version is read as far as the fields known here, as Kafka reads it); counts are
//! checked against the bytes left before allocating.

use super::Assignment;
use bytes::Bytes;
use std::collections::BTreeSet;

/// What a classic member's JoinGroup metadata says.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Subscription {
    pub version: i16,
    pub topics: Vec<String>,
    /// The partitions the member owns (version 1+; empty before).
    pub owned: Assignment,
    pub rack_id: Option<String>,
}

struct R<'a>(&'a [u8]);

impl R<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn i16(&mut self) -> Option<i16> {
        self.take(2).map(|b| i16::from_be_bytes([b[0], b[1]]))
    }
    fn i32(&mut self) -> Option<i32> {
        self.take(4).map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    /// An array length, refused when even one byte per item would not fit.
    fn count(&mut self) -> Option<usize> {
        let n = usize::try_from(self.i32()?).ok()?;
        (n <= self.0.len()).then_some(n)
    }
    fn nullable_str(&mut self) -> Option<Option<String>> {
        let n = self.i16()?;
        if n < 0 {
            return Some(None);
        }
        let b = self.take(usize::try_from(n).ok()?)?;
        String::from_utf8(b.to_vec()).ok().map(Some)
    }
    fn str(&mut self) -> Option<String> {
        self.nullable_str()?
    }
    fn skip_bytes(&mut self) -> Option<()> {
        let n = self.i32()?;
        if n >= 0 {
            self.take(usize::try_from(n).ok()?)?;
        }
        Some(())
    }
    fn partitions(&mut self) -> Option<Assignment> {
        let mut a = Assignment::new();
        for _ in 0..self.count()? {
            let topic = self.str()?;
            let mut ps = BTreeSet::new();
            for _ in 0..self.count()? {
                ps.insert(self.i32()?);
            }
            if !ps.is_empty() {
                a.entry(topic).or_default().extend(ps);
            }
        }
        Some(a)
    }
}

/// The version at the head of embedded bytes (0 when there is none).
pub(crate) fn version(bytes: &[u8]) -> i16 {
    R(bytes).i16().unwrap_or(0).max(0)
}

pub(crate) fn decode_subscription(bytes: &[u8]) -> Option<Subscription> {
    let mut r = R(bytes);
    let version = r.i16()?;
    if version < 0 {
        return None;
    }
    let mut s = Subscription { version, ..Default::default() };
    for _ in 0..r.count()? {
        s.topics.push(r.str()?);
    }
    r.skip_bytes()?;
    if version >= 1 {
        s.owned = r.partitions()?;
    }
    if version >= 2 {
        r.i32()?;
    }
    if version >= 3 {
        s.rack_id = r.nullable_str()?;
    }
    Some(s)
}

/// The partitions of a SyncGroup assignment; empty bytes (no assignment yet) are none.
pub(crate) fn decode_assignment(bytes: &[u8]) -> Option<Assignment> {
    if bytes.is_empty() {
        return Some(Assignment::new());
    }
    let mut r = R(bytes);
    if r.i16()? < 0 {
        return None;
    }
    r.partitions()
}

/// An assignment in the version the member's subscription used (at most 3, Kafka's highest).
pub(crate) fn encode_assignment(version: i16, a: &Assignment) -> Bytes {
    let mut out = Vec::with_capacity(16);
    out.extend_from_slice(&version.clamp(0, 3).to_be_bytes());
    let count = |n: usize| i32::try_from(n).expect("a partition count fits an i32").to_be_bytes();
    out.extend_from_slice(&count(a.len()));
    for (topic, ps) in a {
        let len = i16::try_from(topic.len()).expect("a topic name is shorter than 2^15 bytes");
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(topic.as_bytes());
        out.extend_from_slice(&count(ps.len()));
        for p in ps {
            out.extend_from_slice(&p.to_be_bytes());
        }
    }
    out.extend_from_slice(&(-1i32).to_be_bytes());
    Bytes::from(out)
}

/// A subscription as a classic client writes it (tests, benchmarks).
#[cfg(test)]
pub(crate) fn encode_subscription(s: &Subscription) -> Bytes {
    let mut out = Vec::new();
    let str16 = |out: &mut Vec<u8>, t: &str| {
        out.extend_from_slice(&i16::try_from(t.len()).unwrap().to_be_bytes());
        out.extend_from_slice(t.as_bytes());
    };
    out.extend_from_slice(&s.version.to_be_bytes());
    out.extend_from_slice(&i32::try_from(s.topics.len()).unwrap().to_be_bytes());
    for t in &s.topics {
        str16(&mut out, t);
    }
    out.extend_from_slice(&(-1i32).to_be_bytes());
    if s.version >= 1 {
        out.extend_from_slice(&i32::try_from(s.owned.len()).unwrap().to_be_bytes());
        for (t, ps) in &s.owned {
            str16(&mut out, t);
            out.extend_from_slice(&i32::try_from(ps.len()).unwrap().to_be_bytes());
            for p in ps {
                out.extend_from_slice(&p.to_be_bytes());
            }
        }
    }
    if s.version >= 2 {
        out.extend_from_slice(&(-1i32).to_be_bytes());
    }
    if s.version >= 3 {
        match &s.rack_id {
            None => out.extend_from_slice(&(-1i16).to_be_bytes()),
            Some(r) => str16(&mut out, r),
        }
    }
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn a(list: &[(&str, &[i32])]) -> Assignment {
        list.iter().map(|(t, ps)| (t.to_string(), ps.iter().copied().collect())).collect()
    }

    #[test]
    fn subscriptions_of_every_version_read_back() {
        for version in 0..=3 {
            let s = Subscription {
                version,
                topics: vec!["a".into(), "b".into()],
                owned: if version >= 1 { a(&[("a", &[0, 2])]) } else { Assignment::new() },
                rack_id: (version >= 3).then(|| "r1".to_string()),
            };
            assert_eq!(decode_subscription(&encode_subscription(&s)), Some(s));
        }
    }

    #[test]
    fn assignments_read_back_and_empty_bytes_are_no_partitions() {
        let x = a(&[("t", &[1, 4]), ("u", &[0])]);
        let b = encode_assignment(1, &x);
        assert_eq!(version(&b), 1);
        assert_eq!(decode_assignment(&b), Some(x));
        assert_eq!(decode_assignment(&[]), Some(Assignment::new()));
        assert_eq!(decode_assignment(&[0, 0, 0x7f, 0xff, 0xff, 0xff]), None, "a count beyond the bytes");
    }

    proptest! {
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_subscription(&bytes);
            let _ = decode_assignment(&bytes);
            let _ = version(&bytes);
        }
    }
}
