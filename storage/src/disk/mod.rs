//! The file layer under the storage engine: the real disk (glommio DMA files, O_DIRECT through
//! io_uring, plus small metadata files through `std::fs`), or a [`sim::SimDisk`] for the crash
//! tests. Every file operation of the engine goes through here, so the simulated disk sees
//! exactly what the real one would.
//!
//! Contract: [`Handle::write_buf`] writes whole [`ALIGN`]-sized blocks at an aligned position
//! and returns the count written, which is short when the disk filled part way (the caller
//! checks it); reads may be unaligned. Small files (indexes, snapshots, the log start) are
//! replaced whole and atomically by [`Disk::write_file_off_thread`]. Nothing here blocks the
//! executor's thread on the real disk: segment files go through io_uring, a directory fsync
//! too ([`Disk::sync_dir`], glommio `Directory`), and every `std::fs` call (small files,
//! directory creation, listing, removal) runs on glommio's blocking thread pool
//! (`spawn_blocking`). On the simulated disk every operation completes at once, in the order
//! issued (an fdatasync waits first while a test holds syncs).

pub mod sim;

use bytes::Bytes;
use glommio::io::{DmaFile, OpenOptions};
use sim::{SimDisk, SimFile};
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// Alignment of direct-I/O writes and of the in-memory tail (a multiple of any device's
/// logical block size).
pub const ALIGN: u64 = sim::ALIGN;

pub fn align_down(v: u64) -> u64 {
    v - v % ALIGN
}

pub fn align_up(v: u64) -> u64 {
    v.div_ceil(ALIGN) * ALIGN
}

/// Which disk a log lives on.
#[derive(Clone, Default)]
pub enum Disk {
    #[default]
    Real,
    Sim(Rc<SimDisk>),
}

impl Disk {
    pub fn is_real(&self) -> bool {
        matches!(self, Disk::Real)
    }

    /// Creates `dir` and its missing parents.
    pub(crate) async fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        match self {
            Disk::Real => {
                let dir = dir.to_path_buf();
                blocking(move || std::fs::create_dir_all(&dir)).await
            }
            Disk::Sim(d) => d.create_dir_all(dir),
        }
    }

    /// Names of the files in `dir`.
    pub(crate) async fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        match self {
            Disk::Real => {
                let dir = dir.to_path_buf();
                blocking(move || {
                    Ok(std::fs::read_dir(&dir)?
                        .filter_map(|e| e.ok())
                        .filter_map(|e| e.file_name().into_string().ok())
                        .collect())
                })
                .await
            }
            Disk::Sim(d) => d.list(dir),
        }
    }

    /// The whole content of each of a few small files, read in one trip to the blocking pool.
    pub(crate) async fn read_files<const N: usize>(&self, paths: [PathBuf; N]) -> [io::Result<Vec<u8>>; N] {
        match self {
            Disk::Real => blocking(move || paths.map(std::fs::read)).await,
            Disk::Sim(d) => paths.map(|p| d.read(&p)),
        }
    }

    /// Replaces a small file so that a crash leaves the old or the new content: a temporary
    /// file and a rename; `durable` adds the fsyncs of file and directory. Off the executor
    /// thread for the real disk, so its syscalls (and fsyncs) do not stall the shard.
    pub(crate) async fn write_file_off_thread(&self, path: &Path, bytes: Vec<u8>, durable: bool) -> io::Result<()> {
        match self {
            Disk::Real => {
                let path = path.to_path_buf();
                blocking(move || write_real_file(&path, &bytes, durable)).await
            }
            Disk::Sim(d) => d.write_file(path, &bytes, durable),
        }
    }

    /// Makes the entries of `dir` durable (fsync of the directory, through io_uring for the
    /// real disk).
    pub async fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        match self {
            Disk::Real => {
                let d = glommio::io::Directory::open(dir).await.map_err(io::Error::from)?;
                let synced = d.sync().await.map_err(io::Error::from);
                let closed = d.close().await.map_err(io::Error::from);
                synced.and(closed)
            }
            Disk::Sim(d) => d.sync_dir(dir),
        }
    }

    /// [`Disk::write_file_off_thread`] on the calling thread: blocking, for tools and tests
    /// (`producers::save_snapshot`), never called by a running log.
    pub(crate) fn write_file(&self, path: &Path, bytes: &[u8], durable: bool) -> io::Result<()> {
        match self {
            Disk::Real => write_real_file(path, bytes, durable),
            Disk::Sim(d) => d.write_file(path, bytes, durable),
        }
    }

    /// Removes a file (off the executor thread for the real disk: unlinking a large file frees
    /// its extents, which can take milliseconds).
    pub(crate) async fn remove_file_off_thread(&self, path: &Path) -> io::Result<()> {
        match self {
            Disk::Real => {
                let path = path.to_path_buf();
                blocking(move || std::fs::remove_file(&path)).await
            }
            Disk::Sim(d) => d.remove_file(path),
        }
    }

    /// Renames `from` to `to`, replacing `to` atomically (off the executor thread for the real
    /// disk). Durable only after [`Disk::sync_dir`] of the directory.
    pub(crate) async fn rename_off_thread(&self, from: &Path, to: &Path) -> io::Result<()> {
        match self {
            Disk::Real => {
                let (from, to) = (from.to_path_buf(), to.to_path_buf());
                blocking(move || std::fs::rename(&from, &to)).await
            }
            Disk::Sim(d) => d.rename(from, to),
        }
    }

    /// Opens a file for reading and writing; `create_new` creates it and fails if it exists.
    pub(crate) async fn open(&self, path: &Path, create_new: bool) -> io::Result<Handle> {
        match self {
            Disk::Real => {
                let mut o = OpenOptions::new();
                o.read(true).write(true);
                if create_new {
                    o.create_new(true);
                }
                Ok(Handle::Real(o.dma_open(path).await.map_err(io::Error::from)?))
            }
            Disk::Sim(d) => Ok(Handle::Sim(d.open(path, create_new)?)),
        }
    }
}

thread_local! {
    /// Jobs this executor has on its blocking pool and not yet taken back (see `settle`).
    static BLOCKING_IN_FLIGHT: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Counts one blocking job in flight for as long as it lives.
struct InFlight;

impl InFlight {
    fn start() -> InFlight {
        BLOCKING_IN_FLIGHT.with(|n| n.set(n.get() + 1));
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        BLOCKING_IN_FLIGHT.with(|n| n.set(n.get().checked_sub(1).expect("a blocking job is counted once")));
    }
}

/// Runs `f` on the executor's blocking thread pool. Every blocking job of the process goes
/// through here, so that `settle` can wait for them before an executor ends.
pub async fn blocking<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    let _counted = InFlight::start();
    glommio::executor().spawn_blocking(f).await
}

/// Waits (at most `max`) until this executor has no blocking job in flight, after ending its
/// freeing of deleted segments (which would start more). An executor must not end while one
/// runs: glommio's pool thread then fails to hand back the result and panics, which aborts the
/// whole process. Returns the jobs still in flight at the deadline.
pub async fn settle(max: std::time::Duration) -> usize {
    crate::reclaim::stop();
    let deadline = std::time::Instant::now() + max;
    loop {
        let left = BLOCKING_IN_FLIGHT.with(|n| n.get());
        if left == 0 || std::time::Instant::now() >= deadline {
            return left;
        }
        glommio::timer::sleep(std::time::Duration::from_millis(5)).await;
    }
}

fn write_real_file(path: &Path, bytes: &[u8], durable: bool) -> io::Result<()> {
    use std::io::Write;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    if durable {
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if durable {
        if let Some(d) = path.parent() {
            std::fs::File::open(d)?.sync_all()?;
        }
    }
    Ok(())
}

/// Memory a write is issued from: aligned DMA memory for the real disk.
pub(crate) enum WriteBuf {
    Dma(glommio::io::DmaBuffer),
    Mem(Vec<u8>),
}

impl WriteBuf {
    pub fn as_mut(&mut self) -> &mut [u8] {
        match self {
            WriteBuf::Dma(b) => b.as_bytes_mut(),
            WriteBuf::Mem(v) => v,
        }
    }
}

/// An open file.
pub(crate) enum Handle {
    Real(DmaFile),
    Sim(SimFile),
}

impl Handle {
    pub async fn size(&self) -> io::Result<u64> {
        match self {
            Handle::Real(f) => f.file_size().await.map_err(io::Error::from),
            Handle::Sim(f) => f.size(),
        }
    }

    /// Up to `len` bytes at `pos` (fewer only at the end of the file).
    pub async fn read_at(&self, pos: u64, len: usize) -> io::Result<Bytes> {
        match self {
            Handle::Real(f) => {
                let r = f.read_at(pos, len).await.map_err(io::Error::from)?;
                Ok(Bytes::copy_from_slice(&r[..]))
            }
            Handle::Sim(f) => f.read_at(pos, len),
        }
    }

    /// A buffer for [`Handle::write_buf`] of `len` bytes (a multiple of [`ALIGN`]).
    pub fn alloc(&self, len: usize) -> WriteBuf {
        debug_assert_eq!(len as u64 % ALIGN, 0, "unaligned write buffer");
        match self {
            Handle::Real(f) => WriteBuf::Dma(f.alloc_dma_buffer(len)),
            Handle::Sim(_) => WriteBuf::Mem(vec![0; len]),
        }
    }

    /// Writes the whole buffer at the aligned `pos`; returns the bytes written.
    pub async fn write_buf(&self, pos: u64, buf: WriteBuf) -> io::Result<usize> {
        debug_assert_eq!(pos % ALIGN, 0, "unaligned write position");
        match (self, buf) {
            (Handle::Real(f), WriteBuf::Dma(b)) => f.write_at(b, pos).await.map_err(io::Error::from),
            (Handle::Sim(f), WriteBuf::Mem(b)) => f.write_at(pos, &b),
            _ => Err(io::Error::other("a write buffer of another disk")),
        }
    }

    pub async fn fdatasync(&self) -> io::Result<()> {
        match self {
            Handle::Real(f) => f.fdatasync().await.map_err(io::Error::from),
            Handle::Sim(f) => {
                // Bounded: a test that forgets to release fails here after a minute.
                for _ in 0..sluice_core::limits::SIM_SYNC_HOLD_MAX_MS {
                    if !f.disk().syncs_held() {
                        break;
                    }
                    glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
                }
                f.fdatasync()
            }
        }
    }

    pub async fn truncate(&self, len: u64) -> io::Result<()> {
        match self {
            Handle::Real(f) => f.truncate(len).await.map_err(io::Error::from),
            Handle::Sim(f) => f.truncate(len),
        }
    }

    /// Reserves blocks up to `len` without changing the file size (fallocate KEEP_SIZE), so
    /// that later appends do not allocate blocks one write at a time.
    pub async fn reserve(&self, len: u64) -> io::Result<()> {
        match self {
            Handle::Real(f) => f.pre_allocate(len, true).await.map_err(io::Error::from),
            Handle::Sim(_) => Ok(()),
        }
    }
}
