//! `sluice user add|delete|list`: SCRAM credentials in a data dir while the broker is stopped
//! (to create the first users before a start, as Kafka's `kafka-storage format --add-scram`);
//! a running broker's users are managed with AlterUserScramCredentials (`kafka-configs`).
//!
//! Contract: takes the data dir's lock (so it refuses while a broker runs on it, saying so),
//! reads the password from the first line of stdin (never from the command line, where `ps`
//! would show it), stores only the salted keys (`auth::store`), prints one line, and returns
//! the exit code (0 ok, 1 refused).

use super::store::{Change, ScramStore};
use crate::sasl::scram::{Credential, Hash};
use sluice_core::limits::{DEFAULT_SCRAM_ITERATIONS, SCRAM_SALT_BYTES};
use std::path::Path;

/// What to do.
pub enum UserAction {
    Add { name: String, mechanism: String, iterations: Option<u32> },
    Delete { name: String, mechanism: String },
    List,
}

fn hash_of(mechanism: &str) -> Result<Hash, String> {
    match mechanism {
        "SCRAM-SHA-256" => Ok(Hash::Sha256),
        "SCRAM-SHA-512" => Ok(Hash::Sha512),
        other => Err(format!("unknown mechanism {other:?} (SCRAM-SHA-256 or SCRAM-SHA-512)")),
    }
}

fn read_password() -> Result<String, String> {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).map_err(|e| format!("cannot read the password from stdin: {e}"))?;
    let password = line.trim_end_matches(['\n', '\r']).to_string();
    match password.is_empty() {
        true => Err("no password on stdin (give it as the first line)".into()),
        false => Ok(password),
    }
}

fn run_inner(data_dir: &Path, action: UserAction) -> Result<String, String> {
    sluice_storage::format::ensure_data_dir(data_dir).map_err(|e| format!("data directory: {e}"))?;
    let _lock = sluice_storage::format::lock_data_dir(data_dir).map_err(|e| {
        format!("data directory: {e} (while the broker runs, use AlterUserScramCredentials: kafka-configs --alter --entity-type users)")
    })?;
    let store = ScramStore::open(data_dir).map_err(|e| e.to_string())?;
    match action {
        UserAction::Add { name, mechanism, iterations } => {
            let hash = hash_of(&mechanism)?;
            let password = read_password()?;
            let mut salt = vec![0u8; SCRAM_SALT_BYTES];
            getrandom::getrandom(&mut salt).map_err(|e| format!("no random source: {e}"))?;
            let credential =
                Credential::from_password(hash, password.as_bytes(), salt, iterations.unwrap_or(DEFAULT_SCRAM_ITERATIONS));
            store.apply(vec![Change::Upsert { user: name.clone(), hash, credential }]).map_err(|e| e.to_string())?;
            Ok(format!("added {mechanism} credentials for {name}"))
        }
        UserAction::Delete { name, mechanism } => {
            let hash = hash_of(&mechanism)?;
            store.apply(vec![Change::Delete { user: name.clone(), hash }]).map_err(|e| format!("{name}: {e}"))?;
            Ok(format!("deleted {mechanism} credentials of {name}"))
        }
        UserAction::List => Ok(store
            .describe()
            .into_iter()
            .map(|(user, creds)| {
                let c: Vec<String> =
                    creds.iter().map(|(h, i)| format!("{}(iterations={i})", h.mechanism_name())).collect();
                format!("{user} {}", c.join(" "))
            })
            .collect::<Vec<_>>()
            .join("\n")),
    }
}

/// Runs `action` on `data_dir`; the exit code.
pub fn run(data_dir: &Path, action: UserAction) -> i32 {
    match run_inner(data_dir, action) {
        Ok(out) => {
            if !out.is_empty() {
                println!("{out}");
            }
            0
        }
        Err(e) => {
            eprintln!("sluice: {e}");
            1
        }
    }
}
