//! Response frames as a list of parts, so that fetched record batches are written to the socket
//! from the `Bytes` the storage read returned instead of being copied into the frame.
//!
//! Contract: a [`Frame`] is the bytes of one whole response (size prefix included), in order,
//! as the concatenation of its parts. [`encode_with_records`] encodes like
//! `frame::encode_response`, except that any byte string of at least [`SHARE_MIN_BYTES`] the
//! encoder writes that lies inside one of the given `records` is taken as a slice of it
//! (`Bytes::slice_ref`, a reference count) rather than copied. The bytes on the wire are the
//! same either way (a unit test compares them).

use crate::frame::FrameError;
use bytes::buf::UninitSlice;
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::ResponseHeader;
use kafka_protocol::protocol::buf::ByteBufMut;
use kafka_protocol::protocol::{Encodable, HeaderVersion};
use std::ops::Range;

/// Byte strings shorter than this are copied: a part costs a write call of its own.
pub const SHARE_MIN_BYTES: usize = sluice_core::limits::RESPONSE_SHARE_MIN_BYTES;

/// One response frame: its parts, written in order.
#[derive(Debug, Clone, Default)]
pub struct Frame {
    parts: Vec<Bytes>,
}

impl Frame {
    /// Total bytes of the frame.
    pub fn len(&self) -> usize {
        self.parts.iter().map(Bytes::len).sum()
    }

    /// Bytes this frame keeps in memory, as counted in the response budget: a part of at least
    /// half a read-cache chunk and less than a chunk may be a slice of a cached chunk and then
    /// keeps the whole chunk alive (the cache and the fetch cut copy shorter ranges out:
    /// `sluice_storage::cache::SHARED_SLICE_MIN`), so it counts as a chunk; any other part
    /// counts as its length.
    pub fn held_bytes(&self) -> usize {
        let chunk = sluice_storage::cache::CHUNK_BYTES;
        let held = |p: &Bytes| match p.len() {
            n if (sluice_storage::cache::SHARED_SLICE_MIN..chunk).contains(&n) => chunk,
            n => n,
        };
        self.parts.iter().map(held).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn parts(&self) -> &[Bytes] {
        &self.parts
    }

    /// The frame as one contiguous buffer (copies when it has several parts; for tests).
    pub fn to_bytes(&self) -> Bytes {
        match self.parts.as_slice() {
            [one] => one.clone(),
            parts => parts.iter().flat_map(|p| p.iter().copied()).collect::<Vec<u8>>().into(),
        }
    }
}

impl From<Bytes> for Frame {
    fn from(b: Bytes) -> Frame {
        Frame { parts: vec![b] }
    }
}

/// Encodes a response (size prefix, header, body) whose long byte strings found in `records`
/// are shared, not copied.
pub fn encode_with_records<T: Encodable + HeaderVersion>(
    correlation_id: i32,
    version: i16,
    body: &T,
    records: &[Bytes],
) -> Result<Frame, FrameError> {
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let header_version = T::header_version(version);
    let size =
        header.compute_size(header_version).map_err(encode_err)? + body.compute_size(version).map_err(encode_err)?;
    let prefix = i32::try_from(size).map_err(|_| FrameError::Encode(format!("response of {size} bytes")))?;
    let mut buf = PartsBuf {
        done: Vec::new(),
        done_len: 0,
        head: BytesMut::with_capacity((size + 4).min(HEAD_CAPACITY)),
        records,
        next: 0,
    };
    buf.head.put_i32(prefix);
    header.encode(&mut buf, header_version).map_err(encode_err)?;
    body.encode(&mut buf, version).map_err(encode_err)?;
    if buf.offset() != size + 4 {
        return Err(FrameError::Encode(format!("encoded {} bytes, computed {}", buf.offset() - 4, size)));
    }
    let mut parts = buf.done;
    if !buf.head.is_empty() {
        parts.push(buf.head.freeze());
    }
    Ok(Frame { parts })
}

fn encode_err(e: impl std::fmt::Display) -> FrameError {
    FrameError::Encode(e.to_string())
}

/// Initial capacity of the part being written (large shared record sets are not in it).
const HEAD_CAPACITY: usize = sluice_core::limits::RESPONSE_HEAD_CAPACITY_BYTES;

/// The encoder's buffer: finished parts, then the part being written.
struct PartsBuf<'a> {
    done: Vec<Bytes>,
    done_len: usize,
    head: BytesMut,
    records: &'a [Bytes],
    /// Where the search for the next shared slice starts (records are encoded in order).
    next: usize,
}

impl PartsBuf<'_> {
    /// The record buffer `src` lies in, if any.
    fn owner_of(&mut self, src: &[u8]) -> Option<Bytes> {
        let (start, end) = (src.as_ptr() as usize, src.as_ptr() as usize + src.len());
        let n = self.records.len();
        for k in 0..n {
            let i = (self.next + k) % n;
            let r = &self.records[i];
            let (rs, re) = (r.as_ptr() as usize, r.as_ptr() as usize + r.len());
            if rs <= start && end <= re {
                self.next = i + 1;
                return Some(r.slice_ref(src));
            }
        }
        None
    }
}

// SAFETY: every method forwards to the `BytesMut` being written, which upholds `BufMut`'s
// contract; `put_slice` either does the same or only moves finished bytes into `done`.
unsafe impl BufMut for PartsBuf<'_> {
    fn remaining_mut(&self) -> usize {
        self.head.remaining_mut()
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        // SAFETY: the caller initialised `cnt` bytes of `chunk_mut`, which is `head`'s.
        unsafe { self.head.advance_mut(cnt) }
    }

    fn chunk_mut(&mut self) -> &mut UninitSlice {
        self.head.chunk_mut()
    }

    fn put_slice(&mut self, src: &[u8]) {
        if src.len() >= SHARE_MIN_BYTES {
            if let Some(shared) = self.owner_of(src) {
                if !self.head.is_empty() {
                    let part = self.head.split().freeze();
                    self.done_len += part.len();
                    self.done.push(part);
                }
                self.done_len += shared.len();
                self.done.push(shared);
                return;
            }
        }
        self.head.extend_from_slice(src);
    }
}

impl ByteBufMut for PartsBuf<'_> {
    fn offset(&self) -> usize {
        self.done_len + self.head.len()
    }

    /// Only within the part being written (message encoders do not seek; record-batch
    /// encoders, which do, are not used for responses).
    fn seek(&mut self, offset: usize) {
        assert!(offset >= self.done_len, "seek into a finished part of a response");
        self.head.resize(offset - self.done_len, 0);
    }

    fn range(&mut self, r: Range<usize>) -> &mut [u8] {
        assert!(r.start >= self.done_len, "range in a finished part of a response");
        &mut self.head[r.start - self.done_len..r.end - self.done_len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::encode_response;
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::{FetchResponse, TopicName};

    fn response(records: &[Bytes]) -> FetchResponse {
        let partitions = records
            .iter()
            .enumerate()
            .map(|(i, r)| {
                PartitionData::default()
                    .with_partition_index(i32::try_from(i).unwrap())
                    .with_high_watermark(7)
                    .with_records(if r.is_empty() { None } else { Some(r.clone()) })
            })
            .collect();
        FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
            .with_topic(TopicName("t".into()))
            .with_partitions(partitions)])
    }

    #[test]
    fn shared_records_give_the_same_bytes_as_a_copied_frame() {
        let big: Vec<Bytes> = (0..4u8)
            .map(|i| Bytes::from(vec![i; if i == 1 { 100 } else { SHARE_MIN_BYTES + 3 * i as usize }]))
            .chain([Bytes::new()])
            .collect();
        // A store of several batches: one response carries a slice of it.
        let store = Bytes::from((0..200_000u32).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
        let mut records = big.clone();
        records.push(store.slice(1000..90_000));
        for version in [4i16, 11, 12, 13, 16] {
            let resp = response(&records);
            let copied = encode_response(9, version, &resp).unwrap();
            let framed = encode_with_records(9, version, &resp, &records).unwrap();
            assert_eq!(framed.len(), copied.len(), "v{version}");
            assert_eq!(framed.to_bytes(), copied, "v{version}");
            // The large record sets were shared, not copied: their parts point into them.
            let shared = framed
                .parts()
                .iter()
                .filter(|p| records.iter().any(|r| !r.is_empty() && r.as_ptr() == p.as_ptr()))
                .count();
            assert_eq!(shared, 4, "v{version}: parts {:?}", framed.parts().iter().map(Bytes::len).collect::<Vec<_>>());
        }
    }

    #[test]
    fn held_bytes_count_what_a_part_may_keep_alive() {
        let chunk = sluice_storage::cache::CHUNK_BYTES;
        let min = sluice_storage::cache::SHARED_SLICE_MIN;
        let f = Frame {
            parts: vec![Bytes::from(vec![0u8; 100]), Bytes::from(vec![0u8; min]), Bytes::from(vec![0u8; 2 * chunk])],
        };
        // A part that may be a slice of a cache chunk counts as the chunk; others as themselves.
        assert_eq!(f.held_bytes(), 100 + chunk + 2 * chunk);
        assert_eq!(f.len(), 100 + min + 2 * chunk);
    }

    #[test]
    fn without_large_records_the_frame_is_one_part() {
        let records = vec![Bytes::from_static(b"short")];
        let f = encode_with_records(1, 12, &response(&records), &records).unwrap();
        assert_eq!(f.parts().len(), 1);
        assert_eq!(f.to_bytes(), encode_response(1, 12, &response(&records)).unwrap());
    }
}
