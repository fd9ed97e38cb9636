//! Deleted segment files, freed a bite at a time: the blocks of a large file are freed (and,
//! on a `discard` mount, trimmed) in the syscall that drops its last name or descriptor, which
//! holds the device for about 1 ms per 4 MiB here, so unlinking a 1 GiB segment stalled every
//! durable write of the host for 130 ms (ARCHITECTURE.md, "Deleted segments").
//!
//! Contract:
//! - [`retire`] takes a segment's log file out of its log's names at once: renamed to
//!   `<name>.<unique>.deleted`, a name no scan takes for a segment, and queued with its topic's
//!   `file.delete.delay.ms` (Kafka keeps a deleted segment under a `.deleted` name as long) and
//!   a weak reference to the [`SegFile`] readers hold. [`set_aside`] with [`Aside::Link`] gives
//!   a file about to be replaced by a rename (compaction's swap) its `.deleted` name by a hard
//!   link, and [`queue`] then takes the link. [`set_aside`] alone makes the choice between
//!   the real disk and the simulated one.
//! - The shard's reclaiming task frees a queued file once its delay has passed and no reader
//!   holds it: cut `SEGMENT_RECLAIM_STEP_BYTES` at a time, each cut in a moment with none of
//!   the shard's request-path writes and syncs in flight (or after
//!   `SEGMENT_RECLAIM_IDLE_CHECKS` checks, so a busy shard still frees its space), then
//!   unlinked. A due file a reader still holds is looked at again
//!   `SEGMENT_RECLAIM_HOLDER_RETRY_MS` later while the others go on; one still held
//!   `SEGMENT_RECLAIM_HOLDER_WAIT_MS` after it was first found held is unlinked without cuts:
//!   a reader never sees a file shrink under it.
//! - [`retire_dir`] does the same for a closed partition's whole directory (renamed to a
//!   `.deleted` name at once; each file freed as above; the directory removed after its last).
//! - `.deleted` files found when a log opens, and `.deleted` directories in the data directory
//!   at start (a stop or a crash left them), are queued with no delay ([`sweep`],
//!   [`sweep_data_dir`]).
//! - On the simulated disk a retired file is removed at once and nothing is queued.
//! - After [`stop`] (the executor is ending, `disk::settle`) the task starts no blocking job;
//!   what is left in the queue stays on disk for the next open's sweep.
//! - Every `RefCell` borrow of the queue ends before an `.await`.

use crate::disk::{blocking, Disk};
use crate::file::SegFile;
use sluice_core::limits::{
    SEGMENT_RECLAIM_HOLDER_RETRY_MS, SEGMENT_RECLAIM_HOLDER_WAIT_MS, SEGMENT_RECLAIM_IDLE_CHECKS,
    SEGMENT_RECLAIM_POLL_MS, SEGMENT_RECLAIM_STEP_BYTES,
};
use std::cell::{Cell, RefCell};
use std::io;
use std::path::{Path, PathBuf};
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const SUFFIX: &str = ".deleted";

/// One deleted file waiting to be freed.
struct Entry {
    path: PathBuf,
    due: Instant,
    /// What readers hold of the file while it was a segment (dangling for a swept file).
    holder: Weak<SegFile>,
    /// The deleted directory the file is in, removed after its last file.
    dir: Option<Rc<DeletedDir>>,
    /// When the task first found the file due but still held by a reader.
    held_since: Option<Instant>,
}

/// A deleted partition directory and how many of its files are not freed yet.
struct DeletedDir {
    path: PathBuf,
    left: Cell<usize>,
}

/// One shard's queue of deleted files.
#[derive(Default)]
struct Reclaimer {
    queue: RefCell<Vec<Entry>>,
    /// The task is running (it drains the queue, then ends).
    running: Cell<bool>,
    /// The executor is ending: no more blocking jobs.
    stopped: Cell<bool>,
}

thread_local! {
    /// The reclaimer of the executor running on this thread.
    static RECLAIMER: crate::executor_local::Slot<Reclaimer> = const { RefCell::new(None) };
}

fn reclaimer() -> Rc<Reclaimer> {
    crate::executor_local::get(&RECLAIMER)
}

/// A `.deleted` name for `path` that no other file of this or an earlier process took: the
/// process's start time in nanoseconds and a count.
pub(crate) fn deleted_name(path: &Path) -> PathBuf {
    static START: OnceLock<u128> = OnceLock::new();
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let start = START
        .get_or_init(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    let n = COUNT.fetch_add(1, Ordering::Relaxed);
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{start}-{n}{SUFFIX}"));
    PathBuf::from(name)
}

/// Whether a file name is one [`deleted_name`] gives.
pub(crate) fn is_deleted_name(name: &str) -> bool {
    name.ends_with(SUFFIX)
}

/// How [`set_aside`] gives a file its `.deleted` name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Aside {
    /// The file leaves its name (on the simulated disk: removed at once).
    Rename,
    /// The file keeps its name too, until a rename replaces it (on the simulated disk: left
    /// as it is, and the rename frees it).
    Link,
}

/// Gives the file at `path` a `.deleted` name ([`deleted_name`]) and returns it, or `None` on
/// the simulated disk, where nothing is kept for later freeing. The one place that chooses
/// between keeping a deleted file (the real disk) and dropping it (the simulated one).
pub(crate) async fn set_aside(disk: &Disk, path: &Path, how: Aside) -> io::Result<Option<PathBuf>> {
    match (disk, how) {
        (Disk::Sim(_), Aside::Rename) => disk.remove_file_off_thread(path).await.map(|()| None),
        (Disk::Sim(_), Aside::Link) => Ok(None),
        (Disk::Real, Aside::Rename) => {
            let to = deleted_name(path);
            disk.rename_off_thread(path, &to).await.map(|()| Some(to))
        }
        (Disk::Real, Aside::Link) => {
            let (from, to) = (path.to_path_buf(), deleted_name(path));
            let link = to.clone();
            blocking(move || std::fs::hard_link(&from, &link)).await.map(|()| Some(to))
        }
    }
}

/// Takes the file at `path` out of its log's names and queues it (module contract).
pub(crate) async fn retire(disk: &Disk, path: &Path, delay: Duration, holder: Weak<SegFile>) -> io::Result<()> {
    if let Some(to) = set_aside(disk, path, Aside::Rename).await? {
        queue(to, delay, holder);
    }
    Ok(())
}

/// Queues a `.deleted` file, freed `delay` from now once `holder` is gone.
pub(crate) fn queue(path: PathBuf, delay: Duration, holder: Weak<SegFile>) {
    push(Entry { path, due: Instant::now() + delay, holder, dir: None, held_since: None });
}

fn push(e: Entry) {
    let r = reclaimer();
    r.queue.borrow_mut().push(e);
    if !r.stopped.get() && !r.running.replace(true) {
        glommio::spawn_local(run(r)).detach();
    }
}

/// Deletes a closed partition's directory (its topic deleted, or its replica moved away):
/// renamed to `<dir>.<unique>.deleted` at once (its name is free for a new partition), then
/// each file in it freed `delay` from now as a deleted segment's, and the directory removed
/// after its last file.
/// `holders` names the segment files readers may still hold.
pub(crate) async fn retire_dir(dir: &Path, delay: Duration, holders: Vec<(String, Weak<SegFile>)>) -> io::Result<()> {
    let to = deleted_name(dir);
    Disk::Real.rename_off_thread(dir, &to).await?;
    queue_dir(to, delay, holders).await
}

/// Queues every file of the deleted directory `dir`, each with its holder in `holders`.
async fn queue_dir(dir: PathBuf, delay: Duration, mut holders: Vec<(String, Weak<SegFile>)>) -> io::Result<()> {
    let names = Disk::Real.list(&dir).await?;
    let group = Rc::new(DeletedDir { path: dir.clone(), left: Cell::new(names.len()) });
    if names.is_empty() {
        return blocking(move || std::fs::remove_dir_all(&dir)).await;
    }
    let due = Instant::now() + delay;
    for n in names {
        let holder = holders.iter().position(|(h, _)| *h == n).map_or_else(Weak::new, |i| holders.swap_remove(i).1);
        push(Entry { path: dir.join(n), due, holder, dir: Some(group.clone()), held_since: None });
    }
    Ok(())
}

/// Queues, with no delay, the deleted partition directories a stop or a crash left in the
/// data directory `data_dir`.
pub async fn sweep_data_dir(data_dir: &Path) {
    let names = match Disk::Real.list(data_dir).await {
        Ok(n) => n,
        Err(e) => return tracing::warn!(dir = %data_dir.display(), error = %e, "cannot list the data directory"),
    };
    for name in names.iter().filter(|n| is_deleted_name(n)) {
        let dir = data_dir.join(name);
        tracing::info!(dir = %dir.display(), "freeing a deleted partition directory left by the last run");
        if let Err(e) = queue_dir(dir.clone(), Duration::ZERO, Vec::new()).await {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot free a deleted partition directory");
        }
    }
}

/// Queues, with no delay, the `.deleted` files among `names` (those of `dir`).
pub(crate) async fn sweep(disk: &Disk, dir: &Path, names: &[String]) {
    for name in names.iter().filter(|n| is_deleted_name(n)) {
        let path = dir.join(name);
        tracing::info!(file = %path.display(), "freeing a deleted segment file left by the last run");
        match disk {
            Disk::Sim(_) => {
                if let Err(e) = disk.remove_file_off_thread(&path).await {
                    tracing::warn!(file = %path.display(), error = %e, "could not remove a deleted segment file");
                }
            }
            Disk::Real => queue(path, Duration::ZERO, Weak::new()),
        }
    }
}

/// Ends this executor's reclaiming: no blocking job starts after this returns.
pub(crate) fn stop() {
    reclaimer().stopped.set(true);
}

/// The files queued and not yet taken by the task (for tests).
pub fn queued() -> usize {
    reclaimer().queue.borrow().len()
}

async fn run(r: Rc<Reclaimer>) {
    loop {
        let next = r.queue.borrow().iter().enumerate().min_by_key(|(_, e)| e.due).map(|(i, e)| (i, e.due));
        let Some((i, due)) = next.filter(|_| !r.stopped.get()) else {
            r.running.set(false);
            return;
        };
        let now = Instant::now();
        if due > now {
            glommio::timer::sleep((due - now).min(Duration::from_millis(SEGMENT_RECLAIM_POLL_MS))).await;
            continue;
        }
        let mut entry = r.queue.borrow_mut().swap_remove(i);
        // A file a reader still holds waits its turn again, without holding up the others.
        let held = entry.holder.strong_count() > 0;
        let held_for = if held { now.duration_since(*entry.held_since.get_or_insert(now)) } else { Duration::ZERO };
        if held && held_for < Duration::from_millis(SEGMENT_RECLAIM_HOLDER_WAIT_MS) {
            entry.due = now + Duration::from_millis(SEGMENT_RECLAIM_HOLDER_RETRY_MS);
            r.queue.borrow_mut().push(entry);
            continue;
        }
        let dir = entry.dir.take();
        free(&r, &entry.path, !held).await;
        if let Some(d) = dir {
            finish_dir(&r, &d).await;
        }
    }
}

/// Counts one file of a deleted directory done; removes the directory after its last one.
async fn finish_dir(r: &Reclaimer, d: &DeletedDir) {
    let left = d.left.get().checked_sub(1).expect("a deleted directory's files are counted once");
    d.left.set(left);
    if left > 0 || r.stopped.get() {
        return;
    }
    let path = d.path.clone();
    if let Err(e) = blocking(move || std::fs::remove_dir_all(&path)).await {
        warn(&d.path, "remove", &e);
    }
}

/// Frees one file: cut down in steps (when `cut_first`: no reader holds it), then unlinked.
async fn free(r: &Reclaimer, path: &Path, cut_first: bool) {
    let started = Instant::now();
    let mut bytes_cut = 0;
    if cut_first {
        let mut len = match file_len(r, path).await {
            Some(Ok(n)) => n,
            Some(Err(err)) => return warn(path, "stat", &err),
            None => return,
        };
        bytes_cut = len;
        while len > 0 {
            idle().await;
            len = len.saturating_sub(SEGMENT_RECLAIM_STEP_BYTES);
            match cut(r, path, len).await {
                Some(Ok(())) => {}
                Some(Err(err)) => return warn(path, "cut", &err),
                None => return,
            }
        }
    } else {
        tracing::warn!(file = %path.display(), "a deleted segment is still read; removing it without freeing it in steps");
    }
    if r.stopped.get() {
        return;
    }
    match Disk::Real.remove_file_off_thread(path).await {
        Ok(()) => {
            tracing::debug!(file = %path.display(), bytes_cut, elapsed_ms = started.elapsed().as_millis(), "freed a deleted segment file")
        }
        Err(err) => warn(path, "remove", &err),
    }
}

/// The file's size; `None` once the executor is ending.
async fn file_len(r: &Reclaimer, path: &Path) -> Option<io::Result<u64>> {
    if r.stopped.get() {
        return None;
    }
    let path = path.to_path_buf();
    Some(blocking(move || std::fs::metadata(&path).map(|m| m.len())).await)
}

/// Cuts the file to `len` bytes; `None` once the executor is ending.
async fn cut(r: &Reclaimer, path: &Path, len: u64) -> Option<io::Result<()>> {
    if r.stopped.get() {
        return None;
    }
    let path = path.to_path_buf();
    Some(blocking(move || std::fs::OpenOptions::new().write(true).open(&path)?.set_len(len)).await)
}

fn warn(path: &Path, what: &str, err: &io::Error) {
    if err.kind() != io::ErrorKind::NotFound {
        tracing::warn!(file = %path.display(), error = %err, "could not {what} a deleted segment file");
    }
}

/// Waits for a moment with none of the shard's request-path writes and syncs in flight, at
/// most `SEGMENT_RECLAIM_IDLE_CHECKS` checks (then the cut goes anyway).
async fn idle() {
    crate::inflight::wait_for_no_io(SEGMENT_RECLAIM_IDLE_CHECKS).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deleted_names_are_unique_and_never_taken_for_segments() {
        let p = Path::new("/d/00000000000000000000.log");
        let (a, b) = (deleted_name(p), deleted_name(p));
        assert_ne!(a, b);
        for n in [&a, &b] {
            let name = n.file_name().and_then(|f| f.to_str()).expect("a name");
            assert!(name.starts_with("00000000000000000000.log.") && is_deleted_name(name));
            assert!(name.strip_suffix(".log").is_none(), "a segment scan takes names ending in .log");
        }
        assert!(!is_deleted_name("00000000000000000000.log"));
    }

    fn run<F: std::future::Future<Output = ()> + 'static>(f: impl FnOnce() -> F + Send + 'static) {
        glommio::LocalExecutorBuilder::default().spawn(move || async move { f().await }).unwrap().join().unwrap();
    }

    /// Waits (at most 5 s) until `path` is gone; whether it went.
    async fn gone(path: &Path) -> bool {
        for _ in 0..500 {
            if !path.exists() {
                return true;
            }
            glommio::timer::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    #[test]
    fn a_file_is_freed_in_steps_once_its_reader_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("00000000000000000000.log");
        // Three cuts' worth of written blocks.
        let len = 2 * SEGMENT_RECLAIM_STEP_BYTES + 4096;
        std::fs::write(&path, vec![7u8; usize::try_from(len).unwrap()]).unwrap();
        let other = dir.path().join("00000000000000000100.log");
        std::fs::write(&other, b"y").unwrap();
        run(move || async move {
            let reader = SegFile::existing(&Disk::Real, path.clone());
            retire(&Disk::Real, &path, Duration::ZERO, Rc::downgrade(&reader)).await.unwrap();
            assert!(!path.exists(), "the segment's name is free at once");
            let names: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().map(|e| e.unwrap().path()).collect();
            let [kept] = &names.iter().filter(|p| **p != other).collect::<Vec<_>>()[..] else { panic!("{names:?}") };
            // A file queued after it, no longer read, does not wait behind it.
            retire(&Disk::Real, &other, Duration::ZERO, Weak::new()).await.unwrap();
            glommio::timer::sleep(Duration::from_millis(100)).await;
            assert_eq!(std::fs::read_dir(path.parent().unwrap()).unwrap().count(), 1, "the unheld file is freed");
            assert_eq!(std::fs::metadata(kept).unwrap().len(), len, "not cut while a reader holds it");
            drop(reader);
            assert!(gone(kept).await, "freed once the reader let go");
            assert_eq!(queued(), 0);
        });
    }

    #[test]
    fn a_deleted_directory_frees_its_name_at_once_and_goes_after_its_files() {
        let data = tempfile::tempdir().unwrap();
        let (dir, left) = (data.path().join("t-0"), data.path().join("u-0.1-2.deleted"));
        for d in [&dir, &left] {
            std::fs::create_dir(d).unwrap();
            std::fs::write(d.join("00000000000000000000.log"), vec![1u8; 5 << 20]).unwrap();
            std::fs::write(d.join("log-start-offset"), b"0\n").unwrap();
        }
        let data_dir = data.path().to_path_buf();
        run(move || async move {
            retire_dir(&dir, Duration::from_millis(200), Vec::new()).await.unwrap();
            assert!(!dir.exists(), "the partition's name is free at once");
            let deleted: Vec<_> = std::fs::read_dir(&data_dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p != &left && is_deleted_name(p.to_str().unwrap()))
                .collect();
            let [renamed] = &deleted[..] else { panic!("{deleted:?}") };
            glommio::timer::sleep(Duration::from_millis(100)).await;
            assert!(renamed.join("00000000000000000000.log").exists(), "freed before its delay");
            assert!(gone(renamed).await, "the directory goes after its files");
            // One a stop left behind: found at start.
            sweep_data_dir(&data_dir).await;
            assert!(gone(&left).await);
        });
    }

    #[test]
    fn after_stop_nothing_is_freed_and_the_file_stays_for_the_next_sweep() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("00000000000000000042.log");
        std::fs::write(&path, b"x").unwrap();
        run(move || async move {
            stop();
            retire(&Disk::Real, &path, Duration::ZERO, Weak::new()).await.unwrap();
            glommio::timer::sleep(Duration::from_millis(50)).await;
            let names: Vec<String> = std::fs::read_dir(path.parent().unwrap())
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            assert!(names.len() == 1 && is_deleted_name(&names[0]), "{names:?}");
        });
    }
}
