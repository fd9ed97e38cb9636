//! The write pipeline's promise, on the simulated disk with its fdatasyncs held: a batch
//! appended while a sync is in flight is written (acks=1 answered) without waiting for that
//! sync; nothing becomes visible or durable (acks=all) before a sync covering it returns; and
//! a round covers several partitions, whose high watermarks all move once the syncs return;
//! and a log whose own sync returned is durable without waiting for another log's sync of the
//! same round.

use sluice_core::batch::{self, Record};
use sluice_core::Offset;
use sluice_storage::disk::sim::SimDisk;
use sluice_storage::{AppendInfo, Disk, LogConfig, PartitionLog};
use std::future::Future;
use std::path::Path;
use std::time::Duration;

mod common;
use common::run;

fn append(log: &PartitionLog, tag: u8) -> AppendInfo {
    let value = vec![tag; 3000];
    let b = batch::build(&[Record { key: None, value: &value }], 1_700_000_000_000);
    let h = batch::validate(&b).unwrap();
    log.append(&b, &h, None).unwrap()
}

/// `f`'s output, or None when it did not complete within `ms`.
async fn within<T>(ms: u64, f: impl Future<Output = T>) -> Option<T> {
    let sleep = glommio::timer::sleep(Duration::from_millis(ms));
    match futures::future::select(Box::pin(f), Box::pin(sleep)).await {
        futures::future::Either::Left((v, _)) => Some(v),
        futures::future::Either::Right(_) => None,
    }
}

#[test]
fn writes_go_on_while_a_sync_is_in_flight_and_one_round_covers_every_partition() {
    run(|| async {
        let sim = SimDisk::new();
        let disk = Disk::Sim(sim.clone());
        let mut logs = Vec::new();
        for p in 0..3 {
            let dir = format!("/sim/p-{p}");
            logs.push(PartitionLog::open_on(&disk, Path::new(&dir), "p", LogConfig::default(), false).await.unwrap().0);
        }
        sim.hold_syncs(true);
        let first = append(&logs[0], 1);
        logs[0].wait_written(&first).await.unwrap();
        // Let the shard's round start and block in its held fdatasync.
        glommio::timer::sleep(Duration::from_millis(20)).await;
        assert_eq!(logs[0].high_watermark(), Offset(0), "visible before any sync returned");
        let before = sluice_storage::stats::snapshot();
        // Appended while that sync is in flight: written without waiting for it. Appended in
        // one tick: the writes of the logs without a sync in flight join one round.
        let later: Vec<AppendInfo> =
            logs.iter().enumerate().map(|(p, log)| append(log, 2 + u8::try_from(p).unwrap())).collect();
        for (p, (log, info)) in logs.iter().zip(&later).enumerate() {
            let written = within(5_000, log.wait_written(info)).await;
            assert!(written.is_some(), "partition {p}: the write waited behind the sync in flight");
            written.unwrap().unwrap();
        }
        for log in &logs {
            assert_eq!(log.high_watermark(), Offset(0), "a high watermark moved while every sync is held");
        }
        let durable = within(200, logs[0].wait_durable(&first)).await;
        assert!(durable.is_none(), "acks=all answered while its sync is held");
        sim.hold_syncs(false);
        for (log, info) in logs.iter().zip(&later) {
            within(5_000, log.wait_durable(info)).await.expect("durable once syncs are released").unwrap();
            assert_eq!(log.high_watermark(), Offset(info.last_offset.0 + 1));
        }
        let after = sluice_storage::stats::snapshot();
        assert!(after.syncs - before.syncs >= 3, "the partitions' syncs did not run");
        assert!(
            after.sync_rounds - before.sync_rounds < after.syncs - before.syncs,
            "no round covered several partitions"
        );
        for log in &logs {
            log.close().await.unwrap();
        }
    });
}

#[test]
fn a_log_is_durable_when_its_own_sync_returns_not_the_slowest_of_its_round() {
    run(|| async {
        // Two disks: the fast log's syncs return at once, the slow log's are held.
        let (slow_sim, fast_sim) = (SimDisk::new(), SimDisk::new());
        let slow = PartitionLog::open_on(
            &Disk::Sim(slow_sim.clone()),
            Path::new("/sim/slow"),
            "slow",
            LogConfig::default(),
            false,
        )
        .await
        .unwrap()
        .0;
        let fast =
            PartitionLog::open_on(&Disk::Sim(fast_sim), Path::new("/sim/fast"), "fast", LogConfig::default(), false)
                .await
                .unwrap()
                .0;
        slow_sim.hold_syncs(true);
        let before = sluice_storage::stats::snapshot();
        // Appended in the same tick: both writes complete and join the same round.
        let (s, f) = (append(&slow, 1), append(&fast, 2));
        let durable = within(5_000, fast.wait_durable(&f)).await;
        assert!(durable.is_some(), "the fast log waited for the slow log's sync");
        durable.unwrap().unwrap();
        assert_eq!(fast.high_watermark(), Offset(f.last_offset.0 + 1));
        // A round is counted when all its syncs returned: the fast log's round is still held.
        assert_eq!(sluice_storage::stats::snapshot().sync_rounds, before.sync_rounds, "the fast log's round ended");
        assert_eq!(slow.high_watermark(), Offset(0), "visible before its sync returned");
        assert!(within(100, slow.wait_durable(&s)).await.is_none(), "acks=all answered while its sync is held");
        slow_sim.hold_syncs(false);
        within(5_000, slow.wait_durable(&s)).await.expect("durable once its sync is released").unwrap();
        let after = sluice_storage::stats::snapshot();
        assert!(after.syncs - before.syncs >= 2, "both logs' syncs were issued");
        slow.close().await.unwrap();
        fast.close().await.unwrap();
    });
}
