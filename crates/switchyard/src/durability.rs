//! Durability (A4): durable file writes and directory fsyncs batched per directory.
//!
//! Contract: [`write_durably`] leaves either the old file or the complete new one
//! under `name`, and returns only after the file and its directory entry are on
//! disk. [`DirSync`] collects the directories a run touched and fsyncs each exactly
//! once, so a run costs O(directories) fsyncs, not O(actions).

use rustix::fs::{fsync, openat, renameat, unlinkat, AtFlags, Mode, OFlags};
use std::collections::BTreeMap;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

/// Writes `bytes` to `dir/name` via a temporary name, fsync and rename, then fsyncs
/// `dir`.
pub fn write_durably(dir: BorrowedFd<'_>, name: &str, bytes: &[u8]) -> io::Result<()> {
    write_renamed(dir, name, bytes)?;
    fsync(dir)?;
    Ok(())
}

/// Writes `bytes` to `dir/name` via a temporary name (`.<name>.tmp`, mode 0600), fsync
/// of the file and rename over `name`, but does not fsync `dir`: the caller makes the
/// entry durable with a later fsync of `dir` it does anyway. A failed write or rename
/// removes the temporary file.
pub fn write_renamed(dir: BorrowedFd<'_>, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = format!(".{name}.tmp");
    let flags =
        OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = openat(dir, tmp.as_str(), flags, Mode::from_raw_mode(0o600))?;
    let mut f = std::fs::File::from(fd);
    let r = f.write_all(bytes).and_then(|()| f.sync_all());
    if let Err(e) = r {
        let _ = unlinkat(dir, tmp.as_str(), AtFlags::empty());
        return Err(e);
    }
    if let Err(e) = renameat(dir, tmp.as_str(), dir, name) {
        let _ = unlinkat(dir, tmp.as_str(), AtFlags::empty());
        return Err(e.into());
    }
    Ok(())
}

/// Removes `dir/name` (if present) and fsyncs `dir`.
pub fn remove_durably(dir: BorrowedFd<'_>, name: &str) -> io::Result<()> {
    match unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) | Err(rustix::io::Errno::NOENT) => {}
        Err(e) => return Err(e.into()),
    }
    fsync(dir)?;
    Ok(())
}

/// Opens (creating if needed, with `mode`) the subdirectory `name` of `dir`, without
/// following symlinks. A newly created directory's entry is made durable.
pub fn ensure_dir<P: rustix::path::Arg + Copy>(
    dir: BorrowedFd<'_>,
    name: P,
    mode: u32,
) -> io::Result<OwnedFd> {
    match rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(mode)) {
        Ok(()) => fsync(dir)?,
        Err(rustix::io::Errno::EXIST) => {}
        Err(e) => return Err(e.into()),
    }
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    Ok(openat(dir, name, flags, Mode::empty())?)
}

/// Directories touched by a run, each to be fsynced once. It shares the caller's
/// descriptors (no `dup`): a run holds one per directory and one per store.
#[derive(Default)]
pub struct DirSync {
    dirs: BTreeMap<String, Arc<OwnedFd>>,
}

impl DirSync {
    /// Notes that `dir` (root-relative name `key`) was changed.
    pub fn touch(&mut self, key: &str, dir: &Arc<OwnedFd>) {
        if !self.dirs.contains_key(key) {
            self.dirs.insert(key.to_owned(), Arc::clone(dir));
        }
    }

    /// fsyncs every touched directory once; returns how many.
    pub fn sync(&mut self) -> io::Result<usize> {
        let n = self.dirs.len();
        for fd in self.dirs.values() {
            fsync(fd.as_fd())?;
        }
        self.dirs.clear();
        Ok(n)
    }
}
