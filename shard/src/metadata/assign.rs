//! Replica assignment: which brokers hold each new partition, the preferred leader first.
//!
//! Contract: Kafka's rack-unaware assignor (`AdminUtils.assignReplicasToBrokersRackUnaware`,
//! the classic one `kafka-topics` documents): with brokers `b` sorted by id, partition `p`'s
//! first replica is `b[(start + p) % n]`, and its other replicas follow at a distance that
//! shifts by one every `n` partitions, so leaders and followers both spread evenly and no two
//! partitions in a row share the same follower pattern. `start` and the first shift come from
//! the caller (Kafka draws them at random; the controller derives them from the topic
//! number, so consecutive topics start on different brokers). Partitions added later continue
//! the pattern from the topic's current count, as Kafka does. Pure function: the assignment
//! is decided once by the controller and carried in the metadata log.

/// Why no assignment exists.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssignError {
    /// Kafka's INVALID_REPLICATION_FACTOR message.
    #[error(
        "Unable to replicate the partition {rf} time(s): The target replication factor of {rf} cannot be reached because only {brokers} broker(s) are registered."
    )]
    NotEnoughBrokers { rf: usize, brokers: usize },
    #[error("Replication factor must be larger than 0.")]
    ZeroReplicationFactor,
}

/// Replicas of partitions `first..first + count` over `brokers` (node ids, any order,
/// distinct), `rf` each, the pattern seeded by `seed`.
pub fn assign(brokers: &[i32], rf: usize, first: usize, count: usize, seed: u32) -> Result<Vec<Vec<i32>>, AssignError> {
    if rf == 0 {
        return Err(AssignError::ZeroReplicationFactor);
    }
    if rf > brokers.len() {
        return Err(AssignError::NotEnoughBrokers { rf, brokers: brokers.len() });
    }
    let mut b = brokers.to_vec();
    b.sort_unstable();
    b.dedup();
    assert_eq!(b.len(), brokers.len(), "brokers are distinct");
    let n = b.len();
    let seed = usize::try_from(seed).expect("u32 fits usize");
    let start = seed % n;
    let mut shift = (seed / n) % n;
    // Kafka: the shift advances once per full round of brokers, counted from partition 0.
    shift += first / n;
    Ok((first..first + count)
        .map(|p| {
            if p > first && p % n == 0 {
                shift += 1;
            }
            let lead = (p + start) % n;
            let mut replicas = Vec::with_capacity(rf);
            replicas.push(b[lead]);
            for j in 0..rf - 1 {
                replicas.push(b[follower(lead, shift, j, n)]);
            }
            replicas
        })
        .collect())
}

/// Kafka's `replicaIndex`: the `j`-th follower of a partition led by broker index `lead`.
fn follower(lead: usize, shift: usize, j: usize, n: usize) -> usize {
    let distance = 1 + (shift + j) % (n - 1);
    (lead + distance) % n
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn kafkas_example_layout() {
        // Kafka's documented example: 5 brokers, 10 partitions, RF 3, start 0, shift 0.
        let a = assign(&[0, 1, 2, 3, 4], 3, 0, 10, 0).unwrap();
        assert_eq!(
            a,
            vec![
                vec![0, 1, 2],
                vec![1, 2, 3],
                vec![2, 3, 4],
                vec![3, 4, 0],
                vec![4, 0, 1],
                vec![0, 2, 3],
                vec![1, 3, 4],
                vec![2, 4, 0],
                vec![3, 0, 1],
                vec![4, 1, 2],
            ]
        );
    }

    #[test]
    fn too_few_brokers_is_kafkas_error() {
        let e = assign(&[1], 3, 0, 1, 0).unwrap_err();
        assert_eq!(e, AssignError::NotEnoughBrokers { rf: 3, brokers: 1 });
        assert!(e.to_string().contains("only 1 broker(s) are registered"));
        assert_eq!(assign(&[1], 0, 0, 1, 0), Err(AssignError::ZeroReplicationFactor));
    }

    #[test]
    fn a_lone_broker_holds_everything() {
        assert_eq!(assign(&[0], 1, 0, 3, 7).unwrap(), vec![vec![0], vec![0], vec![0]]);
    }

    proptest! {
        #[test]
        fn replicas_are_distinct_and_leaders_even(n in 1usize..7, rf_pick in 0usize..7, parts in 1usize..60, seed in any::<u32>()) {
            let rf = 1 + rf_pick % n;
            let brokers: Vec<i32> = (0..n).map(|i| i32::try_from(i).unwrap() * 10 + 1).collect();
            let a = assign(&brokers, rf, 0, parts, seed).unwrap();
            let mut leaders = vec![0usize; n];
            for r in &a {
                prop_assert_eq!(r.len(), rf);
                let mut d = r.clone();
                d.sort_unstable();
                d.dedup();
                prop_assert_eq!(d.len(), rf);
                leaders[brokers.iter().position(|b| *b == r[0]).unwrap()] += 1;
            }
            let (lo, hi) = (leaders.iter().min().unwrap(), leaders.iter().max().unwrap());
            prop_assert!(hi - lo <= 1, "leaders {:?}", leaders);
        }
    }
}
