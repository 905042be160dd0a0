//! The data-directory lock: one process per data directory.
//!
//! An exclusive `flock` on `<dir>/LOCK`, held for the life of the process and
//! released by the kernel when the process dies (also on kill -9). The file
//! holds the owner's pid so the refusal can name it.

use super::{io_err, WalError};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;

/// Holds the lock until dropped.
#[derive(Debug)]
pub struct DirLock {
    /// None for a log on a simulated disk, which has no directory to lock.
    _file: Option<File>,
}

impl DirLock {
    pub fn acquire(dir: &Path) -> Result<DirLock, WalError> {
        let path = dir.join("LOCK");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(super::FILE_MODE)
            .open(&path)
            .map_err(io_err(&path))?;
        // SAFETY: flock is called on a descriptor this function owns.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let pid = pid.trim();
            return Err(WalError::Locked {
                dir: dir.to_path_buf(),
                pid: if pid.is_empty() {
                    "unknown".into()
                } else {
                    pid.to_string()
                },
                lock: path,
            });
        }
        file.set_len(0).map_err(io_err(&path))?;
        file.seek(SeekFrom::Start(0)).map_err(io_err(&path))?;
        write!(file, "{}", std::process::id()).map_err(io_err(&path))?;
        file.sync_all().map_err(io_err(&path))?;
        Ok(DirLock { _file: Some(file) })
    }

    /// No lock: for a log on a simulated disk (`sim` feature), where the
    /// harness guarantees one node per disk.
    #[cfg(feature = "sim")]
    pub fn none() -> DirLock {
        DirLock { _file: None }
    }
}
