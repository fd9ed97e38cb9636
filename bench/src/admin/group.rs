//! `sluice group list|describe|delete`.
//!
//! Contract: describe shows the group's state and members and, per partition with a committed
//! offset or an assigned member, the committed offset, the log end offset and the lag (like
//! `kafka-consumer-groups --describe`); assignments are decoded from the consumer protocol.
//! An unknown group is GROUP_ID_NOT_FOUND (exit 1).

use super::client::{sb, Cluster};
use super::output::{print, table, Json};
use super::records::decode_assignment;
use super::{check, AdminError, CommonArgs, Result};
use clap::{Args, Subcommand};
use kafka_protocol::messages::describe_groups_response::DescribedGroup;
use kafka_protocol::messages::{
    DeleteGroupsRequest, DescribeGroupsRequest, GroupId, ListGroupsRequest, OffsetFetchRequest, OffsetFetchResponse,
};
use std::collections::BTreeMap;

#[derive(Debug, Args)]
pub struct GroupArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(subcommand)]
    pub cmd: GroupCmd,
}

#[derive(Debug, Subcommand)]
pub enum GroupCmd {
    /// List consumer groups (of every broker).
    List,
    /// A group's state, members, assignment, committed offsets and lag.
    Describe { group: String },
    /// Delete groups (they must have no members).
    Delete {
        #[arg(required = true)]
        groups: Vec<String>,
    },
}

pub fn run(args: GroupArgs) -> i32 {
    super::run("group", move || async move {
        let json = args.common.json;
        let mut c = Cluster::connect(&args.common).await?;
        match args.cmd {
            GroupCmd::List => list(&mut c, json).await,
            GroupCmd::Describe { group } => describe(&mut c, json, &group).await,
            GroupCmd::Delete { groups } => delete(&mut c, json, groups).await,
        }
    })
}

fn gid(g: &str) -> GroupId {
    GroupId(sb(g))
}

async fn list(c: &mut Cluster, json: bool) -> Result<()> {
    c.metadata(Some(&[]), false).await?;
    let mut groups = BTreeMap::new();
    for id in c.node_ids() {
        let resp = c.node(id).await?.call(&ListGroupsRequest::default(), 4).await?;
        check(resp.error_code, || format!("ListGroups on broker {id}"), None)?;
        for g in resp.groups {
            groups.insert(g.group_id.0.to_string(), (g.group_state.to_string(), g.protocol_type.to_string()));
        }
    }
    if json {
        let arr = groups
            .iter()
            .map(|(g, (state, pt))| {
                Json::obj([("group", Json::str(g)), ("state", Json::str(state)), ("protocol_type", Json::str(pt))])
            })
            .collect();
        print(&format!("{}\n", Json::Arr(arr).render()));
    } else {
        let rows: Vec<Vec<String>> = groups.iter().map(|(g, (s, pt))| vec![g.clone(), s.clone(), pt.clone()]).collect();
        print(&table(&["GROUP", "STATE", "PROTOCOL-TYPE"], &rows));
    }
    Ok(())
}

struct MemberInfo {
    member_id: String,
    instance_id: Option<String>,
    client_id: String,
    host: String,
    assignment: Vec<(String, Vec<i32>)>,
    assignment_version: Option<i16>,
}

/// (topic, partition) → (committed offset, owning member index)
type Rows = BTreeMap<(String, i32), (Option<i64>, Option<usize>)>;

/// What `sluice group describe` shows of one group.
struct Description<'a> {
    group: &'a str,
    state: String,
    protocol_type: String,
    protocol: String,
    members: Vec<MemberInfo>,
    rows: Rows,
    /// Log end offsets of the partitions in `rows` whose leader is known.
    leo: BTreeMap<(String, i32), i64>,
}

async fn describe(c: &mut Cluster, json: bool, group: &str) -> Result<()> {
    let coord = c.coordinator(group).await?;
    let conn = c.node(coord).await?;
    let resp = conn.call(&DescribeGroupsRequest::default().with_groups(vec![gid(group)]), 5).await?;
    let g = resp
        .groups
        .into_iter()
        .next()
        .ok_or_else(|| AdminError::Other("DescribeGroups answer without the group".into()))?;
    check(g.error_code, || format!("group '{group}'"), g.error_message.as_deref())?;
    let members = members_of(&g);
    let resp = conn.call(&OffsetFetchRequest::default().with_group_id(gid(group)).with_topics(None), 7).await?;
    check(resp.error_code, || format!("offsets of group '{group}'"), None)?;
    let rows = offset_rows(&resp, &members)?;
    if g.group_state.as_str() == "Dead" && rows.is_empty() && members.is_empty() {
        return Err(AdminError::broker(format!("group '{group}'"), 69, None));
    }
    let leo = log_end_offsets(c, &rows).await?;
    let d = Description {
        group,
        state: g.group_state.to_string(),
        protocol_type: g.protocol_type.to_string(),
        protocol: g.protocol_data.to_string(),
        members,
        rows,
        leo,
    };
    print(&if json { format!("{}\n", d.json().render()) } else { d.text() });
    Ok(())
}

/// The members of a described group, with their assignments decoded (consumer groups).
fn members_of(g: &DescribedGroup) -> Vec<MemberInfo> {
    let is_consumer = g.protocol_type.as_str() == "consumer" || g.protocol_type.is_empty();
    let mut members = Vec::new();
    for m in &g.members {
        let (assignment, version) = if is_consumer && !m.member_assignment.is_empty() {
            match decode_assignment(&m.member_assignment) {
                Ok((v, a, _user_data)) => (a, Some(v)),
                Err(e) => {
                    eprintln!("sluice group: member {}: undecodable assignment: {e}", m.member_id);
                    (Vec::new(), None)
                }
            }
        } else {
            (Vec::new(), None)
        };
        members.push(MemberInfo {
            member_id: m.member_id.to_string(),
            instance_id: m.group_instance_id.as_ref().map(|s| s.to_string()),
            client_id: m.client_id.to_string(),
            host: m.client_host.to_string(),
            assignment,
            assignment_version: version,
        });
    }
    members
}

/// The partitions with a committed offset or an owner among `members`.
fn offset_rows(resp: &OffsetFetchResponse, members: &[MemberInfo]) -> Result<Rows> {
    let mut rows = Rows::new();
    for t in &resp.topics {
        for p in &t.partitions {
            check(p.error_code, || format!("committed offset of {}-{}", t.name.0, p.partition_index), None)?;
            if p.committed_offset >= 0 {
                rows.insert((t.name.0.to_string(), p.partition_index), (Some(p.committed_offset), None));
            }
        }
    }
    for (i, m) in members.iter().enumerate() {
        for (t, ps) in &m.assignment {
            for p in ps {
                rows.entry((t.clone(), *p)).or_insert((None, None)).1 = Some(i);
            }
        }
    }
    Ok(rows)
}

/// Log end offsets of the partitions in `rows`, asked per topic (a topic whose leaders are
/// unknown is reported and left out).
async fn log_end_offsets(c: &mut Cluster, rows: &Rows) -> Result<BTreeMap<(String, i32), i64>> {
    let mut leo: BTreeMap<(String, i32), i64> = BTreeMap::new();
    let topics: Vec<String> = {
        let mut t: Vec<String> = rows.keys().map(|(t, _)| t.clone()).collect();
        t.dedup();
        t
    };
    for t in &topics {
        let parts: Vec<i32> = rows.keys().filter(|(tt, _)| tt == t).map(|(_, p)| *p).collect();
        match c.leaders(t, false).await {
            Ok(leaders) => {
                let parts: Vec<i32> = parts.into_iter().filter(|p| leaders.contains_key(p)).collect();
                for (p, o) in c.list_offsets(t, &leaders, &parts, -1).await? {
                    leo.insert((t.clone(), p), o);
                }
            }
            Err(e) => eprintln!("sluice group: {e}"),
        }
    }
    Ok(leo)
}

impl Description<'_> {
    fn lag(&self, k: &(String, i32), committed: Option<i64>) -> Option<i64> {
        match (committed, self.leo.get(k)) {
            (Some(c), Some(e)) => Some((*e - c).max(0)),
            _ => None,
        }
    }

    fn json(&self) -> Json {
        let ms = self
            .members
            .iter()
            .map(|m| {
                Json::obj([
                    ("member_id", Json::str(&m.member_id)),
                    ("group_instance_id", Json::opt_str(m.instance_id.clone())),
                    ("client_id", Json::str(&m.client_id)),
                    ("host", Json::str(&m.host)),
                    ("assignment_version", m.assignment_version.map(|v| Json::Int(v as i64)).unwrap_or(Json::Null)),
                    (
                        "assignment",
                        Json::Arr(
                            m.assignment
                                .iter()
                                .map(|(t, ps)| {
                                    Json::obj([
                                        ("topic", Json::str(t)),
                                        ("partitions", Json::Arr(ps.iter().map(|p| Json::Int(*p as i64)).collect())),
                                    ])
                                })
                                .collect(),
                        ),
                    ),
                ])
            })
            .collect();
        let offs = self
            .rows
            .iter()
            .map(|(k, (committed, owner))| {
                let opt = |v: Option<i64>| v.map(Json::Int).unwrap_or(Json::Null);
                Json::obj([
                    ("topic", Json::str(&k.0)),
                    ("partition", Json::Int(k.1 as i64)),
                    ("committed_offset", opt(*committed)),
                    ("log_end_offset", opt(self.leo.get(k).copied())),
                    ("lag", opt(self.lag(k, *committed))),
                    ("member_id", Json::opt_str(owner.map(|i| self.members[i].member_id.clone()))),
                ])
            })
            .collect();
        Json::obj([
            ("group", Json::str(self.group)),
            ("state", Json::str(self.state.clone())),
            ("protocol_type", Json::str(self.protocol_type.clone())),
            ("protocol", Json::str(self.protocol.clone())),
            ("members", Json::Arr(ms)),
            ("offsets", Json::Arr(offs)),
        ])
    }

    fn text(&self) -> String {
        let dash_if_empty = |s: &str| if s.is_empty() { "-".to_string() } else { s.to_string() };
        let mut out = format!(
            "Group: {}  State: {}  ProtocolType: {}  Protocol: {}  Members: {}\n\n",
            self.group,
            self.state,
            dash_if_empty(&self.protocol_type),
            dash_if_empty(&self.protocol),
            self.members.len()
        );
        out.push_str(&self.offsets_table());
        if self.members.is_empty() {
            out.push_str(&format!("\nConsumer group '{}' has no active members.\n", self.group));
        } else {
            out.push('\n');
            out.push_str(&self.members_table());
        }
        out
    }

    fn offsets_table(&self) -> String {
        let dash = || "-".to_string();
        let table_rows: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|(k, (committed, owner))| {
                let m = owner.map(|i| &self.members[i]);
                vec![
                    self.group.to_string(),
                    k.0.clone(),
                    k.1.to_string(),
                    committed.map(|v| v.to_string()).unwrap_or_else(dash),
                    self.leo.get(k).map(|v| v.to_string()).unwrap_or_else(dash),
                    self.lag(k, *committed).map(|v| v.to_string()).unwrap_or_else(dash),
                    m.map(|m| m.member_id.clone()).unwrap_or_else(dash),
                    m.map(|m| m.host.clone()).unwrap_or_else(dash),
                    m.map(|m| m.client_id.clone()).unwrap_or_else(dash),
                ]
            })
            .collect();
        table(
            &[
                "GROUP",
                "TOPIC",
                "PARTITION",
                "CURRENT-OFFSET",
                "LOG-END-OFFSET",
                "LAG",
                "CONSUMER-ID",
                "HOST",
                "CLIENT-ID",
            ],
            &table_rows,
        )
    }

    fn members_table(&self) -> String {
        let dash = || "-".to_string();
        let mrows: Vec<Vec<String>> = self
            .members
            .iter()
            .map(|m| {
                let a = m
                    .assignment
                    .iter()
                    .map(|(t, ps)| format!("{t}:{}", ps.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(",")))
                    .collect::<Vec<_>>()
                    .join(" ");
                vec![
                    m.member_id.clone(),
                    m.instance_id.clone().unwrap_or_else(dash),
                    m.client_id.clone(),
                    m.host.clone(),
                    if a.is_empty() { dash() } else { a },
                ]
            })
            .collect();
        table(&["MEMBER-ID", "INSTANCE-ID", "CLIENT-ID", "HOST", "ASSIGNMENT"], &mrows)
    }
}

async fn delete(c: &mut Cluster, json: bool, groups: Vec<String>) -> Result<()> {
    let mut errs: Vec<AdminError> = Vec::new();
    let mut results = Vec::new();
    for g in &groups {
        let outcome = async {
            let coord = c.coordinator(g).await?;
            let resp =
                c.node(coord).await?.call(&DeleteGroupsRequest::default().with_groups_names(vec![gid(g)]), 2).await?;
            for r in &resp.results {
                check(r.error_code, || format!("cannot delete group '{g}'"), None)?;
            }
            Ok::<(), AdminError>(())
        }
        .await;
        match outcome {
            Ok(()) => {
                results.push(Json::obj([("group", Json::str(g)), ("error", Json::Null)]));
                if !json {
                    print(&format!("Deleted group {g}.\n"));
                }
            }
            Err(e) => {
                let name = match &e {
                    AdminError::Broker { code, .. } => Json::str(super::error_name(*code)),
                    _ => Json::str(e.to_string()),
                };
                results.push(Json::obj([("group", Json::str(g)), ("error", name)]));
                if matches!(e, AdminError::Connect(_)) {
                    return Err(e);
                }
                errs.push(e);
            }
        }
    }
    if json {
        print(&format!("{}\n", Json::Arr(results).render()));
    }
    super::finish("group", errs)
}
