//! `sluice consume TOPIC`: print records, optionally as a member of a consumer group.
//!
//! Contract: without `--group`, every partition (or `--partition`) is read from
//! `--from-beginning`, `--offset N` or, by default, the end (as kafka-console-consumer does).
//! With `--group`, the classic group protocol is used: FindCoordinator, JoinGroup (with the
//! MEMBER_ID_REQUIRED round trip), a range assignment computed by whichever member is leader,
//! SyncGroup, Heartbeat, OffsetCommit of exactly what was printed (at most every second and on
//! exit), LeaveGroup on exit; partitions without a committed offset start at the end unless
//! `--from-beginning`. Output is each value on its own line (`text`, null values as `null`) or
//! one JSON object per record (`json`: topic, partition, offset, timestamp, key, value,
//! headers; bytes that are not UTF-8 appear as `{"base64": "..."}`). Stops after
//! `--max-messages`, after `--timeout-ms` without a record, on SIGINT/SIGTERM or when stdout
//! is closed; then prints `Processed a total of N messages` on stderr.

use super::client::{sb, topic_name, Cluster};
use super::output::{base64, Json};
use super::records::{
    decode_assignment, decode_subscription, encode_assignment, encode_subscription, parse_batches, InRecord,
};
use super::{check, AdminError, CommonArgs, Result};
use clap::{Args, ValueEnum};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    BrokerId, FetchRequest, GroupId, HeartbeatRequest, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    OffsetCommitRequest, OffsetFetchRequest, SyncGroupRequest,
};
use kafka_protocol::protocol::StrBytes;
use sluice_core::limits;
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct ConsumeArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Topic to consume
    pub topic: String,
    /// Start at the earliest offset (with --group: where no offset is committed)
    #[arg(long, conflicts_with_all = ["from_end", "offset"])]
    pub from_beginning: bool,
    /// Start at the end: only new records (the default)
    #[arg(long, conflicts_with = "offset")]
    pub from_end: bool,
    /// Start at this offset (on every consumed partition)
    #[arg(long, conflicts_with = "group")]
    pub offset: Option<u64>,
    /// Consume only this partition
    #[arg(long, conflicts_with = "group")]
    pub partition: Option<i32>,
    /// Consume as a member of this consumer group, committing offsets
    #[arg(long)]
    pub group: Option<String>,
    /// Stop after this many records
    #[arg(long)]
    pub max_messages: Option<u64>,
    /// Stop when no record arrived for this long (milliseconds)
    #[arg(long)]
    pub timeout_ms: Option<u64>,
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Group session timeout (milliseconds)
    #[arg(long, default_value_t = 10_000)]
    pub session_timeout_ms: i32,
}

pub fn run(args: ConsumeArgs) -> i32 {
    super::run("consume", move || async move { consume(args).await })
}

/// Writes records to stdout; remembers a closed pipe.
struct Out {
    w: std::io::BufWriter<std::io::Stdout>,
    format: Format,
    topic: String,
    closed: bool,
}

fn bytes_json(b: Option<&[u8]>) -> Json {
    match b {
        None => Json::Null,
        Some(b) => match std::str::from_utf8(b) {
            Ok(s) => Json::str(s),
            Err(_) => Json::obj([("base64", Json::str(base64(b)))]),
        },
    }
}

impl Out {
    fn record(&mut self, partition: i32, r: &InRecord) {
        let res = match self.format {
            Format::Text => {
                let v: &[u8] = r.value.as_deref().unwrap_or(b"null");
                self.w.write_all(v).and_then(|_| self.w.write_all(b"\n"))
            }
            Format::Json => {
                let headers = r
                    .headers
                    .iter()
                    .map(|(k, v)| {
                        Json::obj([("key", Json::str(String::from_utf8_lossy(k))), ("value", bytes_json(v.as_deref()))])
                    })
                    .collect();
                let j = Json::obj([
                    ("topic", Json::str(&self.topic)),
                    ("partition", Json::Int(partition as i64)),
                    ("offset", Json::Int(r.offset)),
                    ("timestamp", Json::Int(r.timestamp)),
                    ("key", bytes_json(r.key.as_deref())),
                    ("value", bytes_json(r.value.as_deref())),
                    ("headers", Json::Arr(headers)),
                ]);
                let mut line = j.render();
                line.push('\n');
                self.w.write_all(line.as_bytes())
            }
        };
        if res.is_err() {
            self.closed = true;
        }
    }

    fn flush(&mut self) {
        if self.w.flush().is_err() {
            self.closed = true;
        }
    }
}

async fn consume(args: ConsumeArgs) -> Result<()> {
    if args.session_timeout_ms < 1000 {
        return Err(AdminError::Usage("--session-timeout-ms must be at least 1000".into()));
    }
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone())
            .map_err(|e| AdminError::Other(format!("cannot handle signals: {e}")))?;
    }
    let mut s = Session::start(&args).await?;
    let idle = args.timeout_ms.map(Duration::from_millis);
    loop {
        if stop.load(Ordering::Relaxed) || s.out.closed || s.count >= s.max {
            break;
        }
        let left = match idle {
            Some(t) => {
                let e = s.last_activity.elapsed();
                if e >= t {
                    break;
                }
                t - e
            }
            None => Duration::MAX,
        };
        if s.group_upkeep().await? {
            continue;
        }
        let wait = left.min(Duration::from_millis(limits::CLIENT_FETCH_MAX_WAIT_MS as u64));
        if s.positions.is_empty() {
            glommio::timer::sleep(wait).await;
            continue;
        }
        if s.fetch_round(wait).await? {
            break;
        }
    }
    s.finish().await;
    Ok(())
}

/// The state of one `sluice consume` run: where each partition is, what was committed and
/// printed, and the group membership (if any).
struct Session {
    c: Cluster,
    topic: String,
    leaders: BTreeMap<i32, i32>,
    reset_ts: i64,
    member: Option<Member>,
    positions: BTreeMap<i32, i64>,
    committed: BTreeMap<i32, i64>,
    last_commit: Instant,
    last_activity: Instant,
    out: Out,
    count: u64,
    max: u64,
}

impl Session {
    /// Connects, joins the group (with `--group`) and finds the start positions.
    async fn start(args: &ConsumeArgs) -> Result<Session> {
        let topic = args.topic.clone();
        let mut c = Cluster::connect(&args.common).await?;
        let leaders = c.leaders(&topic, false).await?;
        let reset_ts = if args.from_beginning { -2 } else { -1 };
        let mut member = None;
        let positions = if let Some(g) = &args.group {
            let mut m = Member::new(g, &topic, args.session_timeout_ms);
            m.join(&mut c).await?;
            let positions = m.start_positions(&mut c, &leaders, reset_ts).await?;
            member = Some(m);
            positions
        } else {
            positions_without_group(&mut c, args, &leaders, reset_ts).await?
        };
        let format = if args.common.json { Format::Json } else { args.format };
        let out = Out { w: std::io::BufWriter::new(std::io::stdout()), format, topic: topic.clone(), closed: false };
        Ok(Session {
            c,
            topic,
            leaders,
            reset_ts,
            member,
            committed: positions.clone(),
            positions,
            last_commit: Instant::now(),
            last_activity: Instant::now(),
            out,
            count: 0,
            max: args.max_messages.unwrap_or(u64::MAX),
        })
    }

    /// With a group: heartbeats and commits when due, and rejoins when the group asks;
    /// `Ok(true)` after a rejoin (the positions start over).
    async fn group_upkeep(&mut self) -> Result<bool> {
        let Some(m) = self.member.as_mut() else { return Ok(false) };
        let c = &mut self.c;
        let mut rejoin = false;
        if m.last_heartbeat.elapsed() >= m.heartbeat_interval() {
            rejoin = m.heartbeat(c).await?;
        }
        if !rejoin
            && self.positions != self.committed
            && self.last_commit.elapsed() >= Duration::from_millis(limits::CLIENT_COMMIT_INTERVAL_MS)
        {
            rejoin = m.commit(c, &self.positions).await?;
            if !rejoin {
                self.committed = self.positions.clone();
            }
            self.last_commit = Instant::now();
        }
        if !rejoin {
            return Ok(false);
        }
        let _ = m.commit(c, &self.positions).await;
        m.join(c).await?;
        self.leaders = c.leaders(&self.topic, false).await?;
        self.positions = m.start_positions(c, &self.leaders, self.reset_ts).await?;
        self.committed = self.positions.clone();
        self.last_activity = Instant::now();
        Ok(true)
    }

    /// One Fetch to each leader, waiting up to `wait`, printing what comes back; `Ok(true)`
    /// once `--max-messages` were printed or the output closed.
    async fn fetch_round(&mut self, wait: Duration) -> Result<bool> {
        let by_leader = fetch_partitions_by_leader(&self.positions, &self.leaders);
        let mut refresh = false;
        for (leader, parts) in by_leader {
            if leader < 0 {
                refresh = true;
                continue;
            }
            let req = fetch_request(&self.topic, parts, wait);
            let resp = self.c.node(leader).await?.call_wait(&req, 12, wait).await?;
            check(resp.error_code, || format!("Fetch from broker {leader}"), None)?;
            for t in &resp.responses {
                for pd in &t.partitions {
                    match self.partition_data(pd).await? {
                        Step::Go => {}
                        Step::Refresh => refresh = true,
                        Step::Full => {
                            self.out.flush();
                            return Ok(true);
                        }
                    }
                }
            }
            self.out.flush();
        }
        if refresh {
            glommio::timer::sleep(Duration::from_millis(limits::CLIENT_RETRY_PAUSE_MS)).await;
            self.leaders = self.c.leaders(&self.topic, false).await?;
        }
        Ok(false)
    }

    /// One partition of a Fetch answer: prints its records and moves its position on.
    async fn partition_data(&mut self, pd: &PartitionData) -> Result<Step> {
        let topic = &self.topic;
        let p = pd.partition_index;
        let Some(pos) = self.positions.get(&p).copied() else { return Ok(Step::Go) };
        match pd.error_code {
            0 => {}
            1 => {
                let to = out_of_range_restart(&mut self.c, topic, &self.leaders, p, pos).await?;
                self.positions.insert(p, to);
                return Ok(Step::Go);
            }
            3 | 5 | 6 | 74 | 75 => return Ok(Step::Refresh),
            code => return Err(AdminError::broker(format!("Fetch {topic}-{p}"), code, None)),
        }
        let Some(data) = pd.records.as_ref() else { return Ok(Step::Go) };
        let parsed = parse_batches(data, pos)
            .map_err(|e| AdminError::Other(format!("Fetch {topic}-{p} at offset {pos}: {e}")))?;
        warn_compressed(topic, p, &parsed.skipped_compressed);
        let before = self.count;
        let full = emit(&mut self.out, p, &parsed.records, &mut self.positions, &mut self.count, self.max);
        if self.count > before {
            self.last_activity = Instant::now();
        }
        if full {
            return Ok(Step::Full);
        }
        if let Some(next) = parsed.next_offset {
            if next > self.positions[&p] {
                self.positions.insert(p, next);
            }
        }
        Ok(Step::Go)
    }

    /// Flushes, commits what was printed, leaves the group, and says how many were printed.
    async fn finish(mut self) {
        self.out.flush();
        if let Some(mut m) = self.member.take() {
            if self.positions != self.committed {
                if let Err(e) = m.commit(&mut self.c, &self.positions).await {
                    eprintln!("sluice consume: final offset commit failed: {e}");
                }
            }
            m.leave(&mut self.c).await;
        }
        eprintln!("Processed a total of {} messages", self.count);
    }
}

/// What one partition of a Fetch answer asks of the loop.
enum Step {
    /// Go on with the next partition.
    Go,
    /// The leader moved: look the leaders up again after this round.
    Refresh,
    /// `--max-messages` printed or the output closed: stop.
    Full,
}

/// Where to start without a group: `--offset` (or the log start or end) of `--partition` or of
/// every partition.
async fn positions_without_group(
    c: &mut Cluster,
    args: &ConsumeArgs,
    leaders: &BTreeMap<i32, i32>,
    reset_ts: i64,
) -> Result<BTreeMap<i32, i64>> {
    let topic = &args.topic;
    let parts: Vec<i32> = match args.partition {
        Some(p) if leaders.contains_key(&p) => vec![p],
        Some(p) => {
            return Err(AdminError::broker(
                format!("partition {p} of topic '{topic}' (it has {})", leaders.len()),
                3,
                None,
            ))
        }
        None => leaders.keys().copied().collect(),
    };
    match args.offset {
        Some(n) => Ok(parts.iter().map(|p| (*p, n as i64)).collect()),
        None => c.list_offsets(topic, leaders, &parts, reset_ts).await,
    }
}

/// The partitions to fetch at their positions, grouped by leader (-1: leader unknown).
fn fetch_partitions_by_leader(
    positions: &BTreeMap<i32, i64>,
    leaders: &BTreeMap<i32, i32>,
) -> BTreeMap<i32, Vec<FetchPartition>> {
    let mut by_leader: BTreeMap<i32, Vec<FetchPartition>> = BTreeMap::new();
    for (p, off) in positions {
        let leader = leaders.get(p).copied().unwrap_or(-1);
        by_leader.entry(leader).or_default().push(
            FetchPartition::default()
                .with_partition(*p)
                .with_current_leader_epoch(-1)
                .with_fetch_offset(*off)
                .with_last_fetched_epoch(-1)
                .with_log_start_offset(-1)
                .with_partition_max_bytes(limits::CLIENT_FETCH_PARTITION_MAX_BYTES),
        );
    }
    by_leader
}

/// A consumer's Fetch of `parts` of `topic`, waiting up to `wait`.
fn fetch_request(topic: &str, parts: Vec<FetchPartition>, wait: Duration) -> FetchRequest {
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(wait.as_millis() as i32)
        .with_min_bytes(1)
        .with_max_bytes(limits::CLIENT_FETCH_MAX_BYTES)
        .with_isolation_level(0)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default().with_topic(topic_name(topic)).with_partitions(parts)])
}

/// OFFSET_OUT_OF_RANGE at `pos` of partition `p`: where to go on (the nearest end of the log).
async fn out_of_range_restart(
    c: &mut Cluster,
    topic: &str,
    leaders: &BTreeMap<i32, i32>,
    p: i32,
    pos: i64,
) -> Result<i64> {
    let earliest = c.list_offsets(topic, leaders, &[p], -2).await?;
    let latest = c.list_offsets(topic, leaders, &[p], -1).await?;
    let to = if pos < earliest[&p] { earliest[&p] } else { latest[&p] };
    eprintln!("sluice consume: offset {pos} of {topic}-{p} is out of range; continuing at {to}");
    Ok(to)
}

/// Says which compressed batches of `topic`-`p` were skipped.
fn warn_compressed(topic: &str, p: i32, skipped: &[(i64, i16)]) {
    for (base, codec) in skipped {
        let name = codec_name(*codec);
        eprintln!(
            "sluice consume: skipping the {name}-compressed batch at {topic}-{p} offset {base}: \
             this client reads uncompressed batches only"
        );
    }
}

/// Prints `records` of partition `p`, moving its position past each; true once `max` records
/// were printed or the output closed (then the rest is not printed).
fn emit(
    out: &mut Out,
    p: i32,
    records: &[InRecord],
    positions: &mut BTreeMap<i32, i64>,
    count: &mut u64,
    max: u64,
) -> bool {
    for r in records {
        out.record(p, r);
        *count += 1;
        positions.insert(p, r.offset + 1);
        if *count >= max || out.closed {
            return true;
        }
    }
    false
}

/// The name of a batch's compression codec (attributes & 7).
fn codec_name(codec: i16) -> &'static str {
    match codec {
        1 => "gzip",
        2 => "snappy",
        3 => "lz4",
        4 => "zstd",
        _ => "unknown",
    }
}

/// This process's membership in a consumer group (classic protocol).
struct Member {
    group: String,
    topic: String,
    member_id: String,
    generation: i32,
    coord: i32,
    session_timeout_ms: i32,
    rebalance_timeout_ms: i32,
    last_heartbeat: Instant,
    assigned: Vec<i32>,
}

impl Member {
    fn new(group: &str, topic: &str, session_timeout_ms: i32) -> Member {
        Member {
            group: group.to_string(),
            topic: topic.to_string(),
            member_id: String::new(),
            generation: -1,
            coord: -1,
            session_timeout_ms,
            rebalance_timeout_ms: limits::CLIENT_REBALANCE_TIMEOUT_MS,
            last_heartbeat: Instant::now(),
            assigned: Vec::new(),
        }
    }

    fn gid(&self) -> GroupId {
        GroupId(sb(&self.group))
    }

    fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(((self.session_timeout_ms / 3) as u64).max(limits::CLIENT_MIN_HEARTBEAT_INTERVAL_MS))
    }

    /// Joins (or rejoins) the group and learns this member's partitions of the topic.
    async fn join(&mut self, c: &mut Cluster) -> Result<()> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            if attempts > limits::CLIENT_JOIN_ATTEMPTS {
                return Err(AdminError::Other(format!(
                    "could not join group '{}' after {} attempts",
                    self.group,
                    attempts - 1
                )));
            }
            if self.coord < 0 {
                self.coord = c.coordinator(&self.group).await?;
            }
            let Some(joined) = self.join_group(c).await? else { continue };
            self.member_id = joined.member_id.to_string();
            self.generation = joined.generation_id;
            let protocol = joined.protocol_name.clone().unwrap_or_else(|| sb("range"));
            let assignments = if joined.leader == joined.member_id {
                let mut subs = Vec::new();
                for m in &joined.members {
                    let topics = decode_subscription(&m.metadata).map_err(|e| {
                        AdminError::Other(format!("member {} of group '{}': {e}", m.member_id, self.group))
                    })?;
                    subs.push((m.member_id.to_string(), topics));
                }
                self.assign(c, subs).await?
            } else {
                Vec::new()
            };
            if self.sync_group(c, protocol, assignments).await? {
                self.last_heartbeat = Instant::now();
                return Ok(());
            }
        }
    }

    /// One JoinGroup; `Ok(None)` when it has to be sent again (after the MEMBER_ID_REQUIRED
    /// round trip, an unknown member id, a rebalance or a coordinator change).
    async fn join_group(&mut self, c: &mut Cluster) -> Result<Option<JoinGroupResponse>> {
        let req = JoinGroupRequest::default()
            .with_group_id(self.gid())
            .with_session_timeout_ms(self.session_timeout_ms)
            .with_rebalance_timeout_ms(self.rebalance_timeout_ms)
            .with_member_id(sb(&self.member_id))
            .with_protocol_type(sb("consumer"))
            .with_protocols(vec![JoinGroupRequestProtocol::default()
                .with_name(sb("range"))
                .with_metadata(encode_subscription(std::slice::from_ref(&self.topic)).into())]);
        let extra = Duration::from_millis(self.rebalance_timeout_ms as u64);
        let resp = c.node(self.coord).await?.call_wait(&req, 7, extra).await?;
        match resp.error_code {
            0 => Ok(Some(resp)),
            79 => {
                // MEMBER_ID_REQUIRED: rejoin with the id the coordinator handed out.
                self.member_id = resp.member_id.to_string();
                Ok(None)
            }
            25 => {
                self.member_id.clear();
                Ok(None)
            }
            27 => Ok(None),
            14..=16 => {
                self.coord = -1;
                glommio::timer::sleep(Duration::from_millis(limits::CLIENT_RETRY_PAUSE_MS)).await;
                Ok(None)
            }
            code => Err(AdminError::broker(format!("JoinGroup '{}'", self.group), code, None)),
        }
    }

    /// SyncGroup with `assignments` (empty unless leader), keeping this member's partitions of
    /// the topic; `Ok(false)` when the member has to join again.
    async fn sync_group(
        &mut self,
        c: &mut Cluster,
        protocol: StrBytes,
        assignments: Vec<SyncGroupRequestAssignment>,
    ) -> Result<bool> {
        let req = SyncGroupRequest::default()
            .with_group_id(self.gid())
            .with_generation_id(self.generation)
            .with_member_id(sb(&self.member_id))
            .with_protocol_type(Some(sb("consumer")))
            .with_protocol_name(Some(protocol))
            .with_assignments(assignments);
        let extra = Duration::from_millis(self.rebalance_timeout_ms as u64);
        let resp = c.node(self.coord).await?.call_wait(&req, 5, extra).await?;
        match resp.error_code {
            0 => {}
            27 | 22 => return Ok(false),
            25 => {
                self.member_id.clear();
                return Ok(false);
            }
            14..=16 => {
                self.coord = -1;
                return Ok(false);
            }
            code => return Err(AdminError::broker(format!("SyncGroup '{}'", self.group), code, None)),
        }
        let (_, assignment, _) = decode_assignment(&resp.assignment)
            .map_err(|e| AdminError::Other(format!("assignment from group '{}': {e}", self.group)))?;
        self.assigned = assignment.into_iter().filter(|(t, _)| *t == self.topic).flat_map(|(_, ps)| ps).collect();
        self.assigned.sort();
        Ok(true)
    }

    /// The range assignment, as Kafka's RangeAssignor computes it: per topic, the members
    /// subscribed to it in member-id order each get a contiguous run of partitions, the first
    /// `partitions % members` one extra.
    async fn assign(
        &self,
        c: &mut Cluster,
        subs: Vec<(String, Vec<String>)>,
    ) -> Result<Vec<SyncGroupRequestAssignment>> {
        let mut topics: Vec<String> = subs.iter().flat_map(|(_, ts)| ts.iter().cloned()).collect();
        topics.sort();
        topics.dedup();
        let md = c.metadata(Some(&topics), false).await?;
        let counts: BTreeMap<String, i32> = md
            .topics
            .iter()
            .filter(|t| t.error_code == 0)
            .filter_map(|t| t.name.as_ref().map(|n| (n.0.to_string(), t.partitions.len() as i32)))
            .collect();
        let mut plan: BTreeMap<String, Vec<(String, Vec<i32>)>> =
            subs.iter().map(|(m, _)| (m.clone(), Vec::new())).collect();
        for t in &topics {
            let n = counts.get(t).copied().unwrap_or(0);
            let mut members: Vec<&String> = subs.iter().filter(|(_, ts)| ts.contains(t)).map(|(m, _)| m).collect();
            members.sort();
            let k = members.len() as i32;
            if k == 0 || n == 0 {
                continue;
            }
            let (per, extra) = (n / k, n % k);
            for (i, m) in members.iter().enumerate() {
                let i = i as i32;
                let start = i * per + i.min(extra);
                let len = per + if i < extra { 1 } else { 0 };
                if len > 0 {
                    plan.get_mut(*m).expect("member").push((t.clone(), (start..start + len).collect()));
                }
            }
        }
        Ok(plan
            .into_iter()
            .map(|(m, a)| {
                SyncGroupRequestAssignment::default()
                    .with_member_id(sb(&m))
                    .with_assignment(encode_assignment(&a).into())
            })
            .collect())
    }

    /// Where to start on each assigned partition: the committed offset, else `reset_ts`.
    async fn start_positions(
        &mut self,
        c: &mut Cluster,
        leaders: &BTreeMap<i32, i32>,
        reset_ts: i64,
    ) -> Result<BTreeMap<i32, i64>> {
        if self.assigned.is_empty() {
            return Ok(BTreeMap::new());
        }
        let req = OffsetFetchRequest::default().with_group_id(self.gid()).with_topics(Some(vec![
            OffsetFetchRequestTopic::default()
                .with_name(topic_name(&self.topic))
                .with_partition_indexes(self.assigned.clone()),
        ]));
        let resp = c.node(self.coord).await?.call(&req, 7).await?;
        check(resp.error_code, || format!("committed offsets of group '{}'", self.group), None)?;
        let mut out = BTreeMap::new();
        for t in &resp.topics {
            for p in &t.partitions {
                check(p.error_code, || format!("committed offset of {}-{}", self.topic, p.partition_index), None)?;
                if p.committed_offset >= 0 && self.assigned.contains(&p.partition_index) {
                    out.insert(p.partition_index, p.committed_offset);
                }
            }
        }
        let missing: Vec<i32> = self.assigned.iter().copied().filter(|p| !out.contains_key(p)).collect();
        if !missing.is_empty() {
            out.extend(c.list_offsets(&self.topic, leaders, &missing, reset_ts).await?);
        }
        Ok(out)
    }

    /// Heartbeats; `Ok(true)` when the member has to rejoin.
    async fn heartbeat(&mut self, c: &mut Cluster) -> Result<bool> {
        let req = HeartbeatRequest::default()
            .with_group_id(self.gid())
            .with_generation_id(self.generation)
            .with_member_id(sb(&self.member_id));
        let resp = c.node(self.coord).await?.call(&req, 4).await?;
        self.last_heartbeat = Instant::now();
        self.rejoin_needed(resp.error_code, "Heartbeat")
    }

    fn rejoin_needed(&mut self, code: i16, what: &str) -> Result<bool> {
        match code {
            0 => Ok(false),
            27 | 22 => Ok(true),
            25 => {
                self.member_id.clear();
                Ok(true)
            }
            14..=16 => {
                self.coord = -1;
                Ok(true)
            }
            code => Err(AdminError::broker(format!("{what} in group '{}'", self.group), code, None)),
        }
    }

    /// Commits `positions`; `Ok(true)` when the member has to rejoin.
    async fn commit(&mut self, c: &mut Cluster, positions: &BTreeMap<i32, i64>) -> Result<bool> {
        if positions.is_empty() || self.coord < 0 {
            return Ok(false);
        }
        let parts = positions
            .iter()
            .map(|(p, o)| {
                OffsetCommitRequestPartition::default()
                    .with_partition_index(*p)
                    .with_committed_offset(*o)
                    .with_committed_leader_epoch(-1)
                    .with_committed_metadata(Some(sb("")))
            })
            .collect();
        let req = OffsetCommitRequest::default()
            .with_group_id(self.gid())
            .with_generation_id_or_member_epoch(self.generation)
            .with_member_id(sb(&self.member_id))
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(topic_name(&self.topic))
                .with_partitions(parts)]);
        let resp = c.node(self.coord).await?.call(&req, 8).await?;
        for t in &resp.topics {
            for p in &t.partitions {
                if self.rejoin_needed(p.error_code, "OffsetCommit")? {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    async fn leave(&mut self, c: &mut Cluster) {
        if self.member_id.is_empty() || self.coord < 0 {
            return;
        }
        let req = LeaveGroupRequest::default()
            .with_group_id(self.gid())
            .with_members(vec![MemberIdentity::default().with_member_id(sb(&self.member_id))]);
        let outcome = match c.node(self.coord).await {
            Ok(conn) => conn.call(&req, 4).await.and_then(|r| check(r.error_code, || "LeaveGroup".into(), None)),
            Err(e) => Err(e),
        };
        if let Err(e) = outcome {
            eprintln!("sluice consume: leaving group '{}': {e}", self.group);
        }
    }
}
