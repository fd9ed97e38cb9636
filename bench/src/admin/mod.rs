//! The admin CLI: `sluice topic|group|produce|consume`, speaking only the Kafka protocol, so it
//! works against any Kafka-compatible broker. Client side (sluice-client): the broker's
//! serving code never links it.
//!
//! Owns: the shared flags ([`CommonArgs`]), the error type and its exit codes ([`AdminError`]),
//! running a command on one unbound glommio executor ([`run`]), the connections
//! ([`client`]), record batches with headers and the default partitioner ([`records`]),
//! table and JSON output ([`output`]) and one file per command group.
//!
//! Contract: exit code 0 on success, 1 when a broker answered with an error (the message names
//! the Kafka error code, e.g. TOPIC_ALREADY_EXISTS), 2 for a usage error, 3 when the broker
//! cannot be reached (refused, unresolvable, timed out, connection lost).

pub mod client;
pub mod consume;
pub mod group;
pub mod output;
pub mod produce;
pub mod records;
pub mod topic;

use clap::Args;
use glommio::{LocalExecutorBuilder, Placement};
use kafka_protocol::ResponseError;
use std::future::Future;

/// Flags every admin command accepts (anywhere after the subcommand).
#[derive(Debug, Args, Clone)]
pub struct CommonArgs {
    /// Broker to bootstrap from
    #[arg(long, global = true, default_value = "127.0.0.1:9092", value_name = "HOST:PORT")]
    pub bootstrap_server: String,
    /// Machine-readable JSON output (list/describe; `consume` as `--format json`)
    #[arg(long, global = true)]
    pub json: bool,
    /// Per-request timeout in milliseconds
    #[arg(long, global = true, default_value_t = 30_000, value_name = "MS")]
    pub request_timeout_ms: u64,
}

/// What went wrong; decides the exit code.
#[derive(Debug)]
pub enum AdminError {
    /// Bad arguments or input (exit 2).
    Usage(String),
    /// The broker answered with a Kafka error code (exit 1).
    Broker { context: String, code: i16, message: Option<String> },
    /// The broker could not be reached or the connection was lost (exit 3).
    Connect(String),
    /// Anything else: undecodable answers, missing data (exit 1).
    Other(String),
}

pub type Result<T> = std::result::Result<T, AdminError>;

impl AdminError {
    pub fn exit_code(&self) -> i32 {
        match self {
            AdminError::Usage(_) => 2,
            AdminError::Broker { .. } | AdminError::Other(_) => 1,
            AdminError::Connect(_) => 3,
        }
    }

    pub fn broker(context: impl Into<String>, code: i16, message: Option<&str>) -> AdminError {
        AdminError::Broker {
            context: context.into(),
            code,
            message: message.filter(|m| !m.is_empty()).map(str::to_string),
        }
    }
}

impl std::fmt::Display for AdminError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdminError::Usage(m) | AdminError::Connect(m) | AdminError::Other(m) => f.write_str(m),
            AdminError::Broker { context, code, message } => {
                write!(f, "{context}: {} ({code})", error_name(*code))?;
                if let Some(m) = message {
                    write!(f, ": {m}")?;
                }
                Ok(())
            }
        }
    }
}

/// Kafka's name for an error code (`36` → `TOPIC_ALREADY_EXISTS`).
pub fn error_name(code: i16) -> String {
    match ResponseError::try_from_code(code) {
        None => "NONE".to_string(),
        Some(ResponseError::Unknown(c)) => format!("UNKNOWN_ERROR_CODE_{c}"),
        Some(e) => {
            let camel = format!("{e:?}");
            let mut out = String::with_capacity(camel.len() + 8);
            for (i, ch) in camel.chars().enumerate() {
                if ch.is_ascii_uppercase() && i > 0 {
                    out.push('_');
                }
                out.push(ch.to_ascii_uppercase());
            }
            out
        }
    }
}

/// `Err` naming the error when `code` is not 0.
pub fn check(code: i16, context: impl FnOnce() -> String, message: Option<&str>) -> Result<()> {
    if code == 0 {
        Ok(())
    } else {
        Err(AdminError::broker(context(), code, message))
    }
}

/// Runs `f` on one glommio executor not pinned to any CPU and turns its outcome into an exit
/// code (printing the error on stderr as `sluice <cmd>: ...`).
pub fn run<F, Fut>(cmd: &str, f: F) -> i32
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<()>> + 'static,
{
    let spawned =
        LocalExecutorBuilder::new(Placement::Unbound).name("sluice-cli").spawn(move || async move { f().await });
    let outcome = match spawned {
        Ok(handle) => match handle.join() {
            Ok(r) => r,
            Err(e) => Err(AdminError::Other(format!("executor failed: {e}"))),
        },
        Err(e) => Err(AdminError::Other(format!("cannot start the glommio executor: {e}"))),
    };
    match outcome {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("sluice {cmd}: {e}");
            e.exit_code()
        }
    }
}

/// Ends a command that handled several items: prints all but the first error on stderr and
/// returns the first (which [`run`] prints).
pub fn finish(cmd: &str, mut errs: Vec<AdminError>) -> Result<()> {
    if errs.is_empty() {
        return Ok(());
    }
    for e in &errs[1..] {
        eprintln!("sluice {cmd}: {e}");
    }
    Err(errs.swap_remove(0))
}

/// Parses `k=v`.
pub fn parse_kv(s: &str, what: &str) -> Result<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(AdminError::Usage(format!("{what} '{s}' is not of the form key=value"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_names_are_kafkas() {
        assert_eq!(error_name(36), "TOPIC_ALREADY_EXISTS");
        assert_eq!(error_name(3), "UNKNOWN_TOPIC_OR_PARTITION");
        assert_eq!(error_name(56), "KAFKA_STORAGE_ERROR");
        assert_eq!(error_name(-1), "UNKNOWN_SERVER_ERROR");
        assert_eq!(error_name(9999), "UNKNOWN_ERROR_CODE_9999");
    }
}
