//! The per-partition raft-state file: hard state (term, vote, commit), the floor that anchors
//! Raft indexes to offsets (index, term, next offset), the conf state and the leader-epoch
//! history, in one small checksummed file replaced atomically.
//!
//! Contract:
//! - [`write`] writes `raft-state.tmp`, fsyncs it, renames it over `raft-state` and fsyncs the
//!   directory: after a crash the file is the old or the new state, whole.
//! - [`decode`] checks the magic, version, every count against the bytes left, the epoch order
//!   and a CRC32C of everything before it; a file that fails is an error, never a guess.
//! - A snapshot install (the replica's log restarted empty at the snapshot's offset) is made
//!   atomic by an install record: [`write_install`] writes the new state, durably, as
//!   `raft-state.install` before the log is touched; [`commit_install`] renames it over
//!   `raft-state` once the log was reset. Whoever opens the replica and finds an install
//!   record ([`read_install`]) redoes the reset and commits it: after a crash the replica is
//!   its old log with its old state, or the new empty log with the new state.
//! - Plain `std::fs` (blocking): the file is a few hundred bytes, written when a term, vote,
//!   conf state, floor or epoch changes; the shard wiring may move it onto the DMA file API.

use crate::epochs::EpochHistory;
use sluice_core::limits::MAX_RAFT_STATE_FILE_BYTES;
use sluice_core::{LeaderEpoch, Offset};
use std::io::Write;
use std::path::Path;

const MAGIC: &[u8; 4] = b"SLRS";
const VERSION: u8 = 1;
pub const FILE_NAME: &str = "raft-state";
const TMP_NAME: &str = "raft-state.tmp";

/// What the file holds (plain integers: the Raft types live in sluice-shard).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RaftStateRecord {
    pub term: u64,
    pub vote: u64,
    pub commit: u64,
    pub floor_index: u64,
    pub floor_term: u64,
    pub floor_next_offset: Offset,
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
    pub voters_outgoing: Vec<u64>,
    pub learners_next: Vec<u64>,
    pub auto_leave: bool,
    pub epochs: EpochHistory,
}

/// Why a raft-state file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RaftStateError {
    #[error("raft-state file truncated")]
    Truncated,
    #[error("raft-state file: invalid {0}")]
    Invalid(&'static str),
    #[error("raft-state file: checksum mismatch")]
    Checksum,
}

impl RaftStateRecord {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(128);
        b.extend_from_slice(MAGIC);
        b.push(VERSION);
        for v in [self.term, self.vote, self.commit, self.floor_index, self.floor_term] {
            b.extend_from_slice(&v.to_be_bytes());
        }
        b.extend_from_slice(&self.floor_next_offset.0.to_be_bytes());
        for ids in [&self.voters, &self.learners, &self.voters_outgoing, &self.learners_next] {
            put_u32(&mut b, ids.len());
            ids.iter().for_each(|i| b.extend_from_slice(&i.to_be_bytes()));
        }
        b.push(u8::from(self.auto_leave));
        put_u32(&mut b, self.epochs.entries().len());
        for (e, o) in self.epochs.entries() {
            b.extend_from_slice(&e.0.to_be_bytes());
            b.extend_from_slice(&o.0.to_be_bytes());
        }
        let crc = crc32c::crc32c(&b);
        b.extend_from_slice(&crc.to_be_bytes());
        b
    }

    pub fn decode(buf: &[u8]) -> Result<RaftStateRecord, RaftStateError> {
        if buf.len() > MAX_RAFT_STATE_FILE_BYTES {
            return Err(RaftStateError::Invalid("size"));
        }
        let (body, crc) = buf.split_at_checked(buf.len().saturating_sub(4)).ok_or(RaftStateError::Truncated)?;
        let crc: [u8; 4] = crc.try_into().map_err(|_| RaftStateError::Truncated)?;
        if crc32c::crc32c(body) != u32::from_be_bytes(crc) {
            return Err(RaftStateError::Checksum);
        }
        let mut r = Reader(body);
        if r.take(4)? != MAGIC || r.take(1)? != [VERSION] {
            return Err(RaftStateError::Invalid("magic or version"));
        }
        let [term, vote, commit, floor_index, floor_term] = [r.u64()?, r.u64()?, r.u64()?, r.u64()?, r.u64()?];
        let floor_next_offset = Offset(i64::from_be_bytes(r.array()?));
        let (voters, learners, voters_outgoing, learners_next) = (r.ids()?, r.ids()?, r.ids()?, r.ids()?);
        let auto_leave = match r.take(1)? {
            [0] => false,
            [1] => true,
            _ => return Err(RaftStateError::Invalid("flag")),
        };
        let n = r.count(12)?;
        let entries = (0..n)
            .map(|_| Ok((LeaderEpoch(i32::from_be_bytes(r.array()?)), Offset(i64::from_be_bytes(r.array()?)))))
            .collect::<Result<Vec<_>, RaftStateError>>()?;
        let epochs = EpochHistory::from_entries(entries).ok_or(RaftStateError::Invalid("epoch order"))?;
        if !r.0.is_empty() {
            return Err(RaftStateError::Invalid("trailing bytes"));
        }
        Ok(RaftStateRecord {
            term,
            vote,
            commit,
            floor_index,
            floor_term,
            floor_next_offset,
            voters,
            learners,
            voters_outgoing,
            learners_next,
            auto_leave,
            epochs,
        })
    }
}

fn put_u32(b: &mut Vec<u8>, n: usize) {
    b.extend_from_slice(&u32::try_from(n).expect("a raft state holds few items").to_be_bytes());
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RaftStateError> {
        let (head, rest) = self.0.split_at_checked(n).ok_or(RaftStateError::Truncated)?;
        self.0 = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], RaftStateError> {
        Ok(self.take(N)?.try_into().expect("took N bytes"))
    }
    fn u64(&mut self) -> Result<u64, RaftStateError> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    /// A count of items of `size` bytes each, checked against the bytes left.
    fn count(&mut self, size: usize) -> Result<usize, RaftStateError> {
        let n = usize::try_from(u32::from_be_bytes(self.array()?)).map_err(|_| RaftStateError::Invalid("count"))?;
        if n.checked_mul(size).is_none_or(|bytes| bytes > self.0.len()) {
            return Err(RaftStateError::Truncated);
        }
        Ok(n)
    }
    fn ids(&mut self) -> Result<Vec<u64>, RaftStateError> {
        let n = self.count(8)?;
        (0..n).map(|_| self.u64()).collect()
    }
}

/// Replaces `dir/raft-state` atomically and durably.
pub fn write(dir: &Path, state: &RaftStateRecord) -> std::io::Result<()> {
    let tmp = dir.join(TMP_NAME);
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&state.encode())?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, dir.join(FILE_NAME))?;
    std::fs::File::open(dir)?.sync_all()
}

/// Name of the install record (module docs).
pub const INSTALL_NAME: &str = "raft-state.install";
const INSTALL_TMP_NAME: &str = "raft-state.install.tmp";

/// Writes the install record of `state` atomically and durably (module docs).
pub fn write_install(dir: &Path, state: &RaftStateRecord) -> std::io::Result<()> {
    let tmp = dir.join(INSTALL_TMP_NAME);
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&state.encode())?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, dir.join(INSTALL_NAME))?;
    std::fs::File::open(dir)?.sync_all()
}

/// The install record in `dir`, None when there is none (module docs).
pub fn read_install(dir: &Path) -> std::io::Result<Option<RaftStateRecord>> {
    read_named(dir, INSTALL_NAME)
}

/// Makes the install record the replica's state (module docs).
pub fn commit_install(dir: &Path) -> std::io::Result<()> {
    std::fs::rename(dir.join(INSTALL_NAME), dir.join(FILE_NAME))?;
    std::fs::File::open(dir)?.sync_all()
}

/// The state in `dir`, None when the partition has none yet.
pub fn read(dir: &Path) -> std::io::Result<Option<RaftStateRecord>> {
    read_named(dir, FILE_NAME)
}

fn read_named(dir: &Path, name: &str) -> std::io::Result<Option<RaftStateRecord>> {
    let bytes = match std::fs::read(dir.join(name)) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    RaftStateRecord::decode(&bytes).map(Some).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> RaftStateRecord {
        RaftStateRecord {
            term: 7,
            vote: 2,
            commit: 40,
            floor_index: 30,
            floor_term: 6,
            floor_next_offset: Offset(512),
            voters: vec![1, 2, 3],
            learners: vec![4],
            auto_leave: true,
            epochs: EpochHistory::from_entries(vec![(LeaderEpoch(3), Offset(0)), (LeaderEpoch(6), Offset(300))])
                .expect("ascending"),
            ..Default::default()
        }
    }

    #[test]
    fn an_install_record_replaces_the_state_only_when_committed() {
        let dir = tempfile::tempdir().expect("temp dir");
        write(dir.path(), &sample()).expect("writes");
        let mut new = sample();
        new.floor_index = 90;
        new.floor_next_offset = Offset(4000);
        write_install(dir.path(), &new).expect("writes the install record");
        assert_eq!(read(dir.path()).expect("reads"), Some(sample()), "the state is the old one until committed");
        assert_eq!(read_install(dir.path()).expect("reads"), Some(new.clone()));
        commit_install(dir.path()).expect("commits");
        assert_eq!(read(dir.path()).expect("reads"), Some(new));
        assert_eq!(read_install(dir.path()).expect("reads"), None);
    }

    #[test]
    fn round_trips_and_refuses_damage() {
        let b = sample().encode();
        assert_eq!(RaftStateRecord::decode(&b), Ok(sample()));
        for n in 0..b.len() {
            assert!(RaftStateRecord::decode(&b[..n]).is_err(), "prefix of {n} bytes");
        }
        for i in 0..b.len() {
            let mut bad = b.clone();
            bad[i] ^= 0x40;
            assert!(RaftStateRecord::decode(&bad).is_err(), "flipped byte {i}");
        }
    }

    #[test]
    fn huge_counts_are_refused_before_allocating() {
        let mut b = sample().encode();
        let at = 4 + 1 + 5 * 8 + 8; // the voters count
        b[at..at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
        let body = b.len() - 4;
        let crc = crc32c::crc32c(&b[..body]);
        b[body..].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(RaftStateRecord::decode(&b), Err(RaftStateError::Truncated));
    }

    #[test]
    fn written_state_is_read_back_and_a_leftover_tmp_is_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(read(dir.path()).expect("reads"), None);
        write(dir.path(), &sample()).expect("writes");
        std::fs::write(dir.path().join(TMP_NAME), b"half a write").expect("leftover");
        assert_eq!(read(dir.path()).expect("reads"), Some(sample()));
        let mut newer = sample();
        newer.term = 8;
        write(dir.path(), &newer).expect("replaces");
        assert_eq!(read(dir.path()).expect("reads"), Some(newer));
    }
}
