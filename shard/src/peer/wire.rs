//! The conventions every peer call's payloads follow (`txn::markers`, `txn::verify`,
//! `share::remote`): big-endian integers, a version byte first, names as a u16 length and UTF-8
//! bytes, counts as u32.
//!
//! Contract: [`Reader`] never reads past its slice and never allocates for a count before
//! checking it against the bytes left ([`Reader::count`]), so hostile or damaged bytes from a
//! peer are a [`WireError`], not a panic or a huge allocation; [`Reader::end`] refuses trailing
//! bytes.

use bytes::{BufMut, BytesMut};

/// The version byte every peer-call payload starts with.
pub(crate) const WIRE_VERSION: u8 = 1;

/// Why bytes from a peer do not decode.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("truncated")]
    Truncated,
    #[error("version {0} (this broker speaks {WIRE_VERSION})")]
    Version(u8),
    #[error("a count of {0} does not fit the bytes left")]
    Count(u32),
    #[error("a name is not UTF-8")]
    Name,
    #[error("unknown outcome code {0}")]
    Code(u8),
    #[error("{0} trailing bytes")]
    Trailing(usize),
}

/// Writes a name: its length as a u16, then its bytes.
pub(crate) fn put_name(b: &mut BytesMut, s: &str) {
    let n = u16::try_from(s.len()).expect("topic and group names are shorter than 64 KiB");
    b.put_u16(n);
    b.put_slice(s.as_bytes());
}

/// Writes the header every payload starts with: the version byte and the call's id.
pub(crate) fn put_header(b: &mut BytesMut, id: u64) {
    b.put_u8(WIRE_VERSION);
    b.put_u64(id);
}

/// Reads a payload front to back (module docs).
pub(crate) struct Reader<'a>(pub(crate) &'a [u8]);

impl<'a> Reader<'a> {
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.0.len() < n {
            return Err(WireError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        Ok(self.take(N)?.try_into().expect("took N bytes"))
    }
    pub(crate) fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.array::<1>()?[0])
    }
    pub(crate) fn u16(&mut self) -> Result<u16, WireError> {
        self.array().map(u16::from_be_bytes)
    }
    pub(crate) fn u32(&mut self) -> Result<u32, WireError> {
        self.array().map(u32::from_be_bytes)
    }
    pub(crate) fn u64(&mut self) -> Result<u64, WireError> {
        self.array().map(u64::from_be_bytes)
    }
    /// A count of items of at least `min_bytes` each, checked against the bytes left.
    pub(crate) fn count(&mut self, min_bytes: usize) -> Result<usize, WireError> {
        let c = self.u32()?;
        let n = usize::try_from(c).map_err(|_| WireError::Count(c))?;
        if n.checked_mul(min_bytes).is_none_or(|need| need > self.0.len()) {
            return Err(WireError::Count(c));
        }
        Ok(n)
    }
    pub(crate) fn name(&mut self) -> Result<String, WireError> {
        let n = usize::from(self.u16()?);
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| WireError::Name)
    }
    pub(crate) fn version(&mut self) -> Result<(), WireError> {
        match self.u8()? {
            WIRE_VERSION => Ok(()),
            v => Err(WireError::Version(v)),
        }
    }
    /// The header [`put_header`] writes: checks the version, returns the id.
    pub(crate) fn header(&mut self) -> Result<u64, WireError> {
        self.version()?;
        self.u64()
    }
    pub(crate) fn end(&self) -> Result<(), WireError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(WireError::Trailing(self.0.len()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_and_a_name_round_trip_and_damage_is_refused() {
        let mut b = BytesMut::new();
        put_header(&mut b, 77);
        put_name(&mut b, "tópico");
        let mut r = Reader(&b);
        assert_eq!(r.header(), Ok(77));
        assert_eq!(r.name().as_deref(), Ok("tópico"));
        assert_eq!(r.end(), Ok(()));
        assert_eq!(Reader(&[2]).header(), Err(WireError::Version(2)));
        assert_eq!(Reader(&b[..5]).header(), Err(WireError::Truncated));
        assert_eq!(Reader(&[0, 2, 0xff, 0xfe]).name(), Err(WireError::Name));
        assert_eq!(Reader(&[0]).end(), Err(WireError::Trailing(1)));
    }

    #[test]
    fn a_count_larger_than_the_bytes_left_is_refused_before_allocating() {
        let mut b = u32::MAX.to_be_bytes().to_vec();
        assert_eq!(Reader(&b).count(1), Err(WireError::Count(u32::MAX)));
        b = 3u32.to_be_bytes().to_vec();
        b.extend([0; 6]);
        assert_eq!(Reader(&b).count(2), Ok(3));
        assert_eq!(Reader(&b).count(3), Err(WireError::Count(3)));
    }
}
