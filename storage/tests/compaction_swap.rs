//! Crash at every operation of a compaction swap (storage/src/compact/swap.rs) on the
//! simulated disk, with both survival rules, and check that recovery leaves exactly the old
//! segments (log and index files) or exactly the new ones — never a mix, never a leftover
//! `.cleaned` file or swap marker. A merging swap (one new segment replacing two old ones,
//! another replaced alone, one left as it is) is crashed the same way.

use sluice_storage::compact::swap::{recover_swap, swap_in, NewSegment, SwapRecovery};
use sluice_storage::disk::sim::{SimDisk, Survival, Tear};
use sluice_storage::Disk;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

mod common;
use common::run;

const BASES: [i64; 3] = [0, 100, 250];

fn segs(tag: &str) -> Vec<NewSegment> {
    BASES
        .iter()
        .map(|b| NewSegment {
            base: *b,
            log: format!("{tag}-log-{b}").repeat(50).into_bytes(),
            index: format!("{tag}-index-{b}").into_bytes(),
            timeindex: format!("{tag}-time-{b}").into_bytes(),
        })
        .collect()
}

/// The directory's files as the segments `segs` would leave them.
fn expected(segs: &[NewSegment]) -> BTreeMap<String, Vec<u8>> {
    let mut m = BTreeMap::new();
    for s in segs {
        m.insert(format!("{:020}.log", s.base), s.log.clone());
        m.insert(format!("{:020}.index", s.base), s.index.clone());
        m.insert(format!("{:020}.timeindex", s.base), s.timeindex.clone());
    }
    m
}

fn files(sim: &SimDisk, dir: &Path) -> BTreeMap<String, Vec<u8>> {
    sim.list(dir).unwrap().into_iter().map(|n| (n.clone(), sim.read(&dir.join(&n)).unwrap())).collect()
}

/// Crashes `swap_in(new_segs, removed)` on `old` at each of its operations, with both survival
/// rules, and checks that recovery leaves `old` or `new`, durably.
async fn crash_everywhere(
    old: &BTreeMap<String, Vec<u8>>,
    new_segs: &[NewSegment],
    removed: &[i64],
    new: &BTreeMap<String, Vec<u8>>,
) {
    let dir = PathBuf::from("/sim/t-0");
    let setup = || {
        let sim = SimDisk::new();
        sim.create_dir_all(&dir).unwrap();
        for (name, bytes) in old {
            sim.write_file(&dir.join(name), bytes, true).unwrap();
        }
        sim
    };
    // A run without a crash, to count its operations.
    let sim = setup();
    let start = sim.ops();
    swap_in(&Disk::Sim(sim.clone()), &dir, new_segs, removed).await.unwrap();
    assert_eq!(&files(&sim, &dir), new, "a finished swap leaves the new segments only");
    let total = sim.ops() - start;
    assert!(total >= 12, "writes, renames, syncs: {total} operations");
    let (mut saw_old, mut saw_new) = (0, 0);
    for k in 0..total {
        for survival in [Survival::SyncedOnly, Survival::Everything] {
            let sim = setup();
            sim.crash_at(sim.ops() + k, Tear::None);
            let r = swap_in(&Disk::Sim(sim.clone()), &dir, new_segs, removed).await;
            assert!(r.is_err(), "crash at operation {k} must fail the swap");
            let after = sim.after_crash(survival);
            let disk = Disk::Sim(after.clone());
            let rec = recover_swap(&disk, &dir).await.unwrap();
            let got = files(&after, &dir);
            let what = format!("crash at operation {k}/{total}, {survival:?}, recovery {rec:?}");
            if &got == old {
                saw_old += 1;
                assert!(!matches!(rec, SwapRecovery::Completed(_)), "{what}");
            } else {
                assert_eq!(&got, new, "{what}: neither all old nor all new");
                saw_new += 1;
            }
            assert_eq!(recover_swap(&disk, &dir).await.unwrap(), SwapRecovery::Nothing, "{what}: second recovery");
            // What recovery left is durable: a crash right after it changes nothing.
            assert_eq!(files(&after.after_crash(Survival::SyncedOnly), &dir), got, "{what}: not durable");
        }
    }
    assert!(saw_old > 0 && saw_new > 0, "both outcomes occur: {saw_old} old, {saw_new} new");
}

#[test]
fn a_crash_anywhere_in_a_swap_leaves_all_old_or_all_new_segments() {
    run(|| async {
        crash_everywhere(&expected(&segs("old")), &segs("new"), &[], &expected(&segs("new"))).await;
    });
}

#[test]
fn a_crash_anywhere_in_a_merging_swap_leaves_all_old_or_all_new_segments() {
    run(|| async {
        let mut old_segs = segs("old");
        old_segs.push(NewSegment {
            base: 400,
            log: b"old-log-400".repeat(50),
            index: b"old-index-400".to_vec(),
            timeindex: b"old-time-400".to_vec(),
        });
        // 0 and 100 merge into a new 0; 250 is replaced alone; 400 stays as it is.
        let new_segs: Vec<NewSegment> = segs("new").into_iter().filter(|s| s.base != 100).collect();
        let mut new = expected(&new_segs);
        new.extend(expected(&old_segs[3..]));
        crash_everywhere(&expected(&old_segs), &new_segs, &[100], &new).await;
    });
}
