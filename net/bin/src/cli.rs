//! The command line: `sluice [serve]` runs the broker (flags override the config file); the
//! other subcommands are the client side's (sluice-client) or check a config file.
//!
//! Contract: a bad flag or value prints one line on stderr naming it and exits non-zero.

use clap::{Args, Parser, Subcommand};
use sluice_core::config::BrokerConfig;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(name = "sluice", version, about = "A Kafka-compatible, thread-per-core event-streaming broker")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Log format on stderr (filter with RUST_LOG, default info)
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Configuration files: `sluice config check FILE` validates one without starting.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Run the broker (the default when no subcommand is given).
    Serve(ServeArgs),
    /// A local cluster: `sluice cluster start --brokers 3 --data-dir DIR` runs that many
    /// brokers on loopback in the foreground until Ctrl-C.
    Cluster {
        #[command(subcommand)]
        action: ClusterAction,
    },
    /// Load generator: produce or consume against any Kafka-compatible broker.
    Bench(sluice_client::BenchArgs),
    /// Topics: create, list, describe, delete, alter-config (any Kafka-compatible broker).
    Topic(sluice_client::admin::topic::TopicArgs),
    /// Consumer groups: list, describe (offsets and lag), delete.
    Group(sluice_client::admin::group::GroupArgs),
    /// Produce stdin lines as records.
    Produce(sluice_client::admin::produce::ProduceArgs),
    /// Print records of a topic, optionally as a consumer group member.
    Consume(sluice_client::admin::consume::ConsumeArgs),
    /// SCRAM users of a stopped broker's data dir (password from stdin): add, delete, list.
    User(UserArgs),
}

#[derive(Debug, Args)]
pub struct UserArgs {
    #[command(subcommand)]
    pub action: UserCommand,
    /// The broker's data directory
    #[arg(long, default_value = "./data")]
    pub data_dir: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add or replace a user's credentials; the password is the first line of stdin.
    Add {
        name: String,
        #[arg(long, default_value = "SCRAM-SHA-256")]
        mechanism: String,
        #[arg(long)]
        iterations: Option<u32>,
    },
    /// Delete a user's credentials for one mechanism.
    Delete {
        name: String,
        #[arg(long, default_value = "SCRAM-SHA-256")]
        mechanism: String,
    },
    /// List users and their mechanisms.
    List,
}

impl UserArgs {
    pub fn run(self) -> i32 {
        use sluice_net::auth::user_cmd::{run, UserAction};
        let action = match self.action {
            UserCommand::Add { name, mechanism, iterations } => UserAction::Add { name, mechanism, iterations },
            UserCommand::Delete { name, mechanism } => UserAction::Delete { name, mechanism },
            UserCommand::List => UserAction::List,
        };
        run(&self.data_dir, action)
    }
}

#[derive(Debug, Subcommand)]
pub enum ClusterAction {
    /// Start N brokers (node ids 0..N) as child processes; print how to start each by hand.
    Start(crate::cluster::StartArgs),
}

#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Parse and validate a TOML config file; print the effective configuration.
    Check { file: PathBuf },
}

/// `sluice config check FILE`: 0 when valid (prints the effective settings), 1 otherwise.
pub fn config_check(file: &std::path::Path) -> i32 {
    let cores = sluice_net::server::allowed_cpus().len();
    match BrokerConfig::from_file(file).map_err(|e| e.to_string()).and_then(|c| {
        c.validate(cores).map_err(|e| format!("{}: {e}", file.display()))?;
        Ok(c)
    }) {
        Ok(c) => {
            println!("{}: ok", file.display());
            println!("{c:#?}");
            0
        }
        Err(e) => {
            eprintln!("sluice: {e}");
            1
        }
    }
}

#[derive(Debug, Args, Clone, Default)]
pub struct ServeArgs {
    /// Address to listen on and advertise [default: 127.0.0.1:9092]
    #[arg(long)]
    pub listen: Option<String>,
    /// Address of the Prometheus metrics and readiness endpoint; "" disables it
    /// [default: 127.0.0.1:9644]
    #[arg(long)]
    pub metrics_listen: Option<String>,
    /// Directory for metadata and logs, created if missing [default: ./data]
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Number of shards, one pinned thread per core [default: every available core]
    #[arg(long)]
    pub cores: Option<usize>,
    /// How long to retry a listen port in use before giving up, in ms (0: fail at once)
    /// [default: 10000]
    #[arg(long)]
    pub listen_retry_ms: Option<u64>,
    /// TOML configuration file; flags override it
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// This broker's node id, unique in the cluster [default: 0]
    #[arg(long)]
    pub node_id: Option<i32>,
    /// Broker-to-broker listen address (IP:port); unset: a lone broker
    #[arg(long)]
    pub peer_listen: Option<String>,
    /// Cluster members as id@host:port of their peer listeners, comma-separated (KRaft's
    /// controller.quorum.voters)
    #[arg(long)]
    pub controller_quorum_voters: Option<String>,
    /// The cluster id every member shares (22 URL-safe base64 characters)
    #[arg(long, allow_hyphen_values = true)]
    pub cluster_id: Option<String>,
    /// Heartbeat interval to each peer, in ms [default: 100]
    #[arg(long)]
    pub peer_heartbeat_interval_ms: Option<u64>,
    /// A peer silent this long is marked offline, in ms [default: 500]
    #[arg(long)]
    pub peer_session_timeout_ms: Option<u64>,
    /// A follower not caught up for this long leaves the ISR, in ms [default: 30000]
    #[arg(long)]
    pub replica_lag_time_max_ms: Option<u64>,
}

impl ServeArgs {
    /// The effective configuration: defaults, then the file, then flags.
    pub fn resolve(&self) -> Result<BrokerConfig, String> {
        let mut config = match &self.config {
            Some(path) => BrokerConfig::from_file(path).map_err(|e| e.to_string())?,
            None => BrokerConfig::default(),
        };
        if let Some(l) = &self.listen {
            config.listen = l.clone();
        }
        if let Some(m) = &self.metrics_listen {
            config.metrics_listen = m.clone();
        }
        if let Some(d) = &self.data_dir {
            config.data_dir = d.clone();
        }
        if let Some(c) = self.cores {
            config.cores = Some(c);
        }
        if let Some(r) = self.listen_retry_ms {
            config.listen_retry_ms = r;
        }
        self.apply_cluster(&mut config);
        Ok(config)
    }

    /// The cluster flags (node id, peer listener, members, cluster id, liveness timing).
    fn apply_cluster(&self, config: &mut BrokerConfig) {
        if let Some(n) = self.node_id {
            config.node_id = n;
        }
        if let Some(p) = &self.peer_listen {
            config.peer_listen = p.clone();
        }
        if let Some(v) = &self.controller_quorum_voters {
            config.controller_quorum_voters = v.clone();
        }
        if let Some(c) = &self.cluster_id {
            config.cluster_id = c.clone();
        }
        if let Some(h) = self.peer_heartbeat_interval_ms {
            config.peer_heartbeat_interval_ms = h;
        }
        if let Some(t) = self.peer_session_timeout_ms {
            config.peer_session_timeout_ms = t;
        }
        if let Some(t) = self.replica_lag_time_max_ms {
            config.replica_lag_time_max_ms = t;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_id_may_start_with_a_hyphen() {
        // URL-safe base64 ids begin with '-' one time in 64 (Kafka's StorageTool makes them too).
        let cli = Cli::try_parse_from(["sluice", "serve", "--cluster-id", "-RTh-7YzRgyh5KacOP8saQ"]);
        let cli = cli.expect("a leading hyphen is part of the value");
        let id = match cli.command {
            Some(Command::Serve(a)) => a.cluster_id,
            _ => cli.serve.cluster_id,
        };
        assert_eq!(id.as_deref(), Some("-RTh-7YzRgyh5KacOP8saQ"));
    }
}
