//! A simulated disk: an in-memory file layer with the durability rules of a real one, and
//! fault injection, used by the crash tests to stop the engine at every write and sync point.
//!
//! Contract:
//! - Every file has durable bytes (what survives a crash for certain) and a list of pending
//!   operations (writes and truncations issued since its last `fdatasync`); what readers see is
//!   the durable bytes with the pending operations applied in order. `fdatasync` makes the
//!   current bytes durable.
//! - Names are the same: a created, replaced or removed name is pending until `sync_dir` of its
//!   directory (a durable [`SimDisk::write_file`] syncs its own name, as rename + directory
//!   fsync does).
//! - Writes must be aligned like O_DIRECT (position and length multiples of [`ALIGN`]), or they
//!   fail: the engine's direct-I/O rules are checked here too.
//! - Every mutating operation gets a number. With a crash point set ([`SimDisk::crash_at`]),
//!   the operation with that number and every later one fail with an I/O error, as if the
//!   machine stopped there; a crash point on a write may first apply a prefix of it (a torn
//!   write). [`SimDisk::after_crash`] then gives the disk as a restart would find it, keeping
//!   none, or all, of the pending operations (the two extremes a real disk may show), or any
//!   subset of them ([`Survival::Subset`]: each unsynced [`ALIGN`]-sized block of each write,
//!   each truncation and each unsynced name change kept or lost at random, as a disk that
//!   reorders its writes may show).
//! - [`SimDisk::hold_syncs`] makes every fdatasync wait until released (the only operation
//!   that does not complete at once), to test what the engine does while a sync is in flight.
//! - [`SimDisk::fail_once`] makes one operation fail with ENOSPC and have no effect, while
//!   the operations after it work again: a transiently full disk. [`SimDisk::short_once`]
//!   makes one write put only a prefix on the disk and report that count, as a direct-I/O
//!   write that ran out of space part way does.

use bytes::Bytes;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// Alignment required of writes, as with O_DIRECT on a 4 KiB-sector device.
pub const ALIGN: u64 = 4096;

#[derive(Clone, Debug)]
enum Pending {
    Write { pos: u64, data: Vec<u8> },
    Truncate { len: u64 },
}

#[derive(Default, Debug)]
struct Inode {
    durable: Vec<u8>,
    pending: Vec<Pending>,
    /// `durable` with `pending` applied: what reads see.
    current: Vec<u8>,
}

fn apply(data: &mut Vec<u8>, op: &Pending) {
    match op {
        Pending::Write { pos, data: bytes } => {
            let pos = usize::try_from(*pos).expect("a simulated file fits memory");
            let end = pos + bytes.len();
            if data.len() < end {
                data.resize(end, 0);
            }
            data[pos..end].copy_from_slice(bytes);
        }
        Pending::Truncate { len } => data.resize(usize::try_from(*len).expect("a simulated file fits memory"), 0),
    }
}

type InodeRef = Rc<RefCell<Inode>>;

/// How a crash point tears the write it lands on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tear {
    /// The operation does not happen at all.
    None,
    /// The first `n` bytes of the write reach the file (pending, like any unsynced write).
    Prefix(usize),
    /// Not a crash: the first `n` bytes are written and the write reports `n` (see
    /// [`SimDisk::short_once`]).
    Short(usize),
}

/// What survives a crash of the pending (unsynced) operations and names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Survival {
    /// Only what was synced.
    SyncedOnly,
    /// Everything issued, including the torn part of the last write.
    Everything,
    /// A random subset (from this seed) of the pending blocks, truncations and names, applied
    /// in the order issued on top of what was synced.
    Subset(u64),
}

/// A seeded coin for [`Survival::Subset`].
struct Coin(u64);

impl Coin {
    fn flip(&mut self) -> bool {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 40) & 1 == 1
    }
}

/// `durable` with a random subset of `pending` applied in order (writes block by block).
fn some_of(durable: &[u8], pending: &[Pending], coin: &mut Coin) -> Vec<u8> {
    let mut data = durable.to_vec();
    for op in pending {
        match op {
            Pending::Write { pos, data: bytes } => {
                for (i, block) in bytes.chunks(usize::try_from(ALIGN).expect("4096 fits usize")).enumerate() {
                    if coin.flip() {
                        let at = *pos + i as u64 * ALIGN;
                        apply(&mut data, &Pending::Write { pos: at, data: block.to_vec() });
                    }
                }
            }
            Pending::Truncate { .. } => {
                if coin.flip() {
                    apply(&mut data, op);
                }
            }
        }
    }
    data
}

#[derive(Default)]
struct State {
    /// Names as the running process sees them.
    names: BTreeMap<PathBuf, InodeRef>,
    /// Names as they are on disk for certain.
    durable_names: BTreeMap<PathBuf, InodeRef>,
    dirs: BTreeSet<PathBuf>,
    ops: u64,
    crash: Option<(u64, Tear)>,
    crashed: bool,
    fail_once: Option<u64>,
    short_once: Option<(u64, usize)>,
    /// fdatasync calls wait (in [`crate::disk::Handle::fdatasync`]) while this is set.
    syncs_held: bool,
}

/// The simulated disk (one per test run; shared by every file opened on it).
#[derive(Default)]
pub struct SimDisk {
    state: RefCell<State>,
}

fn crashed_error() -> io::Error {
    io::Error::other("simulated crash: the disk is gone")
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{}: no such file", path.display()))
}

impl SimDisk {
    pub fn new() -> Rc<SimDisk> {
        Rc::new(SimDisk::default())
    }

    /// Makes operation number `op` (counting from 0) and every later one fail, tearing `op`
    /// as `tear` says when it is a write.
    pub fn crash_at(&self, op: u64, tear: Tear) {
        self.state.borrow_mut().crash = Some((op, tear));
    }

    /// Makes operation number `op` fail with ENOSPC, without effect; later ones work.
    pub fn fail_once(&self, op: u64) {
        self.state.borrow_mut().fail_once = Some(op);
    }

    /// Makes operation number `op`, a write, write only its first `keep` bytes and return
    /// that count; later operations work.
    pub fn short_once(&self, op: u64, keep: usize) {
        self.state.borrow_mut().short_once = Some((op, keep));
    }

    /// Holds every fdatasync (issued or to come) until called again with false: a sync that
    /// takes as long as the test wants, to see what proceeds meanwhile.
    pub fn hold_syncs(&self, hold: bool) {
        self.state.borrow_mut().syncs_held = hold;
    }

    pub fn syncs_held(&self) -> bool {
        self.state.borrow().syncs_held
    }

    /// Mutating operations issued so far (the crash points a run went through).
    pub fn ops(&self) -> u64 {
        self.state.borrow().ops
    }

    /// True once the crash point was reached.
    pub fn crashed(&self) -> bool {
        self.state.borrow().crashed
    }

    /// The disk a restart finds after the crash (or after the process simply stopped).
    pub fn after_crash(&self, survival: Survival) -> Rc<SimDisk> {
        let st = self.state.borrow();
        let mut coin = Coin(match survival {
            Survival::Subset(seed) => seed,
            _ => 0,
        });
        let names: BTreeMap<PathBuf, InodeRef> = match survival {
            Survival::SyncedOnly => st.durable_names.clone(),
            Survival::Everything => st.names.clone(),
            Survival::Subset(_) => {
                // Each name whose durable and current states differ ends in one or the other.
                let mut paths: BTreeSet<&PathBuf> = st.durable_names.keys().collect();
                paths.extend(st.names.keys());
                let mut out = BTreeMap::new();
                for p in paths {
                    let (d, c) = (st.durable_names.get(p), st.names.get(p));
                    let same = matches!((d, c), (Some(a), Some(b)) if Rc::ptr_eq(a, b));
                    if let Some(i) = if same || coin.flip() { c } else { d } {
                        out.insert(p.clone(), i.clone());
                    }
                }
                out
            }
        };
        let mut out = State { dirs: st.dirs.clone(), ..State::default() };
        for (path, inode) in &names {
            let i = inode.borrow();
            let data = match survival {
                Survival::SyncedOnly => i.durable.clone(),
                Survival::Everything => i.current.clone(),
                Survival::Subset(_) => some_of(&i.durable, &i.pending, &mut coin),
            };
            let copy = Rc::new(RefCell::new(Inode { durable: data.clone(), pending: Vec::new(), current: data }));
            out.names.insert(path.clone(), copy.clone());
            out.durable_names.insert(path.clone(), copy);
        }
        Rc::new(SimDisk { state: RefCell::new(out) })
    }

    /// Counts a mutating operation; Err when the machine has crashed at or before it. A crash
    /// landing here returns the tear to apply first.
    fn op(&self) -> Result<Option<Tear>, io::Error> {
        let mut st = self.state.borrow_mut();
        if st.crashed {
            return Err(crashed_error());
        }
        let n = st.ops;
        st.ops += 1;
        if st.fail_once == Some(n) {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        if let Some((_, keep)) = st.short_once.filter(|(at, _)| *at == n) {
            return Ok(Some(Tear::Short(keep)));
        }
        match st.crash {
            Some((at, tear)) if at == n => {
                st.crashed = true;
                Ok(Some(tear))
            }
            _ => Ok(None),
        }
    }

    fn lookup(&self, path: &Path) -> io::Result<InodeRef> {
        self.state.borrow().names.get(path).cloned().ok_or_else(|| not_found(path))
    }

    pub fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.state.borrow_mut();
        if st.crashed {
            return Err(crashed_error());
        }
        for a in dir.ancestors() {
            st.dirs.insert(a.to_path_buf());
        }
        Ok(())
    }

    /// File names directly in `dir`.
    pub fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let st = self.state.borrow();
        if !st.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        Ok(st
            .names
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_string))
            .collect())
    }

    pub fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        Ok(self.lookup(path)?.borrow().current.clone())
    }

    /// Replaces `path` with `bytes` atomically (temporary file + rename); `durable` adds the
    /// fsyncs of file and directory.
    pub fn write_file(&self, path: &Path, bytes: &[u8], durable: bool) -> io::Result<()> {
        if self.op()?.is_some() {
            return Err(crashed_error());
        }
        let inode = if durable {
            Inode { durable: bytes.to_vec(), pending: Vec::new(), current: bytes.to_vec() }
        } else {
            Inode {
                durable: Vec::new(),
                pending: vec![Pending::Write { pos: 0, data: bytes.to_vec() }],
                current: bytes.to_vec(),
            }
        };
        let inode = Rc::new(RefCell::new(inode));
        let mut st = self.state.borrow_mut();
        st.names.insert(path.to_path_buf(), inode.clone());
        if durable {
            st.durable_names.insert(path.to_path_buf(), inode);
        }
        Ok(())
    }

    pub fn remove_file(&self, path: &Path) -> io::Result<()> {
        if self.op()?.is_some() {
            return Err(crashed_error());
        }
        self.state.borrow_mut().names.remove(path).map(|_| ()).ok_or_else(|| not_found(path))
    }

    /// Renames `from` to `to`, replacing `to` (both names pending until `sync_dir`).
    pub fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        if self.op()?.is_some() {
            return Err(crashed_error());
        }
        let mut st = self.state.borrow_mut();
        let inode = st.names.remove(from).ok_or_else(|| not_found(from))?;
        st.names.insert(to.to_path_buf(), inode);
        Ok(())
    }

    /// Makes the names in `dir` durable.
    pub fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        if self.op()?.is_some() {
            return Err(crashed_error());
        }
        let mut st = self.state.borrow_mut();
        let st = &mut *st;
        st.durable_names.retain(|p, _| p.parent() != Some(dir));
        for (p, i) in st.names.iter().filter(|(p, _)| p.parent() == Some(dir)) {
            st.durable_names.insert(p.clone(), i.clone());
        }
        Ok(())
    }

    /// Opens `path`, creating it (it must not exist) with `create_new`.
    pub fn open(self: &Rc<Self>, path: &Path, create_new: bool) -> io::Result<SimFile> {
        if create_new {
            if self.op()?.is_some() {
                return Err(crashed_error());
            }
            let mut st = self.state.borrow_mut();
            if st.names.contains_key(path) {
                return Err(io::Error::new(io::ErrorKind::AlreadyExists, format!("{} exists", path.display())));
            }
            if path.parent().is_some_and(|d| !st.dirs.contains(d)) {
                return Err(not_found(path));
            }
            st.names.insert(path.to_path_buf(), Rc::default());
        }
        if self.state.borrow().crashed {
            return Err(crashed_error());
        }
        Ok(SimFile { disk: self.clone(), inode: self.lookup(path)? })
    }
}

/// An open file of a [`SimDisk`].
pub struct SimFile {
    disk: Rc<SimDisk>,
    inode: InodeRef,
}

impl SimFile {
    pub fn size(&self) -> io::Result<u64> {
        if self.disk.crashed() {
            return Err(crashed_error());
        }
        Ok(self.inode.borrow().current.len() as u64)
    }

    /// Up to `len` bytes at `pos` (fewer at the end of the file).
    pub fn read_at(&self, pos: u64, len: usize) -> io::Result<Bytes> {
        if self.disk.crashed() {
            return Err(crashed_error());
        }
        let i = self.inode.borrow();
        let start = usize::try_from(pos).unwrap_or(usize::MAX).min(i.current.len());
        let end = (start + len).min(i.current.len());
        Ok(Bytes::copy_from_slice(&i.current[start..end]))
    }

    fn push(&self, op: Pending) {
        let mut i = self.inode.borrow_mut();
        apply(&mut i.current, &op);
        i.pending.push(op);
    }

    /// An aligned write of `data` (its length a multiple of [`ALIGN`]) at `pos`.
    pub fn write_at(&self, pos: u64, data: &[u8]) -> io::Result<usize> {
        if !pos.is_multiple_of(ALIGN) || !(data.len() as u64).is_multiple_of(ALIGN) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("unaligned direct-I/O write: {} bytes at {pos}", data.len()),
            ));
        }
        match self.disk.op()? {
            None => {
                self.push(Pending::Write { pos, data: data.to_vec() });
                Ok(data.len())
            }
            Some(Tear::Prefix(n)) => {
                self.push(Pending::Write { pos, data: data[..n.min(data.len())].to_vec() });
                Err(crashed_error())
            }
            Some(Tear::Short(n)) => {
                let n = n.min(data.len());
                self.push(Pending::Write { pos, data: data[..n].to_vec() });
                Ok(n)
            }
            Some(Tear::None) => Err(crashed_error()),
        }
    }

    pub fn truncate(&self, len: u64) -> io::Result<()> {
        if self.disk.op()?.is_some() {
            return Err(crashed_error());
        }
        self.push(Pending::Truncate { len });
        Ok(())
    }

    pub fn disk(&self) -> &Rc<SimDisk> {
        &self.disk
    }

    pub fn fdatasync(&self) -> io::Result<()> {
        if self.disk.op()?.is_some() {
            return Err(crashed_error());
        }
        let mut i = self.inode.borrow_mut();
        i.durable = i.current.clone();
        i.pending.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsynced_writes_and_names_are_lost_or_kept_by_the_crash_mode() {
        let d = SimDisk::new();
        let dir = Path::new("/d");
        d.create_dir_all(dir).unwrap();
        let f = d.open(&dir.join("a"), true).unwrap();
        f.write_at(0, &[1; 4096]).unwrap();
        f.fdatasync().unwrap();
        d.sync_dir(dir).unwrap();
        f.write_at(4096, &[2; 4096]).unwrap();
        let g = d.open(&dir.join("b"), true).unwrap();
        g.write_at(0, &[3; 4096]).unwrap();
        g.fdatasync().unwrap();
        let synced = d.after_crash(Survival::SyncedOnly);
        assert_eq!(synced.read(&dir.join("a")).unwrap(), vec![1; 4096]);
        assert!(synced.read(&dir.join("b")).is_err(), "a name never synced is lost");
        let all = d.after_crash(Survival::Everything);
        assert_eq!(all.read(&dir.join("a")).unwrap().len(), 8192);
        assert_eq!(all.read(&dir.join("b")).unwrap(), vec![3; 4096]);
    }

    #[test]
    fn a_crash_point_tears_its_write_and_stops_everything_after() {
        let d = SimDisk::new();
        let dir = Path::new("/d");
        d.create_dir_all(dir).unwrap();
        let f = d.open(&dir.join("a"), true).unwrap(); // op 0
        d.crash_at(1, Tear::Prefix(100));
        assert!(f.write_at(0, &[7; 4096]).is_err());
        assert!(f.fdatasync().is_err());
        assert!(d.crashed());
        let after = d.after_crash(Survival::Everything);
        assert_eq!(after.read(&dir.join("a")).unwrap(), vec![7; 100]);
    }

    #[test]
    fn unaligned_writes_are_refused() {
        let d = SimDisk::new();
        d.create_dir_all(Path::new("/d")).unwrap();
        let f = d.open(Path::new("/d/a"), true).unwrap();
        assert!(f.write_at(1, &[0; 4096]).is_err());
        assert!(f.write_at(0, &[0; 100]).is_err());
        assert!(f.write_at(4096, &[0; 8192]).is_ok());
    }
}
