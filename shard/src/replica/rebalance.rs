//! Automatic preferred-leader rebalance (Kafka's `auto.leader.rebalance.enable`).
//!
//! Contract: on shard 0 of every broker with a replication runtime and
//! `auto_leader_rebalance_enable`, every `leader_imbalance_check_interval_seconds` the broker
//! looks at the partitions whose preferred (first) replica it is, in its metadata snapshot.
//! Its imbalance is the share of them led by another broker (Kafka's
//! `KafkaController.checkAndTriggerAutoLeaderRebalance`: not-led / preferred); when that share
//! exceeds `leader_imbalance_per_broker_percentage` percent, it asks, for each of them where it
//! is in the ISR, its own replica for a Raft leadership transfer to itself ([`super::elect`]:
//! raft-rs forwards it to the leader, which brings this replica up to date and lets it
//! campaign at once). The new leader records itself in the metadata log as any leader does.
//! Each broker judges only itself, so no controller has to reach a replica it does not hold,
//! and the check costs one pass over the snapshot per interval.

use super::Replicas;
use crate::metadata::MetadataSnapshot;
use crate::shard::Shard;
use sluice_core::{PartitionId, TopicPartition};
use std::rc::Rc;
use std::time::Duration;

/// The partitions whose leadership `me` should take back (module docs): none while its
/// imbalance is at most `percentage` percent.
pub fn to_take_back(meta: &MetadataSnapshot, me: i32, percentage: u32) -> Vec<TopicPartition> {
    let mut preferred = 0u64;
    let mut elsewhere = Vec::new();
    for (topic, rep) in &meta.replication {
        for (p, state) in rep.partitions.iter().enumerate() {
            if state.replicas.len() < 2 || state.replicas.first() != Some(&me) {
                continue;
            }
            preferred += 1;
            if state.leader != me {
                let Ok(p) = i32::try_from(p) else { continue };
                elsewhere.push((
                    TopicPartition { topic: topic.clone(), partition: PartitionId(p) },
                    state.isr.contains(&me),
                ));
            }
        }
    }
    let led_elsewhere = u64::try_from(elsewhere.len()).expect("a count fits");
    // Kafka: imbalance ratio = not led / preferred, rebalance when ratio > percentage / 100.
    if preferred == 0 || led_elsewhere * 100 <= u64::from(percentage) * preferred {
        return Vec::new();
    }
    elsewhere.into_iter().filter(|(_, in_sync)| *in_sync).map(|(tp, _)| tp).collect()
}

/// Starts the periodic check on shard 0 when the config enables it (module docs).
pub fn start(shard: &Rc<Shard>, r: &Rc<Replicas>) {
    if shard.id.index() != 0 || !shard.config.auto_leader_rebalance_enable {
        return;
    }
    let every = Duration::from_secs(shard.config.leader_imbalance_check_interval_seconds);
    let percentage = shard.config.leader_imbalance_per_broker_percentage;
    let (shard, me) = (shard.clone(), r.node().0);
    glommio::spawn_local(async move {
        while !shard.is_stopping() {
            glommio::timer::sleep(every).await;
            let back = to_take_back(&shard.metadata(), me, percentage);
            if back.is_empty() {
                continue;
            }
            tracing::info!(partitions = back.len(), "leader imbalance above the threshold: taking leadership back");
            let asked = back.into_iter().enumerate().map(|(i, tp)| (i, tp, me)).collect();
            for (_, started) in super::elect::transfer(&shard, asked).await {
                if let Err(e) = started {
                    tracing::debug!(error = %e, "leadership transfer not started");
                }
            }
        }
    })
    .detach();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::{PartitionState, TopicReplication};

    fn state(replicas: &[i32], leader: i32, isr: &[i32]) -> PartitionState {
        PartitionState {
            replicas: replicas.to_vec(),
            leader,
            leader_epoch: 1,
            isr: isr.to_vec(),
            adding: Vec::new(),
            removing: Vec::new(),
            origin: Vec::new(),
        }
    }

    fn snapshot(parts: Vec<PartitionState>) -> MetadataSnapshot {
        let mut m = MetadataSnapshot::default();
        m.replication.insert("t".into(), TopicReplication { number: 1, partitions: parts });
        m
    }

    fn names(v: Vec<TopicPartition>) -> Vec<i32> {
        v.into_iter().map(|tp| tp.partition.0).collect()
    }

    #[test]
    fn takes_back_only_above_the_threshold_and_only_in_sync_partitions() {
        let all = [0, 1, 2];
        // Broker 0 is preferred for partitions 0, 1 and 3; it leads 0; 1 and 3 are led by 1.
        let m = snapshot(vec![
            state(&[0, 1, 2], 0, &all),
            state(&[0, 1, 2], 1, &all),
            state(&[1, 2, 0], 1, &all),
            state(&[0, 2, 1], 1, &[1, 2]),
        ]);
        // 2 of 3 led elsewhere (66 %): above 10 %, but partition 3 is not in sync yet.
        assert_eq!(names(to_take_back(&m, 0, 10)), vec![1]);
        assert_eq!(names(to_take_back(&m, 0, 66)), vec![1], "66.7 % > 66 %");
        assert!(to_take_back(&m, 0, 67).is_empty(), "at most the threshold: balanced enough");
        // Broker 1 leads what it prefers; broker 2 prefers nothing.
        assert!(to_take_back(&m, 1, 0).is_empty());
        assert!(to_take_back(&m, 2, 0).is_empty());
    }

    #[test]
    fn single_replica_partitions_do_not_count() {
        let m = snapshot(vec![state(&[0], 0, &[0]), state(&[0, 1], 1, &[0, 1])]);
        assert_eq!(names(to_take_back(&m, 0, 10)), vec![1], "1 of 1 replicated partition led elsewhere");
    }
}
