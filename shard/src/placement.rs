//! Placement of partitions onto shards.
//!
//! Contract: placement is decided once, by the metadata writer, and recorded in metadata;
//! every shard reads the owner from there and never recomputes it. Each new partition goes to
//! the shard with the lowest score, one partition at a time (ties: fewer partitions, then the
//! lowest id), where
//!
//! ```text
//! score(s) = partitions(s) / P  +  rate(s) / R
//! ```
//!
//! `partitions(s)` counts what `s` owns plus what this call already gave it, `P` is the
//! broker's partition count after the call, `rate(s)` is the bytes `s` appended per second
//! over the last `PLACEMENT_LOAD_WINDOW_SECS` seconds and `R` the sum over shards. So a shard
//! carrying more than its share of recent appends receives fewer new partitions, until its
//! share of partitions is lower by as much as its share of traffic is higher. When `R` is
//! below `PLACEMENT_MIN_LOAD_BYTES_PER_SEC` (an idle broker, or no rates known) the load term
//! is dropped and counts stay even. The rates are gathered from every shard over the mesh
//! when a change needs placement ([`recent_load`]), so the outcome is a pure function of the
//! counts and rates it was given.

use crate::metrics::gather;
use crate::shard::Shard;
use sluice_core::limits::PLACEMENT_MIN_LOAD_BYTES_PER_SEC;
use sluice_core::ShardId;
use std::rc::Rc;

/// Chooses shards for `count` new partitions given how many each shard owns already, balancing
/// counts only.
pub fn place(existing_per_shard: &[usize], count: usize) -> Vec<ShardId> {
    place_by_load(existing_per_shard, &[], count)
}

/// Chooses shards for `count` new partitions given how many each shard owns and how many bytes
/// each appended per second recently (missing entries count as 0). See the module docs.
pub fn place_by_load(existing_per_shard: &[usize], bytes_per_sec: &[u64], count: usize) -> Vec<ShardId> {
    assert!(!existing_per_shard.is_empty(), "placement needs at least one shard");
    let rate = |i: usize| bytes_per_sec.get(i).copied().unwrap_or(0) as u128;
    let total_rate: u128 = (0..existing_per_shard.len()).map(rate).sum();
    let weigh_load = total_rate >= PLACEMENT_MIN_LOAD_BYTES_PER_SEC as u128;
    let total_partitions = (existing_per_shard.iter().sum::<usize>() + count) as u128;
    let mut owned = existing_per_shard.to_vec();
    (0..count)
        .map(|_| {
            // score × P × R, in integers: partitions(s) × R + rate(s) × P.
            let score = |i: usize, n: usize| {
                if weigh_load {
                    n as u128 * total_rate + rate(i) * total_partitions
                } else {
                    n as u128
                }
            };
            let (best, _) =
                owned.iter().enumerate().min_by_key(|(i, n)| (score(*i, **n), **n, *i)).expect("at least one shard");
            owned[best] += 1;
            crate::shard::shard_id(best)
        })
        .collect()
}

/// Every shard's recent appended bytes per second, in shard order (0 for a shard that did not
/// answer, e.g. while stopping). One mesh message per other shard.
pub async fn recent_load(shard: &Rc<Shard>) -> Vec<u64> {
    let mut rates = vec![0u64; shard.n_shards];
    for m in gather(shard).await {
        if let Some(r) = rates.get_mut(m.shard as usize) {
            *r = m.append_bytes_per_sec;
        }
    }
    rates
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreads_evenly() {
        let p = place(&[0, 0], 3);
        assert_eq!(p, vec![ShardId(0), ShardId(1), ShardId(0)]);
        let p = place(&[5, 1, 3], 4);
        assert_eq!(p, vec![ShardId(1), ShardId(1), ShardId(1), ShardId(2)]);
    }

    #[test]
    fn small_rates_are_ignored() {
        let idle = PLACEMENT_MIN_LOAD_BYTES_PER_SEC - 1;
        assert_eq!(place_by_load(&[0, 0], &[idle, 0], 3), place(&[0, 0], 3));
    }

    #[test]
    fn a_hot_shard_gets_fewer_new_partitions() {
        let mib = 1024 * 1024;
        // All the traffic on shard 0: shard 1 would need a whole share of partitions more
        // than shard 0 to score higher, so every new partition goes to shard 1.
        let p = place_by_load(&[9, 8], &[50 * mib, 0], 4);
        assert_eq!(p, vec![ShardId(1); 4]);
        // Even when shard 1 already owns more.
        let p = place_by_load(&[8, 12], &[50 * mib, 0], 4);
        assert_eq!(p, vec![ShardId(1); 4]);
        // 75% / 25% of the traffic: the cooler shard takes new partitions while it owns fewer
        // than half of all partitions more than the hotter one (0.75 - 0.25 = 0.5), then they
        // alternate. 20 + 10 partitions: all 10 (10 more < 15).
        let p = place_by_load(&[10, 10], &[30 * mib, 10 * mib], 10);
        assert_eq!(p, vec![ShardId(1); 10]);
        // 20 + 40 partitions: 30 to shard 1 (until 40 vs 10), then 5 each.
        let p = place_by_load(&[10, 10], &[30 * mib, 10 * mib], 40);
        assert_eq!(p.iter().filter(|s| **s == ShardId(1)).count(), 35);
        assert_eq!(p[..30], vec![ShardId(1); 30][..]);
    }
}
