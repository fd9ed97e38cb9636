//! Start-up probe of direct I/O on the data directory's device.
//!
//! glommio decides per device and per thread whether to use the io_uring poll ring by reading
//! the first file it opens; on an empty file that read succeeds without reaching the device,
//! so a device without polled-I/O support (virtio disks, for one) is wrongly marked pollable
//! and every later read fails with EOPNOTSUPP. Each shard therefore opens a probe file holding
//! real data first. The probe also proves O_DIRECT works there, or says precisely that it
//! does not.
//!
//! Contract: after [`probe_direct_io`] returned Ok on a thread, DMA files in `dir` on that
//! thread read and write correctly.

use crate::StorageError;
use glommio::io::DmaFile;
use std::cell::Cell;
use std::path::Path;

thread_local!(static PROBED: Cell<bool> = const { Cell::new(false) });

const PROBE_BYTES: usize = 8192;

/// Probes once per thread; later calls return at once.
pub async fn probe_direct_io(dir: &Path) -> Result<(), StorageError> {
    if PROBED.with(|p| p.get()) {
        return Ok(());
    }
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = dir.join(format!(".direct-io-probe-{}-{n}", std::process::id()));
    let shown = path.display().to_string();
    std::fs::write(&path, vec![0x5a; PROBE_BYTES]).map_err(|e| StorageError::io("write probe file", &shown, e))?;
    let result = async {
        let file = DmaFile::open(&path).await.map_err(|e| {
            StorageError::io("open with O_DIRECT (the data directory's filesystem must support direct I/O)", &shown, e)
        })?;
        let data = file.read_at(0, 4096).await.map_err(|e| StorageError::io("direct-I/O read", &shown, e))?;
        if data.len() != 4096 || data.iter().any(|b| *b != 0x5a) {
            return Err(StorageError::io("direct-I/O read", &shown, std::io::Error::other("read back wrong bytes")));
        }
        file.close().await.map_err(|e| StorageError::io("close", &shown, e))?;
        Ok(())
    }
    .await;
    let _ = std::fs::remove_file(&path);
    result?;
    PROBED.with(|p| p.set(true));
    Ok(())
}
