//! Placement of partitions onto shards.
//!
//! Contract: placement is decided once, by the metadata writer, and recorded in metadata;
//! every shard reads the owner from there and never recomputes it. New partitions go to the
//! shards owning the fewest partitions (ties to the lowest id), so counts stay even.

use sluice_core::ShardId;

/// Chooses shards for `count` new partitions given how many each shard owns already.
pub fn place(existing_per_shard: &[usize], count: usize) -> Vec<ShardId> {
    assert!(!existing_per_shard.is_empty(), "placement needs at least one shard");
    let mut load = existing_per_shard.to_vec();
    (0..count)
        .map(|_| {
            let (best, _) = load.iter().enumerate().min_by_key(|(i, l)| (**l, *i)).expect("at least one shard");
            load[best] += 1;
            ShardId(best as u16)
        })
        .collect()
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
}
