//! Cluster identity: node ids, the static member list (KRaft's `controller.quorum.voters`) and
//! cluster ids.
//!
//! Contract: [`parse_voters`] accepts exactly `id@host:port[,id@host:port...]` with distinct
//! ids in `0..=MAX_NODE_ID`, non-empty hosts and ports 1–65535 (KRaft's format); every error
//! names the entry and what was expected. [`check_cluster_id`] accepts exactly Kafka's format:
//! 22 characters of URL-safe base64 (16 bytes, no padding). Pure functions, no I/O.

use crate::limits::{MAX_CLUSTER_MEMBERS, MAX_NODE_ID};
use std::fmt;

/// A broker's node id (Kafka's `node.id`): unique in its cluster, 0 for a lone broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct NodeId(pub i32);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// One cluster member as listed in `controller_quorum_voters`: its node id and the host and
/// port of its broker-to-broker (peer) listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Voter {
    pub id: NodeId,
    pub host: String,
    pub port: u16,
}

impl Voter {
    /// `host:port`, ready for a resolver.
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Parses `id@host:port,...` (whitespace around entries allowed; an empty string: no voters).
pub fn parse_voters(text: &str) -> Result<Vec<Voter>, String> {
    let mut voters: Vec<Voter> = Vec::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let voter = parse_voter(entry)?;
        if voters.iter().any(|v| v.id == voter.id) {
            return Err(format!("node id {} is listed twice", voter.id));
        }
        voters.push(voter);
    }
    if voters.len() > MAX_CLUSTER_MEMBERS {
        return Err(format!("{} members listed, at most {MAX_CLUSTER_MEMBERS}", voters.len()));
    }
    Ok(voters)
}

fn parse_voter(entry: &str) -> Result<Voter, String> {
    let bad = |why: &str| format!("entry {entry:?}: {why} (expected id@host:port, such as 1@127.0.0.1:9093)");
    let (id, address) = entry.split_once('@').ok_or_else(|| bad("no '@'"))?;
    let id: i32 = id.trim().parse().map_err(|_| bad("the node id is not a number"))?;
    if !(0..=MAX_NODE_ID).contains(&id) {
        return Err(bad(&format!("the node id is outside 0..={MAX_NODE_ID}")));
    }
    let (host, port) = address.rsplit_once(':').ok_or_else(|| bad("no ':port'"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(bad("empty host"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(Voter { id: NodeId(id), host: host.to_string(), port: p }),
        _ => Err(bad("the port is not 1 to 65535")),
    }
}

/// Whether `id` has Kafka's cluster id format (22 URL-safe base64 characters).
pub fn check_cluster_id(id: &str) -> Result<(), String> {
    let ok = id.len() == 22 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err("22 characters of URL-safe base64 (A-Z a-z 0-9 - _), as Kafka's cluster ids; `sluice cluster start` makes one".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn voters_parse_in_kraft_format() {
        let v = parse_voters("1@127.0.0.1:9093, 2@host-b:9094,3@[::1]:9095").unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(v[0], Voter { id: NodeId(1), host: "127.0.0.1".into(), port: 9093 });
        assert_eq!(v[2].host, "::1");
        assert_eq!(v[2].address(), "[::1]:9095");
        assert!(parse_voters("").unwrap().is_empty());
    }

    #[test]
    fn bad_voters_are_named() {
        for (bad, why) in [
            ("1127.0.0.1:9093", "no '@'"),
            ("x@h:1", "not a number"),
            ("-1@h:1", "outside"),
            ("1@h", "no ':port'"),
            ("1@:9093", "empty host"),
            ("1@h:0", "port"),
            ("1@h:70000", "port"),
            ("1@h:1,1@g:2", "listed twice"),
        ] {
            let e = parse_voters(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn cluster_ids_have_kafkas_format() {
        check_cluster_id("MkU3OEVBNTcwNTJENDM2Qk").unwrap();
        for bad in ["", "short", "MkU3OEVBNTcwNTJENDM2Qk=", "MkU3OEVBNTcwNTJENDM2Q+", "MkU3OEVBNTcwNTJENDM2QkX"] {
            assert!(check_cluster_id(bad).is_err(), "{bad}");
        }
    }
}
