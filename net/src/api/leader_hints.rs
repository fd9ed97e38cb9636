//! KIP-951 leader hints: the leader a NOT_LEADER_OR_FOLLOWER (or FENCED_LEADER_EPOCH) answer
//! names, and the endpoints of the brokers so named, so a client goes to the new leader
//! without a Metadata round trip.
//!
//! Contract: the hint is what the partition's owner shard knows of the Raft leader (node id
//! and epoch, the same epoch the leader-epoch checks compare with); leader -1 / epoch -1 when
//! it knows none. The endpoints are those of the named leaders that are live in this shard's
//! cluster view, at the addresses Metadata gives (`Ctx::brokers`), in node-id order.

use super::Ctx;
use sluice_shard::PartitionError;
use std::collections::BTreeSet;

/// The (leader id, leader epoch) a partition error carries as its hint, if it carries one.
pub fn hint(e: &PartitionError) -> Option<(i32, i32)> {
    match e {
        PartitionError::NotLeaderOrFollower { leader, epoch } => Some((leader.unwrap_or(-1), *epoch)),
        PartitionError::FencedLeaderEpoch { leader, current, .. } => Some((leader.unwrap_or(-1), *current)),
        _ => None,
    }
}

/// (node id, host, port) of each live broker in `leaders` (negative ids ignored).
pub fn endpoints(ctx: &Ctx, leaders: impl IntoIterator<Item = i32>) -> Vec<(i32, String, i32)> {
    let wanted: BTreeSet<i32> = leaders.into_iter().filter(|l| *l >= 0).collect();
    if wanted.is_empty() {
        return Vec::new();
    }
    ctx.brokers()
        .into_iter()
        .filter(|b| wanted.contains(&b.node_id.0))
        .map(|b| (b.node_id.0, b.host, i32::from(b.port)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_leadership_errors_carry_a_hint() {
        let nl = PartitionError::NotLeaderOrFollower { leader: Some(2), epoch: 5 };
        assert_eq!(hint(&nl), Some((2, 5)));
        let unknown = PartitionError::NotLeaderOrFollower { leader: None, epoch: -1 };
        assert_eq!(hint(&unknown), Some((-1, -1)));
        let fenced = PartitionError::FencedLeaderEpoch { got: 3, current: 5, leader: Some(1) };
        assert_eq!(hint(&fenced), Some((1, 5)));
        assert_eq!(hint(&PartitionError::UnknownLeaderEpoch { got: 6, current: 5 }), None);
        assert_eq!(hint(&PartitionError::UnknownTopicOrPartition), None);
    }
}
