//! The `sluice` binary: parse the command line, set up logging, run.

use clap::Parser;
use sluice_net::cli::{Cli, Command};
use tracing_subscriber::EnvFilter;

fn main() {
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
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .init();
    let args = match cli.command {
        Some(Command::Serve(a)) => a,
        Some(Command::Bench(b)) => std::process::exit(sluice_bench::run(b)),
        None => cli.serve,
    };
    let result = args.resolve().and_then(sluice_net::server::run);
    if let Err(e) = result {
        eprintln!("sluice: {e}");
        std::process::exit(1);
    }
}
