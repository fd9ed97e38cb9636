//! Log compaction for topics whose `cleanup.policy` contains `compact`: the decisions and the
//! rewriting of segment bytes, without I/O (the log feeds it sealed segments and swaps the
//! results in).
//!
//! Contract (Kafka's log cleaner semantics):
//! - [`plan`] decides when a log is cleaned and the offsets a pass covers; the active segment
//!   is never cleaned.
//! - [`keymap::KeyMap`] holds, for the dirty range, each key's last offset.
//! - [`clean::clean_segment`] rewrites one segment as Kafka 4's cleaner does: a record is kept
//!   when the key map does not know its key or knows this very offset (or a later one than the
//!   map covers); keyless records are dropped; the records of aborted transactions are dropped
//!   ([`txn::CleanedTxns`]); a tombstone (null value) that is the latest of its key is kept
//!   until its batch's delete horizon (KIP-534: the first pass that keeps a tombstone, or finds
//!   a transaction marker whose transaction has no batch left, stamps the batch with the
//!   delete-horizon attribute bit and base timestamp = now + `delete.retention.ms`, record
//!   timestamps unchanged), and goes at the first pass after it; such a marker goes likewise.
//!   Offsets never change: a rewritten batch keeps its base offset, last offset delta,
//!   partition leader epoch, producer id, epoch and base sequence, so offsets have gaps after
//!   compaction; its codec is kept (decompressed, filtered, recompressed) and its CRC
//!   recomputed. A batch left with no record goes, unless it holds an active producer's last
//!   entry or ends at the pass's upper bound: then it stays empty (Kafka's `RETAIN_EMPTY`,
//!   so the producer's last sequence and epoch survive).
//! - [`merge`] groups adjacent cleaned segments whose summed sizes stay within `segment.bytes`
//!   and `segment.index.bytes` (Kafka's `groupSegmentsBySize`); a group is rewritten as one
//!   segment at its first base.
//! - [`swap::swap_in`] replaces a pass's segments crash-safely (`.cleaned` files, a swap marker
//!   as the commit point, renames, then the merged-away segments' files removed), and
//!   [`swap::recover_swap`] finishes or discards a swap interrupted by a crash.

pub mod clean;
pub mod keymap;
pub mod merge;
pub mod plan;
pub mod swap;
pub mod txn;

pub use plan::{plan, CleanPlan, CompactionConfig, SegmentInfo};

use crate::codec::CodecError;
use sluice_core::batch::{validate, BatchError, BatchHeader, LOG_OVERHEAD};
use sluice_core::limits::{
    COMPACTION_IDLE_SLICE_MICROS, COMPACTION_IO_PAUSE_MICROS, COMPACTION_IO_SLICE_MICROS, COMPACTION_PAUSE_MICROS,
    COMPACTION_SLICE_MICROS,
};
use std::time::{Duration, Instant};

/// Keeps a pass from holding the shard's thread for long: [`Pace::tick`], called between
/// units of work (a batch, a chunk read), ends a slice with a sleep of
/// `COMPACTION_PAUSE_MICROS`. The sleep leaves the task pending, so the executor runs its
/// other tasks and polls its rings (new requests, completed writes and syncs) before the pass
/// goes on; without it a pass could hold the thread until glommio's preemption timer
/// (100 ms) made `yield_if_needed` yield.
///
/// A slice also ends early when a network receive of the shard completed (a request is
/// waiting: [`request_arrived`]). While the shard has request-path work pending
/// ([`crate::inflight::pending`]: a write, a sync or a forwarded produce in flight, or a recent
/// append), whose wake-ups the executor sees only when the pass pauses, a slice is at most
/// `COMPACTION_IO_SLICE_MICROS` and the pause after it `COMPACTION_IO_PAUSE_MICROS`.
///
/// The slice adapts: `COMPACTION_SLICE_MICROS` while the shard has other work, doubled at
/// every pause during which no other task ran, up to `COMPACTION_IDLE_SLICE_MICROS` (each
/// pause parks the thread on a timer, which costs an idle shard's pass throughput). Whether
/// another task ran is read from the executor's counters
/// (`glommio::executor().executor_stats()`, which resets them: nothing else in sluice reads
/// them).
#[derive(Debug)]
pub struct Pace {
    since: Instant,
    slice: Duration,
}

impl Default for Pace {
    fn default() -> Pace {
        Pace::new()
    }
}

impl Pace {
    pub fn new() -> Pace {
        Pace { since: Instant::now(), slice: Duration::from_micros(COMPACTION_SLICE_MICROS) }
    }

    /// Sleeps when the current slice is used up, or at once when a request has arrived on
    /// one of the shard's sockets ([`request_arrived`]); else returns at once.
    pub async fn tick(&mut self) {
        // Read once: it sets both this slice's length and the pause that ends it.
        let busy = crate::inflight::pending();
        if self.since.elapsed() < self.current(busy) && !request_arrived() {
            return;
        }
        tasks_executed(); // resets the count
        glommio::timer::sleep(pause(busy)).await;
        self.slice = next_slice(self.slice, tasks_executed());
        self.since = Instant::now();
    }

    /// The slice in force now: at most `COMPACTION_IO_SLICE_MICROS` while the shard has
    /// request-path work pending (`busy`, [`crate::inflight::pending`]), whose wake-ups the
    /// executor sees only when the pass pauses.
    fn current(&self, busy: bool) -> Duration {
        if busy {
            self.slice.min(Duration::from_micros(COMPACTION_IO_SLICE_MICROS))
        } else {
            self.slice
        }
    }

    /// The current slice (tests).
    pub fn slice(&self) -> Duration {
        self.slice
    }

    /// A pace whose first slice is `slice` (tests).
    pub fn with_slice(slice: Duration) -> Pace {
        Pace { since: Instant::now(), slice }
    }
}

/// Whether glommio's latency ring holds a completion: it carries every network receive and
/// accept of the shard (glommio 0.9 `ring_for_source`), so a request that reached this shard
/// during a slice ends the slice there and then instead of waiting up to
/// `COMPACTION_IDLE_SLICE_MICROS` (issue #23). Two loads (`need_preempt`), cheap enough per
/// batch. Not seen this way: wake-ups from other shards (glommio writes their eventfd only to
/// a parked executor) and completed writes and syncs; those wait for the slice's end.
fn request_arrived() -> bool {
    glommio::executor().need_preempt()
}

/// How long a pause lasts: `COMPACTION_IO_PAUSE_MICROS` while the shard has request-path work
/// pending (`busy`: the thread parks that long, which leaves the core to the other threads of
/// the host, clients included, at least half the time), else `COMPACTION_PAUSE_MICROS`.
fn pause(busy: bool) -> Duration {
    if busy {
        Duration::from_micros(COMPACTION_IO_PAUSE_MICROS)
    } else {
        Duration::from_micros(COMPACTION_PAUSE_MICROS)
    }
}

/// Tasks the executor ran since its counters were last read (they are reset).
fn tasks_executed() -> u64 {
    glommio::executor().executor_stats().tasks_executed()
}

/// The slice after a pause during which the executor ran `ran` tasks: the count read at the
/// pause's end holds the pass's own run that began the pause (the executor adds a queue's runs
/// when the queue stops running, after the pass read the count), not the wake-up reading it.
/// Doubled, up to `COMPACTION_IDLE_SLICE_MICROS`, when the pass was alone; back to
/// `COMPACTION_SLICE_MICROS` when another task ran.
pub fn next_slice(slice: Duration, ran: u64) -> Duration {
    if ran <= 1 {
        (slice * 2).min(Duration::from_micros(COMPACTION_IDLE_SLICE_MICROS))
    } else {
        Duration::from_micros(COMPACTION_SLICE_MICROS)
    }
}

/// Why a segment could not be compacted (it is then left as it is).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CompactError {
    #[error("batch at byte {pos}: {err}")]
    Batch { pos: usize, err: BatchError },
    #[error("records: {0}")]
    Records(#[from] BatchError),
    #[error("codec: {0}")]
    Codec(#[from] CodecError),
    #[error("batch at byte {0} would exceed the format's size limits when rebuilt")]
    TooLarge(usize),
}

/// The batches of a segment's bytes, each CRC-checked, up to the end or the zero padding of
/// its last aligned write.
pub fn batches(segment: &[u8]) -> Result<Vec<(BatchHeader, &[u8])>, CompactError> {
    Batches::new(segment).collect()
}

/// [`batches`] one batch at a time (each CRC-checked when it is reached), so a caller can
/// yield between batches; after an error it yields nothing more.
#[derive(Debug)]
pub struct Batches<'a> {
    segment: &'a [u8],
    pos: usize,
    done: bool,
    /// Check each batch's CRC (off for bytes this pass already checked, held in memory).
    crc: bool,
}

impl<'a> Batches<'a> {
    pub fn new(segment: &'a [u8]) -> Batches<'a> {
        Batches { segment, pos: 0, done: false, crc: true }
    }

    /// [`Batches::new`] over bytes whose batches a [`Batches::new`] of this pass already
    /// CRC-checked (the same bytes, kept in memory since): every other check is made again.
    pub fn checked_before(segment: &'a [u8]) -> Batches<'a> {
        Batches { segment, pos: 0, done: false, crc: false }
    }

    /// The position of the next batch (the bytes consumed so far).
    pub fn pos(&self) -> usize {
        self.pos
    }
}

impl<'a> Iterator for Batches<'a> {
    type Item = Result<(BatchHeader, &'a [u8]), CompactError>;

    fn next(&mut self) -> Option<Self::Item> {
        let pos = self.pos;
        if self.done || pos + LOG_OVERHEAD > self.segment.len() {
            return None;
        }
        let rest = &self.segment[pos..];
        let len = i32::from_be_bytes(rest[8..12].try_into().expect("4 bytes"));
        if len == 0 && rest[..LOG_OVERHEAD].iter().all(|b| *b == 0) {
            self.done = true;
            return None; // zero padding
        }
        let total = usize::try_from(len).ok().and_then(|l| l.checked_add(LOG_OVERHEAD)).filter(|t| *t <= rest.len());
        let Some(total) = total else {
            self.done = true;
            return Some(Err(CompactError::Batch {
                pos,
                err: BatchError::Truncated { have: rest.len(), need: LOG_OVERHEAD },
            }));
        };
        let checked = if self.crc { validate(&rest[..total]) } else { BatchHeader::parse(&rest[..total]) };
        match checked {
            Ok(h) => {
                self.pos += total;
                Some(Ok((h, &rest[..total])))
            }
            Err(err) => {
                self.done = true;
                Some(Err(CompactError::Batch { pos, err }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slice_ends_at_the_first_tick_after_a_request_reaches_the_shard() {
        use futures::AsyncReadExt;
        use std::io::Write;
        glommio::LocalExecutorBuilder::default()
            .spawn(|| async {
                let listener = glommio::net::TcpListener::bind("127.0.0.1:0").unwrap();
                let addr = listener.local_addr().unwrap();
                let (go, wait) = std::sync::mpsc::channel::<()>();
                let client = std::thread::spawn(move || {
                    let mut s = std::net::TcpStream::connect(addr).unwrap();
                    wait.recv().unwrap();
                    s.write_all(b"request").unwrap();
                    wait.recv().ok(); // held open until the test ends
                });
                let mut stream = listener.accept().await.unwrap();
                let got = std::rc::Rc::new(std::cell::Cell::new(false));
                let seen = got.clone();
                glommio::spawn_local(async move {
                    let mut buf = [0u8; 16];
                    let n = stream.read(&mut buf).await.unwrap();
                    seen.set(n > 0);
                })
                .detach();
                glommio::timer::sleep(Duration::from_millis(5)).await; // the receive is armed
                go.send(()).unwrap();
                // A slice far longer than the test: only an arrived request can end it. The
                // loop stands for a pass's CPU work between ticks (no await that is pending).
                let mut pace = Pace::with_slice(Duration::from_secs(3600));
                let deadline = Instant::now() + Duration::from_secs(10);
                while !got.get() {
                    assert!(Instant::now() < deadline, "the request did not end the slice");
                    std::hint::spin_loop();
                    pace.tick().await;
                }
                drop(go);
                client.join().unwrap();
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn a_slice_is_short_while_a_write_or_sync_of_the_shard_is_in_flight() {
        glommio::LocalExecutorBuilder::default()
            .spawn(|| async {
                let ran = std::rc::Rc::new(std::cell::Cell::new(false));
                let seen = ran.clone();
                // Stands for the task a completed write wakes: it runs only when the pass pauses.
                glommio::spawn_local(async move { seen.set(true) }).detach();
                let io = crate::inflight::Guard::start();
                let mut pace = Pace::with_slice(Duration::from_secs(3600));
                let deadline = Instant::now() + Duration::from_secs(10);
                while !ran.get() {
                    assert!(Instant::now() < deadline, "the in-flight write did not shorten the slice");
                    std::hint::spin_loop();
                    pace.tick().await;
                }
                drop(io);
                assert!(!crate::inflight::pending());
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn the_slice_grows_while_the_pass_is_alone_and_drops_back_when_not() {
        let busy = Duration::from_micros(COMPACTION_SLICE_MICROS);
        let idle = Duration::from_micros(COMPACTION_IDLE_SLICE_MICROS);
        assert_eq!(next_slice(busy, 1), busy * 2, "only the pass's own run: doubled");
        assert_eq!(next_slice(busy, 0), busy * 2);
        let mut s = busy;
        for _ in 0..64 {
            s = next_slice(s, 1);
            assert!(s <= idle);
        }
        assert_eq!(s, idle, "capped");
        assert_eq!(next_slice(s, 2), busy, "another task ran: back to the short slice");
        assert_eq!(next_slice(busy, 50), busy);
    }
}
