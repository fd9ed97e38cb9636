//! A write that fails (a transiently full disk, on the simulated disk) rolls the log back to
//! its durable end, and the offsets rolled back are given out again. An acknowledgement must
//! then never be given for a rolled-back append — also when its wait only starts after the
//! rollback (a produce whose ack future is first polled later, e.g. on another shard's reply
//! task) and a later append at the same offsets has become durable. A write that puts only
//! part of its bytes on the disk (and says so) is a failed write too.

use sluice_core::batch::{self, Record};
use sluice_core::Offset;
use sluice_storage::disk::sim::SimDisk;
use sluice_storage::{Disk, LogConfig, PartitionLog};
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

mod common;
use common::run;

fn batch_with(value: &[u8]) -> Vec<u8> {
    batch::build(&[Record { key: None, value }], 1_700_000_000_000)
}

/// A log on a fresh simulated disk holding one durable batch (offset 0).
async fn log_with_one_durable_batch() -> (Rc<SimDisk>, Rc<PartitionLog>) {
    let sim = SimDisk::new();
    let disk = Disk::Sim(sim.clone());
    let (log, _) =
        PartitionLog::open_on(&disk, Path::new("/sim/t-0"), "t-0", LogConfig::default(), false).await.unwrap();
    let a = batch_with(b"a");
    let info = log.append(&a, &batch::validate(&a).unwrap(), None).unwrap();
    log.wait_durable(&info).await.unwrap();
    (sim, log)
}

#[test]
fn a_wait_started_after_the_rollback_of_its_append_fails() {
    run(|| async {
        let (sim, log) = log_with_one_durable_batch().await;

        // The next disk operation (the flusher's write of `b`) fails.
        sim.fail_once(sim.ops());
        let b = batch_with(b"b, rolled back");
        let info_b = log.append(&b, &batch::validate(&b).unwrap(), None).unwrap();
        for _ in 0..100 {
            if log.log_end() == Offset(1) {
                break;
            }
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(log.log_end(), Offset(1), "the failed write did not roll the log back");
        assert_eq!(log.high_watermark(), Offset(1));

        // `c` gets `b`'s offset and becomes durable.
        let c = batch_with(b"c, durable");
        let info_c = log.append(&c, &batch::validate(&c).unwrap(), None).unwrap();
        assert_eq!(info_c.base_offset, info_b.base_offset, "rolled-back offsets are given out again");
        log.wait_durable(&info_c).await.unwrap();

        // Waiting for `b` now must fail, although the offset it got is durable.
        assert!(log.wait_durable(&info_b).await.is_err(), "a rolled-back append was acknowledged (acks=all)");
        assert!(log.wait_written(&info_b).await.is_err(), "a rolled-back append was acknowledged (acks=1)");

        let read = log.read(info_b.base_offset, 1 << 20).await.unwrap();
        let mut stored = c.clone();
        batch::stamp(&mut stored, info_c.base_offset.0, 0);
        assert_eq!(&read.records[..], &stored[..], "offset 1 holds `c`");
        log.close().await.unwrap();
    });
}

#[test]
fn a_short_write_is_a_failed_write() {
    run(|| async {
        let (sim, log) = log_with_one_durable_batch().await;

        // `b` spans three pages; its write puts only the first on the disk.
        sim.short_once(sim.ops(), 4096);
        let big = vec![7u8; 10_000];
        let b = batch_with(&big);
        let info_b = log.append(&b, &batch::validate(&b).unwrap(), None).unwrap();
        assert!(log.wait_durable(&info_b).await.is_err(), "a batch only partly written was acknowledged");
        assert_eq!(log.high_watermark(), Offset(1));
        assert_eq!(log.log_end(), Offset(1), "the short write did not roll the log back");

        // The retry is written whole and reads back byte-exact.
        let info_b2 = log.append(&b, &batch::validate(&b).unwrap(), None).unwrap();
        assert_eq!(info_b2.base_offset, Offset(1));
        log.wait_durable(&info_b2).await.unwrap();
        let read = log.read(Offset(1), 1 << 20).await.unwrap();
        let mut stored = b.clone();
        batch::stamp(&mut stored, 1, 0);
        assert_eq!(&read.records[..], &stored[..]);
        log.close().await.unwrap();
    });
}
