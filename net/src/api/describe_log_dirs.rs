//! DescribeLogDirs (key 35), versions 1–4: the data directory, its partitions and their sizes
//! (asked from every shard), and from v4 the filesystem's total and free bytes.
//! Without DESCRIBE on the cluster: no directories and CLUSTER_AUTHORIZATION_FAILED (v3+), as Kafka.

use super::{reply_now, respond, ApiSpec, Ctx, Reply};
use crate::frame::{decode_body, FrameError, Request};
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{ApiKey, DescribeLogDirsRequest, DescribeLogDirsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use sluice_shard::metadata::acl::op;
use sluice_shard::offsets::log_sizes;
use std::rc::Rc;

pub const SPEC: ApiSpec =
    ApiSpec { key: ApiKey::DescribeLogDirs, name: "DescribeLogDirs", min_version: 1, max_version: 4, handle };

/// (total, free) bytes of the filesystem holding `dir`.
fn fs_space(dir: &std::path::Path) -> (i64, i64) {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else { return (-1, -1) };
    // SAFETY: statvfs fills the zeroed struct we own from a valid NUL-terminated path.
    unsafe {
        let mut s: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut s) != 0 {
            return (-1, -1);
        }
        ((s.f_blocks as i64) * (s.f_frsize as i64), (s.f_bavail as i64) * (s.f_frsize as i64))
    }
}

fn handle(ctx: Rc<Ctx>, req: Request) -> LocalBoxFuture<'static, Result<Reply, FrameError>> {
    async move {
        let body: DescribeLogDirsRequest = decode_body(&req)?;
        if !crate::authz::Authz::new(&ctx, &req).cluster(op::DESCRIBE) {
            // As Kafka: no log dirs, and the code from v3 (where the field exists).
            let code = kafka_protocol::ResponseError::ClusterAuthorizationFailed.code();
            return Ok(reply_now(respond(&req, &DescribeLogDirsResponse::default().with_error_code(code))));
        }
        let wanted = body.topics.map(|ts| {
            ts.into_iter().map(|t| (t.topic.0.to_string(), t.partitions)).collect::<Vec<(String, Vec<i32>)>>()
        });
        let mut topics: Vec<DescribeLogDirsTopic> = Vec::new();
        for (tp, size) in log_sizes(&ctx.shard).await {
            let included =
                wanted.as_ref().is_none_or(|w| w.iter().any(|(t, ps)| *t == tp.topic && ps.contains(&tp.partition.0)));
            if !included {
                continue;
            }
            let part = DescribeLogDirsPartition::default()
                .with_partition_index(tp.partition.0)
                .with_partition_size(size as i64)
                .with_offset_lag(0)
                .with_is_future_key(false);
            match topics.iter_mut().find(|t| *t.name.0 == *tp.topic) {
                Some(t) => t.partitions.push(part),
                None => topics.push(
                    DescribeLogDirsTopic::default()
                        .with_name(TopicName(StrBytes::from_string(tp.topic.clone())))
                        .with_partitions(vec![part]),
                ),
            }
        }
        let dir =
            std::fs::canonicalize(&ctx.shard.config.data_dir).unwrap_or_else(|_| ctx.shard.config.data_dir.clone());
        let (total, free) = if req.version >= 4 { fs_space(&dir) } else { (-1, -1) };
        let result = DescribeLogDirsResult::default()
            .with_error_code(0)
            .with_log_dir(StrBytes::from_string(dir.display().to_string()))
            .with_topics(topics)
            .with_total_bytes(total)
            .with_usable_bytes(free);
        Ok(reply_now(respond(&req, &DescribeLogDirsResponse::default().with_results(vec![result]))))
    }
    .boxed_local()
}
