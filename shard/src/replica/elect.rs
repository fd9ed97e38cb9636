//! Preferred leader election (ElectLeaders): asks a replicated partition's Raft group to move
//! leadership to a named replica, through raft-rs's leadership transfer.
//!
//! Contract: [`transfer`] routes each (index, partition, node) to the partition's owner shard,
//! whose replica asks the group's leader (forwarded there by raft-rs when this replica
//! follows) to transfer leadership to the node: the leader brings the node's log up to date,
//! then tells it to campaign at once; the new leader records itself in the metadata log as any
//! leader does. It only starts the transfer (Ok) or answers UNKNOWN_TOPIC_OR_PARTITION when
//! this broker holds no replica of the partition; whether and when leadership moved is seen in
//! the metadata snapshot. Raft has no unclean election: a leader is only ever elected by a
//! majority holding every committed entry.

use crate::error::PartitionError;
use crate::msg::ShardMsg;
use crate::route::{self, group_by_owner};
use crate::shard::Shard;
use futures::future::join_all;
use sluice_core::cluster::NodeId as ClusterNode;
use sluice_core::TopicPartition;
use std::rc::Rc;

type Transfer = (usize, TopicPartition, i32);
type Started = (usize, Result<(), PartitionError>);

/// On the owner: starts each transfer (module docs).
pub fn transfer_local(shard: &Shard, items: Vec<Transfer>) -> Vec<Started> {
    items
        .into_iter()
        .map(|(index, tp, node)| {
            let started = shard.replicas().and_then(|r| {
                let group = r.group_of(&tp)?;
                let to = u64::try_from(node).ok().map(|_| super::raft_id(ClusterNode(node)))?;
                r.driver.borrow_mut().transfer_leader(group, to).then(|| r.wake())
            });
            tracing::info!(%tp, to = node, started = started.is_some(), "leadership transfer asked");
            (index, started.ok_or(PartitionError::UnknownTopicOrPartition))
        })
        .collect()
}

/// Routes the transfers to the owners; answers in `index` order.
pub async fn transfer(shard: &Rc<Shard>, items: Vec<Transfer>) -> Vec<Started> {
    let grouped = group_by_owner(shard, items, |i| &i.1);
    let mut out = route::unknown(grouped.unknown, |i| i.0);
    let mut remote = Vec::new();
    for (owner, items) in grouped.by_owner {
        if owner == shard.id {
            out.extend(transfer_local(shard, items));
        } else {
            let indexes = items.iter().map(|i| i.0).collect();
            remote.push(route::ask(shard, owner, indexes, |reply| ShardMsg::TransferLeaders { items, reply }).await);
        }
    }
    for part in join_all(remote).await {
        out.extend(part);
    }
    out.sort_by_key(|(i, _)| *i);
    out
}
