//! `sluice produce TOPIC`: each stdin line becomes one record.
//!
//! Contract: a line is the bytes up to `\n` (a `\r` before it is dropped, as Kafka's console
//! producer does); with `--key-separator` the bytes before its first occurrence are the key
//! and a line without it is a usage error (exit 2, records before it are sent). Records go to
//! `--partition`, else keyed records to Kafka's default partition (murmur2 of the key, so the
//! same key lands where a Java producer would put it) and unkeyed ones round-robin. Lines read
//! while a request is in flight are batched into the next request (one uncompressed batch per
//! partition). With acks 1/all every batch is acknowledged before exit; acks 0 gets no answer.

use super::client::{topic_name, Cluster};
use super::records::{build_batch, partition_for_key, OutRecord};
use super::{parse_kv, AdminError, CommonArgs, Result};
use bytes::Bytes;
use clap::Args;
use futures::channel::mpsc;
use futures::{SinkExt, StreamExt};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::ProduceRequest;
use sluice_core::limits;
use std::collections::BTreeMap;
use std::io::BufRead;

#[derive(Debug, Args)]
pub struct ProduceArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Topic to produce to (created if the broker auto-creates topics)
    pub topic: String,
    /// Split each line at the first SEP into key and value
    #[arg(long, value_name = "SEP")]
    pub key_separator: Option<String>,
    /// Header KEY=VALUE added to every record (repeatable)
    #[arg(long = "header", value_name = "KEY=VALUE")]
    pub headers: Vec<String>,
    /// Send every record to this partition
    #[arg(long)]
    pub partition: Option<i32>,
    /// Acknowledgement level: 0, 1 or all
    #[arg(long, default_value = "all", value_parser = ["0", "1", "all", "-1"])]
    pub acks: String,
    /// Most records per request
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch_size: u32,
}

/// A line from stdin, or a failure reading it.
enum Line {
    Data(Vec<u8>),
    Err(String),
}

pub fn run(args: ProduceArgs) -> i32 {
    super::run("produce", move || async move { produce(args).await })
}

async fn produce(args: ProduceArgs) -> Result<()> {
    let acks: i16 = match args.acks.as_str() {
        "0" => 0,
        "1" => 1,
        _ => -1,
    };
    if args.key_separator.as_deref() == Some("") {
        return Err(AdminError::Usage("--key-separator must not be empty".into()));
    }
    let mut headers = Vec::new();
    for h in &args.headers {
        let (k, v) = parse_kv(h, "--header")?;
        headers.push((k, Some(v.into_bytes())));
    }
    let mut c = Cluster::connect(&args.common).await?;
    let leaders = c.leaders(&args.topic, true).await?;
    let nparts = leaders.len() as i32;
    if let Some(p) = args.partition {
        if !leaders.contains_key(&p) {
            return Err(AdminError::broker(
                format!("partition {p} of topic '{}' (it has {nparts})", args.topic),
                3,
                None,
            ));
        }
    }
    let mut rx = spawn_stdin_reader()?;
    let mut router = Router { args: &args, headers, nparts, rr: 0, line_no: 0 };
    let mut eof = false;
    while !eof {
        let Some((lines, closed)) = next_lines(&mut rx, args.batch_size as usize).await else { break };
        eof = closed;
        let (by_partition, pending_err) = router.route(lines);
        eof |= pending_err.is_some();
        if !by_partition.is_empty() {
            send(&mut c, &args.topic, &leaders, by_partition, acks).await?;
        }
        if let Some(e) = pending_err {
            return Err(e);
        }
    }
    Ok(())
}

/// Starts the thread that reads stdin line by line (without the `\n` and a `\r` before it);
/// it stops at the end of stdin, after a read error (sent as the last line) or when the
/// receiver is gone.
fn spawn_stdin_reader() -> Result<mpsc::Receiver<Line>> {
    let (mut tx, rx) = mpsc::channel::<Line>(limits::CLIENT_STDIN_LINES_QUEUED);
    std::thread::Builder::new()
        .name("sluice-stdin".into())
        .spawn(move || {
            let stdin = std::io::stdin();
            let mut lock = stdin.lock();
            loop {
                let mut buf = Vec::new();
                let line = match lock.read_until(b'\n', &mut buf) {
                    Ok(0) => break,
                    Ok(_) => {
                        if buf.last() == Some(&b'\n') {
                            buf.pop();
                            if buf.last() == Some(&b'\r') {
                                buf.pop();
                            }
                        }
                        Line::Data(buf)
                    }
                    Err(e) => Line::Err(e.to_string()),
                };
                let stop = matches!(line, Line::Err(_));
                if futures::executor::block_on(tx.send(line)).is_err() || stop {
                    break;
                }
            }
        })
        .map_err(|e| AdminError::Other(format!("cannot start the stdin reader: {e}")))?;
    Ok(rx)
}

/// Waits for one line, then takes whatever else is already there (at most `most` lines);
/// `None` at the end of stdin, else the lines and whether stdin ended after them.
async fn next_lines(rx: &mut mpsc::Receiver<Line>, most: usize) -> Option<(Vec<Line>, bool)> {
    let mut lines = vec![rx.next().await?];
    while lines.len() < most {
        match rx.try_recv() {
            Ok(l) => lines.push(l),
            Err(mpsc::TryRecvError::Closed) => return Some((lines, true)),
            Err(mpsc::TryRecvError::Empty) => break, // nothing ready yet
        }
    }
    Some((lines, false))
}

/// Turns lines into records and picks each one's partition.
struct Router<'a> {
    args: &'a ProduceArgs,
    headers: Vec<(String, Option<Vec<u8>>)>,
    nparts: i32,
    /// The next partition for an unkeyed record.
    rr: i32,
    line_no: u64,
}

impl Router<'_> {
    /// The records of `lines` by partition, up to the first failure (a read error or a line
    /// without the key separator), which comes second.
    fn route(&mut self, lines: Vec<Line>) -> (BTreeMap<i32, Vec<OutRecord>>, Option<AdminError>) {
        let mut by_partition: BTreeMap<i32, Vec<OutRecord>> = BTreeMap::new();
        for l in lines {
            let data = match l {
                Line::Data(d) => d,
                Line::Err(e) => return (by_partition, Some(AdminError::Other(format!("reading stdin: {e}")))),
            };
            self.line_no += 1;
            let (key, value) = match self.split(data) {
                Ok(kv) => kv,
                Err(e) => return (by_partition, Some(e)),
            };
            let partition = self.partition(&key);
            by_partition.entry(partition).or_default().push(OutRecord {
                key,
                value: Some(value),
                headers: self.headers.clone(),
            });
        }
        (by_partition, None)
    }

    /// Key and value of a line: split at `--key-separator`, else all value.
    fn split(&self, data: Vec<u8>) -> Result<(Option<Vec<u8>>, Vec<u8>)> {
        let Some(sep_text) = self.args.key_separator.as_deref() else { return Ok((None, data)) };
        let sep = sep_text.as_bytes();
        match find(&data, sep) {
            Some(i) => Ok((Some(data[..i].to_vec()), data[i + sep.len()..].to_vec())),
            None => Err(AdminError::Usage(format!("line {} has no key separator '{sep_text}'", self.line_no))),
        }
    }

    /// `--partition`, else murmur2 of the key, else round-robin.
    fn partition(&mut self, key: &Option<Vec<u8>>) -> i32 {
        match (self.args.partition, key) {
            (Some(p), _) => p,
            (None, Some(k)) => partition_for_key(k, self.nparts),
            (None, None) => {
                let p = self.rr;
                self.rr = (self.rr + 1) % self.nparts;
                p
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

async fn send(
    c: &mut Cluster,
    topic: &str,
    leaders: &BTreeMap<i32, i32>,
    by_partition: BTreeMap<i32, Vec<OutRecord>>,
    acks: i16,
) -> Result<()> {
    let now = sluice_core::clock::now_ms();
    let mut by_leader: BTreeMap<i32, Vec<PartitionProduceData>> = BTreeMap::new();
    for (p, recs) in by_partition {
        let batch = build_batch(&recs, now);
        by_leader
            .entry(leaders[&p])
            .or_default()
            .push(PartitionProduceData::default().with_index(p).with_records(Some(Bytes::from(batch))));
    }
    for (leader, parts) in by_leader {
        let req = ProduceRequest::default()
            .with_acks(acks)
            .with_timeout_ms(limits::CLIENT_REQUEST_TIMEOUT_MS)
            .with_topic_data(vec![TopicProduceData::default().with_name(topic_name(topic)).with_partition_data(parts)]);
        let conn = c.node(leader).await?;
        if acks == 0 {
            conn.send_only(&req, 9).await?;
            continue;
        }
        let resp = conn.call(&req, 9).await?;
        for t in &resp.responses {
            for p in &t.partition_responses {
                if p.error_code != 0 {
                    let detail = p.error_message.as_ref().map(|m| m.to_string()).or_else(|| {
                        p.record_errors
                            .first()
                            .and_then(|r| r.batch_index_error_message.as_ref().map(|m| m.to_string()))
                    });
                    return Err(AdminError::broker(
                        format!("produce to {}-{}", t.name.0, p.index),
                        p.error_code,
                        detail.as_deref(),
                    ));
                }
            }
        }
    }
    Ok(())
}
