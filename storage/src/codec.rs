//! Decompression of a v2 batch's records section, for the few reads that need records inside a
//! compressed batch (ListOffsets MAX_TIMESTAMP: the offset of the record with the largest
//! timestamp; Produce to a compacted topic: the keys; log compaction), and compression of a
//! records section with a batch's codec ([`compressed`], for batches compaction rebuilds).
//!
//! Contract: [`uncompressed`] returns the batch as an uncompressed batch holding the same
//! records (header copied, codec bits cleared, `batchLength` fixed; the CRC is not recomputed,
//! so the result is for reading records with `sluice_core::batch::records`, never for storing
//! or serving). Codecs as Kafka clients write them: gzip, snappy (raw, as librdkafka writes it,
//! or xerial-framed, as the Java client writes it), lz4 (the LZ4 frame format) and zstd. The
//! decompressed size is bounded by `MAX_DECOMPRESSED_BATCH_BYTES`; larger is an error.

use sluice_core::batch::{BatchHeader, HEADER_LEN};
use sluice_core::limits::MAX_DECOMPRESSED_BATCH_BYTES;
use std::io::Read;

/// Why a batch could not be decompressed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("unknown compression codec {0}")]
    UnknownCodec(i16),
    #[error("corrupt {codec} data: {why}")]
    Corrupt { codec: &'static str, why: String },
    #[error("records decompress to more than {0} bytes")]
    TooLarge(usize),
}

const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\x00";

/// `batch` (one whole batch) as an uncompressed batch with the same header fields.
pub fn uncompressed(batch: &[u8], h: &BatchHeader) -> Result<Vec<u8>, CodecError> {
    let end = h.total_len().min(batch.len());
    let body = &batch[HEADER_LEN.min(end)..end];
    let records = match h.compression() {
        0 => body.to_vec(),
        1 => bounded("gzip", flate2::read::GzDecoder::new(body))?,
        2 => snappy(body)?,
        3 => bounded("lz4", lz4_flex::frame::FrameDecoder::new(body))?,
        4 => bounded("zstd", zstd::stream::read::Decoder::new(body).map_err(|e| corrupt("zstd", e))?)?,
        other => return Err(CodecError::UnknownCodec(other)),
    };
    let mut out = Vec::with_capacity(HEADER_LEN + records.len());
    out.extend_from_slice(&batch[..HEADER_LEN]);
    let len = i32::try_from(HEADER_LEN - sluice_core::batch::LOG_OVERHEAD + records.len())
        .map_err(|_| CodecError::TooLarge(MAX_DECOMPRESSED_BATCH_BYTES))?;
    out[8..12].copy_from_slice(&len.to_be_bytes());
    let attributes = h.attributes & !0x07;
    out[21..23].copy_from_slice(&attributes.to_be_bytes());
    out.extend_from_slice(&records);
    Ok(out)
}

/// `records` (a batch's uncompressed records section) compressed with `codec` as Kafka's
/// clients write it (gzip, raw snappy, the LZ4 frame format, zstd), for batches the broker
/// rebuilds (log compaction). Codec 0 returns the bytes as they are.
pub fn compressed(records: &[u8], codec: i16) -> Result<Vec<u8>, CodecError> {
    use std::io::Write;
    let io = |c: &'static str| move |e: std::io::Error| corrupt(c, e);
    match codec {
        0 => Ok(records.to_vec()),
        1 => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(records).map_err(io("gzip"))?;
            e.finish().map_err(io("gzip"))
        }
        2 => snap::raw::Encoder::new().compress_vec(records).map_err(|e| corrupt("snappy", e)),
        3 => {
            let mut e = lz4_flex::frame::FrameEncoder::new(Vec::new());
            e.write_all(records).map_err(io("lz4"))?;
            e.finish().map_err(|e| corrupt("lz4", e))
        }
        4 => zstd::encode_all(records, 3).map_err(io("zstd")),
        other => Err(CodecError::UnknownCodec(other)),
    }
}

fn corrupt(codec: &'static str, e: impl std::fmt::Display) -> CodecError {
    CodecError::Corrupt { codec, why: e.to_string() }
}

/// Reads a decoder to the end, refusing more than the bound.
fn bounded(codec: &'static str, r: impl Read) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::new();
    r.take(MAX_DECOMPRESSED_BATCH_BYTES as u64 + 1).read_to_end(&mut out).map_err(|e| corrupt(codec, e))?;
    if out.len() > MAX_DECOMPRESSED_BATCH_BYTES {
        return Err(CodecError::TooLarge(MAX_DECOMPRESSED_BATCH_BYTES));
    }
    Ok(out)
}

/// Raw snappy, or the xerial framing (magic, version, compatible version, then blocks of a
/// 4-byte big-endian length and raw snappy data).
fn snappy(body: &[u8]) -> Result<Vec<u8>, CodecError> {
    let raw = |b: &[u8]| -> Result<Vec<u8>, CodecError> {
        let n = snap::raw::decompress_len(b).map_err(|e| corrupt("snappy", e))?;
        if n > MAX_DECOMPRESSED_BATCH_BYTES {
            return Err(CodecError::TooLarge(MAX_DECOMPRESSED_BATCH_BYTES));
        }
        snap::raw::Decoder::new().decompress_vec(b).map_err(|e| corrupt("snappy", e))
    };
    if !body.starts_with(XERIAL_MAGIC) {
        return raw(body);
    }
    let mut pos = XERIAL_MAGIC.len() + 8;
    let mut out = Vec::new();
    while pos < body.len() {
        let Some(len_bytes) = body.get(pos..pos + 4) else {
            return Err(corrupt("snappy", "truncated xerial block length"));
        };
        let len = u32::from_be_bytes(len_bytes.try_into().expect("4 bytes")) as usize;
        let Some(block) = body.get(pos + 4..pos + 4 + len) else {
            return Err(corrupt("snappy", "truncated xerial block"));
        };
        out.extend(raw(block)?);
        if out.len() > MAX_DECOMPRESSED_BATCH_BYTES {
            return Err(CodecError::TooLarge(MAX_DECOMPRESSED_BATCH_BYTES));
        }
        pos += 4 + len;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::batch::{build, records, Record};
    use std::io::Write;

    fn with_codec(codec: i16, compressed: Vec<u8>, plain: &[u8]) -> Vec<u8> {
        let mut b = plain[..HEADER_LEN].to_vec();
        b.extend_from_slice(&compressed);
        let len = i32::try_from(b.len() - sluice_core::batch::LOG_OVERHEAD).unwrap();
        b[8..12].copy_from_slice(&len.to_be_bytes());
        let attributes = i16::from_be_bytes([b[21], b[22]]) | codec;
        b[21..23].copy_from_slice(&attributes.to_be_bytes());
        b
    }

    #[test]
    fn every_codec_gives_back_the_records() {
        let values: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; 100 + usize::from(i)]).collect();
        let recs: Vec<Record> = values.iter().map(|v| Record { key: None, value: v }).collect();
        let plain = build(&recs, 0);
        let body = &plain[HEADER_LEN..];
        let gz = {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(body).unwrap();
            e.finish().unwrap()
        };
        let sn = snap::raw::Encoder::new().compress_vec(body).unwrap();
        let mut xerial = XERIAL_MAGIC.to_vec();
        xerial.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1]);
        xerial.extend_from_slice(&u32::try_from(sn.len()).unwrap().to_be_bytes());
        xerial.extend_from_slice(&sn);
        let lz = {
            let mut e = lz4_flex::frame::FrameEncoder::new(Vec::new());
            e.write_all(body).unwrap();
            e.finish().unwrap()
        };
        let zs = zstd::encode_all(body, 3).unwrap();
        for (codec, data) in [(1, gz), (2, sn), (2, xerial), (3, lz), (4, zs)] {
            let b = with_codec(codec, data, &plain);
            let h = BatchHeader::parse(&b).unwrap();
            let out = uncompressed(&b, &h).unwrap();
            let got: Vec<Vec<u8>> = records(&out).unwrap().iter().map(|r| r.value.unwrap().to_vec()).collect();
            assert_eq!(got, values, "codec {codec}");
        }
        // Garbage is an error, not a panic.
        let b = with_codec(4, vec![1, 2, 3, 4, 5], &plain);
        assert!(uncompressed(&b, &BatchHeader::parse(&b).unwrap()).is_err());
    }
}
