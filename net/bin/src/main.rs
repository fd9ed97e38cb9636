//! The `sluice` binary: parse the command line, set up logging, run the broker (sluice-net) or
//! a client-side command (sluice-client: `bench`, `topic`, `group`, `produce`, `consume`), or a
//! local cluster of brokers as child processes (`cluster start`).
//!
//! Contract: the one place where the server and the client side meet; each subcommand's exit
//! code is the process's exit code, a command-line error exits 2 with one line on stderr.

mod cli;
mod cluster;

use clap::Parser;
use cli::{config_check, Cli, ClusterAction, Command, ConfigAction, LogFormat};
use tracing_subscriber::EnvFilter;

/// See `huge_alloc`: huge reservations from the wire codec must not abort the broker.
#[global_allocator]
static ALLOCATOR: sluice_net::huge_alloc::HugeAlloc = sluice_net::huge_alloc::HugeAlloc;

fn main() {
    // Failure policy: a panic on any thread aborts the whole process (see ARCHITECTURE.md).
    sluice_shard::runtime::install_abort_on_panic();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                e.exit();
            }
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            eprintln!("sluice: {}", first.trim_start_matches("error: "));
            std::process::exit(2);
        }
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Json => logs.json().init(),
        LogFormat::Pretty => logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init(),
    }
    let args = match cli.command {
        Some(Command::Serve(a)) => a,
        Some(Command::Config { action: ConfigAction::Check { file } }) => std::process::exit(config_check(&file)),
        Some(Command::Cluster { action: ClusterAction::Start(a) }) => std::process::exit(cluster::start(a)),
        Some(Command::Bench(b)) => std::process::exit(sluice_client::run(b)),
        Some(Command::Topic(a)) => std::process::exit(sluice_client::admin::topic::run(a)),
        Some(Command::Group(a)) => std::process::exit(sluice_client::admin::group::run(a)),
        Some(Command::Produce(a)) => std::process::exit(sluice_client::admin::produce::run(a)),
        Some(Command::Consume(a)) => std::process::exit(sluice_client::admin::consume::run(a)),
        Some(Command::User(a)) => std::process::exit(a.run()),
        None => cli.serve,
    };
    let result = args.resolve().and_then(sluice_net::server::run);
    if let Err(e) = result {
        eprintln!("sluice: {e}");
        std::process::exit(1);
    }
}
