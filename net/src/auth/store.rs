//! The SCRAM credentials of the broker's users, kept in the data directory.
//!
//! Contract: one [`ScramStore`] per broker, shared by every shard (an `Arc`); it is touched
//! only when a client authenticates with SCRAM (one lookup) and by the credential APIs, never
//! on the request path. It holds per user and mechanism the salt, iterations, StoredKey and
//! ServerKey (never a password). Every change is written to `scram-credentials` in the data
//! dir (a temporary file, fsync, rename, directory fsync) before it is visible, so what a
//! client was told is durable; a failed write leaves the store as it was. The file is one line
//! per credential: `base64(user) mechanism iterations base64(salt) base64(stored) base64(server)`.

use crate::sasl::scram::{Credential, Hash};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use sluice_core::limits::{MAX_SCRAM_ITERATIONS, MAX_SCRAM_USERS, MIN_SCRAM_ITERATIONS};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The file name in the data dir.
pub const FILE: &str = "scram-credentials";

/// Why a credential change or load failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} line {line} is malformed")]
    Malformed { path: PathBuf, line: usize },
    #[error("iterations {0} out of range ({MIN_SCRAM_ITERATIONS}..={MAX_SCRAM_ITERATIONS})")]
    Iterations(i32),
    #[error("no such credential")]
    NotFound,
    #[error("too many users (at most {MAX_SCRAM_USERS})")]
    TooManyUsers,
    #[error("the user name is empty")]
    EmptyName,
}

type Key = (String, i8);

/// A change to one user's credentials.
pub enum Change {
    Upsert { user: String, hash: Hash, credential: Credential },
    Delete { user: String, hash: Hash },
}

/// Every user's SCRAM credentials.
pub struct ScramStore {
    path: PathBuf,
    credentials: Mutex<BTreeMap<Key, Credential>>,
}

impl ScramStore {
    /// Loads the store of `data_dir` (empty when the file does not exist).
    pub fn open(data_dir: &Path) -> Result<ScramStore, StoreError> {
        let path = data_dir.join(FILE);
        let credentials = match std::fs::read_to_string(&path) {
            Ok(text) => parse(&path, &text)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(source) => return Err(StoreError::Read { path, source }),
        };
        Ok(ScramStore { path, credentials: Mutex::new(credentials) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Key, Credential>> {
        // Every update replaces the map in one statement after the file is written.
        self.credentials.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The credential of `user` for `hash`.
    pub fn get(&self, user: &str, hash: Hash) -> Option<Credential> {
        self.lock().get(&(user.to_string(), hash.kafka_code())).cloned()
    }

    /// Every user's mechanisms and iteration counts (for DescribeUserScramCredentials).
    pub fn describe(&self) -> BTreeMap<String, Vec<(Hash, u32)>> {
        let mut out: BTreeMap<String, Vec<(Hash, u32)>> = BTreeMap::new();
        for ((user, code), c) in self.lock().iter() {
            if let Some(h) = Hash::from_kafka_code(*code) {
                out.entry(user.clone()).or_default().push((h, c.iterations));
            }
        }
        out
    }

    /// Applies `changes` all or none: the first refused one is the error and nothing changes;
    /// otherwise the file is written before the changes become visible.
    pub fn apply(&self, changes: Vec<Change>) -> Result<(), StoreError> {
        let mut map = self.lock();
        let mut next = map.clone();
        for c in changes {
            apply_one(&mut next, c)?;
        }
        write(&self.path, &next)?;
        *map = next;
        Ok(())
    }
}

fn apply_one(map: &mut BTreeMap<Key, Credential>, change: Change) -> Result<(), StoreError> {
    match change {
        Change::Upsert { user, hash, credential } => {
            if user.is_empty() {
                return Err(StoreError::EmptyName);
            }
            if !(MIN_SCRAM_ITERATIONS..=MAX_SCRAM_ITERATIONS).contains(&credential.iterations) {
                return Err(StoreError::Iterations(i32::try_from(credential.iterations).unwrap_or(i32::MAX)));
            }
            let key = (user, hash.kafka_code());
            if !map.contains_key(&key) && map.len() >= MAX_SCRAM_USERS * 2 {
                return Err(StoreError::TooManyUsers);
            }
            map.insert(key, credential);
            Ok(())
        }
        Change::Delete { user, hash } => map.remove(&(user, hash.kafka_code())).map(|_| ()).ok_or(StoreError::NotFound),
    }
}

fn parse(path: &Path, text: &str) -> Result<BTreeMap<Key, Credential>, StoreError> {
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let bad = || StoreError::Malformed { path: path.to_path_buf(), line: i + 1 };
        let f: Vec<&str> = line.split(' ').collect();
        let [user, code, iterations, salt, stored, server] = f.as_slice() else { return Err(bad()) };
        let user = String::from_utf8(B64.decode(user).map_err(|_| bad())?).map_err(|_| bad())?;
        let code: i8 = code.parse().map_err(|_| bad())?;
        Hash::from_kafka_code(code).ok_or_else(bad)?;
        let credential = Credential {
            iterations: iterations.parse().map_err(|_| bad())?,
            salt: B64.decode(salt).map_err(|_| bad())?,
            stored_key: B64.decode(stored).map_err(|_| bad())?,
            server_key: B64.decode(server).map_err(|_| bad())?,
        };
        out.insert((user, code), credential);
    }
    Ok(out)
}

fn write(path: &Path, map: &BTreeMap<Key, Credential>) -> Result<(), StoreError> {
    let err = |source| StoreError::Write { path: path.to_path_buf(), source };
    let mut text = String::new();
    for ((user, code), c) in map {
        text.push_str(&format!(
            "{} {code} {} {} {} {}\n",
            B64.encode(user),
            c.iterations,
            B64.encode(&c.salt),
            B64.encode(&c.stored_key),
            B64.encode(&c.server_key)
        ));
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(err)?;
    f.write_all(text.as_bytes()).and_then(|()| f.sync_all()).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_survive_a_reopen_and_changes_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let store = ScramStore::open(dir.path()).unwrap();
        let c = Credential::from_password(Hash::Sha256, b"pw", vec![7; 16], 4096);
        store.apply(vec![Change::Upsert { user: "a b".into(), hash: Hash::Sha256, credential: c.clone() }]).unwrap();
        let refused = store.apply(vec![
            Change::Upsert { user: "y".into(), hash: Hash::Sha256, credential: c.clone() },
            Change::Delete { user: "nobody".into(), hash: Hash::Sha512 },
        ]);
        assert!(matches!(refused, Err(StoreError::NotFound)));
        let low = Credential { iterations: 10, ..c.clone() };
        let refused = store.apply(vec![Change::Upsert { user: "x".into(), hash: Hash::Sha512, credential: low }]);
        assert!(matches!(refused, Err(StoreError::Iterations(10))));
        assert_eq!(store.get("y", Hash::Sha256), None, "a refused batch changes nothing");
        let again = ScramStore::open(dir.path()).unwrap();
        assert_eq!(again.get("a b", Hash::Sha256), Some(c));
        assert_eq!(again.get("a b", Hash::Sha512), None);
        assert_eq!(again.describe()["a b"], vec![(Hash::Sha256, 4096)]);
        let text = std::fs::read_to_string(dir.path().join(FILE)).unwrap();
        assert!(!text.contains("pw"));
    }
}
