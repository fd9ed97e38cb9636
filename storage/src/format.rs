//! Data directory layout and its format marker.
//!
//! ```text
//! <data_dir>/
//!   sluice.format                 "sluice-data-format <N>\n", refused when N is unknown
//!   meta/metadata.bin             topics, ids, partitions, placement (see shard::metadata)
//!   <topic>-<partition>/          one directory per partition, Kafka-style
//!     00000000000000000000.log    record batches, base offset in the name (20 digits)
//! ```
//!
//! Contract: [`ensure_data_dir`] either returns with the directory present, writable and of
//! the current format, or returns an error that names the path and the problem.

use crate::StorageError;
use std::path::{Path, PathBuf};

/// The on-disk format this build writes and understands.
pub const FORMAT_VERSION: u32 = 1;
const MARKER: &str = "sluice.format";

/// Creates the data dir if missing, checks the format marker, and probes writability.
pub fn ensure_data_dir(dir: &Path) -> Result<(), StorageError> {
    std::fs::create_dir_all(dir).map_err(|e| StorageError::io("create data directory", dir.display(), e))?;
    let marker = dir.join(MARKER);
    match std::fs::read_to_string(&marker) {
        Ok(text) => {
            let found = text.trim().to_string();
            if found != format!("sluice-data-format {FORMAT_VERSION}") {
                return Err(StorageError::UnknownFormat {
                    path: dir.display().to_string(),
                    found,
                    expected: FORMAT_VERSION,
                });
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let tmp = dir.join(".sluice.format.tmp");
            std::fs::write(&tmp, format!("sluice-data-format {FORMAT_VERSION}\n"))
                .map_err(|e| StorageError::io("write format marker in", dir.display(), e))?;
            std::fs::rename(&tmp, &marker).map_err(|e| StorageError::io("write format marker in", dir.display(), e))?;
        }
        Err(e) => return Err(StorageError::io("read format marker", marker.display(), e)),
    }
    Ok(())
}

/// Holds an exclusive lock on the data directory for the life of the process, so two
/// brokers never share one. Returns the open lock file (keep it alive).
pub fn lock_data_dir(dir: &Path) -> Result<std::fs::File, StorageError> {
    use std::io::{Read, Seek, Write};
    use std::os::fd::AsRawFd;
    let path = dir.join(".lock");
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| StorageError::io("open lock file", path.display(), e))?;
    // SAFETY: flock on a file descriptor we own.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let mut holder = String::new();
        let _ = f.read_to_string(&mut holder);
        return Err(StorageError::io(
            "lock",
            dir.display(),
            std::io::Error::other(format!(
                "the data directory is in use by another sluice process (pid {})",
                holder.trim()
            )),
        ));
    }
    let _ = f.set_len(0);
    let _ = f.rewind();
    let _ = writeln!(f, "{}", std::process::id());
    Ok(f)
}

/// Directory of one partition's segments.
pub fn partition_dir(data_dir: &Path, topic: &str, partition: i32) -> PathBuf {
    data_dir.join(format!("{topic}-{partition}"))
}

/// File name of the segment starting at `base_offset`.
pub fn segment_file_name(base_offset: i64) -> String {
    format!("{base_offset:020}.log")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_is_written_then_checked() {
        let d = tempfile::tempdir().unwrap();
        ensure_data_dir(d.path()).unwrap();
        ensure_data_dir(d.path()).unwrap();
        std::fs::write(d.path().join(MARKER), "sluice-data-format 99\n").unwrap();
        let e = ensure_data_dir(d.path()).unwrap_err().to_string();
        assert!(e.contains("99"), "{e}");
    }

    #[test]
    fn names_are_kafka_style() {
        assert_eq!(segment_file_name(42), "00000000000000000042.log");
    }
}
