//! Compression of a prebuilt batch's records section, as Kafka clients do it: gzip, snappy
//! (raw blocks, as librdkafka sends; Kafka's Java consumer reads them too), lz4 (the LZ4 frame
//! format with independent blocks) and zstd; the codec goes in the attributes' low bits, the
//! length and CRC-32C are recomputed.
//!
//! Contract: [`compress_batch`] returns a valid v2 batch holding the same records.

use sluice_core::batch::{self, HEADER_LEN};
use std::io::Write;

/// `--compression` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Codec {
    /// The attributes' codec id.
    pub fn id(self) -> i16 {
        match self {
            Codec::None => 0,
            Codec::Gzip => 1,
            Codec::Snappy => 2,
            Codec::Lz4 => 3,
            Codec::Zstd => 4,
        }
    }
}

fn compress(codec: Codec, raw: &[u8]) -> std::io::Result<Vec<u8>> {
    match codec {
        Codec::None => Ok(raw.to_vec()),
        Codec::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(raw)?;
            e.finish()
        }
        Codec::Snappy => snap::raw::Encoder::new().compress_vec(raw).map_err(std::io::Error::other),
        Codec::Lz4 => {
            let mut e = lz4_flex::frame::FrameEncoder::new(Vec::new());
            e.write_all(raw)?;
            e.finish().map_err(std::io::Error::other)
        }
        Codec::Zstd => zstd::bulk::compress(raw, 3),
    }
}

/// The batch with its records section compressed by `codec`.
pub fn compress_batch(batch: Vec<u8>, codec: Codec) -> std::io::Result<Vec<u8>> {
    if codec == Codec::None {
        return Ok(batch);
    }
    let body = compress(codec, &batch[HEADER_LEN..])?;
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(&batch[..HEADER_LEN]);
    out.extend_from_slice(&body);
    let len = (out.len() - batch::LOG_OVERHEAD) as i32;
    out[8..12].copy_from_slice(&len.to_be_bytes());
    let attrs = i16::from_be_bytes([out[21], out[22]]) & !0x07 | codec.id();
    out[21..23].copy_from_slice(&attrs.to_be_bytes());
    let crc = batch::compute_crc(&out);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::batch::Record;

    #[test]
    fn every_codec_gives_a_valid_smaller_batch_of_the_same_records() {
        let value = b"the quick brown fox jumps over the lazy dog ".repeat(20);
        let recs: Vec<Record<'_>> = (0..50).map(|_| Record { key: None, value: &value }).collect();
        let plain = batch::build(&recs, 1_700_000_000_000);
        for codec in [Codec::Gzip, Codec::Snappy, Codec::Lz4, Codec::Zstd] {
            let b = compress_batch(plain.clone(), codec).unwrap();
            let h = batch::validate(&b).unwrap();
            assert_eq!(h.compression(), codec.id());
            assert_eq!(h.records_count, 50);
            assert!(b.len() < plain.len() / 4, "{codec:?}: {} bytes", b.len());
        }
    }
}
