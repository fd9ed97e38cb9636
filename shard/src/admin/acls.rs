//! ACL changes (CreateAcls, DeleteAcls) as metadata changes.
//!
//! Contract: like topic changes, an ACL change runs on shard 0, one at a time, decided
//! against the current snapshot: on a lone broker the new snapshot is saved and published to
//! every shard before the answer, in a cluster its records go through the metadata log (every
//! broker applies them). Creating a binding that exists already succeeds and records nothing;
//! a filter removes every binding it selects (deduplicated across the request's filters, each
//! filter answering what it selected). The bindings were checked concrete by the caller
//! ([`Acl::check`]); a change over `MAX_ACLS` or `MAX_ACLS_PER_REQUEST` is refused.

use super::{each_failed, record, run, MetadataChange, Placing};
use crate::error::PartitionError;
use crate::metadata::acl::{Acl, AclFilter};
use crate::metadata::records::MetadataRecord;
use crate::metadata::MetadataSnapshot;
use crate::msg::{CreateAcls, DeleteAcls};
use crate::shard::Shard;
use sluice_core::limits::MAX_ACLS_PER_REQUEST;
use std::collections::BTreeSet;
use std::rc::Rc;

/// Adds ACL bindings; one result per binding, in order.
pub async fn create_acls(shard: &Rc<Shard>, acls: Vec<Acl>) -> Vec<Result<(), PartitionError>> {
    let n = acls.len();
    run(shard, CreateAcls { acls }).await.unwrap_or_else(|e| vec![Err(e); n])
}

/// Removes the bindings each filter selects; one result (what it removed) per filter.
pub async fn delete_acls(shard: &Rc<Shard>, filters: Vec<AclFilter>) -> Vec<Result<Vec<Acl>, PartitionError>> {
    let n = filters.len();
    run(shard, DeleteAcls { filters }).await.unwrap_or_else(|e| vec![Err(e); n])
}

fn too_many() -> PartitionError {
    PartitionError::InvalidRequest(format!("at most {MAX_ACLS_PER_REQUEST} ACL bindings per request"))
}

impl MetadataChange for CreateAcls {
    type Reply = Vec<Result<(), PartitionError>>;
    const ADDS_PARTITIONS: bool = false;

    fn apply(self, snap: &mut MetadataSnapshot, placing: &Placing<'_>) -> (Self::Reply, Vec<MetadataRecord>) {
        let mut records = Vec::new();
        if self.acls.len() > MAX_ACLS_PER_REQUEST {
            return (vec![Err(too_many()); self.acls.len()], records);
        }
        let results = self
            .acls
            .into_iter()
            .map(|a| {
                debug_assert!(a.check().is_ok(), "checked by the caller");
                if snap.acls.contains(&a) {
                    return Ok(());
                }
                record(snap, placing, &mut records, vec![MetadataRecord::AclCreated(a)])
                    .map_err(|e| PartitionError::InvalidRequest(e.to_string()))
            })
            .collect();
        (results, records)
    }

    fn not_saved(reply: Self::Reply, err: &PartitionError) -> Self::Reply {
        each_failed(reply, err)
    }
}

impl MetadataChange for DeleteAcls {
    type Reply = Vec<Result<Vec<Acl>, PartitionError>>;
    const ADDS_PARTITIONS: bool = false;

    fn apply(self, snap: &mut MetadataSnapshot, placing: &Placing<'_>) -> (Self::Reply, Vec<MetadataRecord>) {
        let mut records = Vec::new();
        let selected: Vec<Vec<Acl>> =
            self.filters.iter().map(|f| snap.acls.iter().filter(|a| f.matches(a)).cloned().collect()).collect();
        let all: BTreeSet<&Acl> = selected.iter().flatten().collect();
        if all.len() > MAX_ACLS_PER_REQUEST {
            return (vec![Err(too_many()); selected.len()], records);
        }
        let removals: Vec<MetadataRecord> = all.into_iter().map(|a| MetadataRecord::AclRemoved(a.clone())).collect();
        if let Err(e) = record(snap, placing, &mut records, removals) {
            return (vec![Err(e); selected.len()], Vec::new());
        }
        (selected.into_iter().map(Ok).collect(), records)
    }

    fn not_saved(reply: Self::Reply, err: &PartitionError) -> Self::Reply {
        each_failed(reply, err)
    }
}
