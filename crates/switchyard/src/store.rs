//! The backup store (S8, R6): one root-only directory beside the targets of a
//! directory, holding every kept original and every staged node of that directory.
//!
//! Contract:
//! - The store of directory `D` is `D/.switchyard` ([`STORE_DIR`]), mode `0700`, owned
//!   by the effective user (root in production). A node inside it cannot be opened,
//!   executed or linked by anyone else: path resolution stops at the store's search
//!   permission. So a kept setuid-root `sudo` or a binary with file capabilities is
//!   unusable from the instant the swap moves it there — the swap's
//!   `renameat2(RENAME_EXCHANGE)` moves it straight from the target's name into the
//!   store — while its inode, bytes, mode, owner, times, xattrs and capabilities stay
//!   exactly as they were (R2).
//! - A store that is not a real directory (a symlink, a file), not owned by the
//!   effective user, or reachable by group or others is refused, never used or
//!   "repaired" (S9): someone else made it. So is a store on another mount than its
//!   directory (a mount point, a bind mount): the exchange cannot move an original
//!   into it (F1, F2: `EXDEV`), so it is refused before anything changes.
//! - Entry names are plain names Switchyard creates ([`is_entry_name`]):
//!   `<name>.<n>.bak` for backups, `<name>.<run>.stage` for staged nodes, with
//!   `<name>` replaced by a hash prefix when the result would exceed `NAME_MAX`.
//! - The store goes when its last entry goes ([`remove_if_empty`]): after a rollback
//!   or recovery that undoes a run, its directory lists what it listed before (R6).

use crate::node::sha256_bytes;
use crate::path::NAME_MAX;
use rustix::fs::{fchmod, fstat, mkdirat, openat, unlinkat, AtFlags, Mode, OFlags};
use rustix::io::Errno;
use std::io;
use std::os::fd::{AsFd, OwnedFd};

/// Name of the backup store in each directory that holds a swapped target.
pub(crate) const STORE_DIR: &str = crate::plan::RESERVED_PREFIX;

const STORE_MODE: u32 = 0o700;

/// `<name>.<suffix>`, with `name` replaced by a hash prefix when the result would
/// exceed `NAME_MAX`.
pub(crate) fn entry_name(name: &str, suffix: &str) -> String {
    let full = format!("{name}.{suffix}");
    if full.len() <= NAME_MAX {
        return full;
    }
    format!("{}.{suffix}", &sha256_bytes(name.as_bytes())[..16])
}

/// How an entry of the store is named to people and in facts and reports: relative to
/// the target's directory, `.switchyard/<entry>`.
pub(crate) fn shown(entry: &str) -> String {
    format!("{STORE_DIR}/{entry}")
}

/// Whether `name` is a store entry name in Switchyard's form (S9): one path component
/// (no `/`, no NUL, not `.` or `..`, at most `NAME_MAX` bytes) ending in `.bak` or
/// `.stage` after a non-empty stem.
pub(crate) fn is_entry_name(name: &str) -> bool {
    let stem = name
        .strip_suffix(".bak")
        .or_else(|| name.strip_suffix(".stage"));
    stem.is_some_and(|s| !s.is_empty()) && name.len() <= NAME_MAX && !name.contains(['/', '\0'])
}

/// Opens the store of `dir` without following symlinks, checking it is a directory
/// owned by the effective user and closed to group and others. `Ok(None)` when it
/// does not exist and `create` is false; with `create`, makes it (`mkdirat(2)`, then
/// `fchmod(2)` to exactly 0700 whatever the umask). The new entry becomes durable with
/// the fsync of `dir` the caller does anyway (A4).
///
/// # Errors
///
/// The I/O error, or `PermissionDenied` naming what is wrong with a store someone
/// else made.
pub(crate) fn open(dir: &OwnedFd, create: bool) -> io::Result<Option<OwnedFd>> {
    let mut created = false;
    if create {
        match mkdirat(dir, STORE_DIR, Mode::from_raw_mode(STORE_MODE)) {
            Ok(()) => created = true,
            Err(Errno::EXIST) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = match openat(dir, STORE_DIR, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOENT) if !create => return Ok(None),
        Err(Errno::NOTDIR | Errno::LOOP) => {
            return Err(unsafe_store(
                "is not a directory (a symlink or another node)",
            ))
        }
        Err(e) => return Err(e.into()),
    };
    if created {
        fchmod(&fd, Mode::from_raw_mode(STORE_MODE))?;
    }
    // F1: every rename between the store and its directory stays on one mount; a
    // store that is another one (a device comparison misses a bind mount) is never
    // used.
    if mount_of(&fd)? != mount_of(dir)? {
        return Err(refused(
            io::ErrorKind::CrossesDevices,
            "is on another filesystem than its directory (a mount point or bind mount), so originals cannot be renamed into it",
        ));
    }
    let st = fstat(&fd)?;
    if st.st_uid != rustix::process::geteuid().as_raw() {
        return Err(unsafe_store(&format!("is owned by uid {}", st.st_uid)));
    }
    if st.st_mode & 0o077 != 0 {
        return Err(unsafe_store(&format!(
            "has mode {:04o} (group or others can reach it)",
            st.st_mode & 0o7777
        )));
    }
    Ok(Some(fd))
}

/// The mount `fd` is on: its mount ID (`statx(2)` `STATX_MNT_ID`), or its device
/// where the kernel does not report one. Two names on different mounts of one
/// filesystem (a bind mount) cannot be renamed into each other either.
fn mount_of(fd: impl AsFd) -> io::Result<(bool, u64)> {
    use rustix::fs::{statx, AtFlags, StatxFlags};
    match statx(&fd, "", AtFlags::EMPTY_PATH, StatxFlags::MNT_ID) {
        Ok(sx) if sx.stx_mask & StatxFlags::MNT_ID.bits() != 0 => Ok((true, sx.stx_mnt_id)),
        Ok(_) | Err(Errno::NOSYS) => Ok((false, fstat(&fd)?.st_dev)),
        Err(e) => Err(e.into()),
    }
}

/// The error of a store Switchyard refuses to use: [`is_refusal`] tells it from an
/// I/O error.
#[derive(Debug)]
struct Refused(String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

fn refused(kind: io::ErrorKind, what: &str) -> io::Error {
    io::Error::new(
        kind,
        Refused(format!("the backup store {STORE_DIR} {what}; Switchyard did not make it this way and will not use it")),
    )
}

fn unsafe_store(what: &str) -> io::Error {
    refused(io::ErrorKind::PermissionDenied, what)
}

/// Whether `e` is [`open`] refusing a store someone else made (rather than an I/O
/// error): nothing of Switchyard's can be in it.
pub(crate) fn is_refusal(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|i| i.is::<Refused>())
}

/// Removes the store of `dir` if it is empty (`unlinkat(2)` with `AT_REMOVEDIR`; the
/// kernel refuses a non-empty directory). Returns whether it was removed. A
/// `.switchyard` that is not a directory, or a mount point, is not a store Switchyard
/// made ([`open`] refuses it) and is left alone.
///
/// # Errors
///
/// Any error but "not empty", "not there", "not a directory" or "busy".
pub(crate) fn remove_if_empty(dir: impl AsFd) -> io::Result<bool> {
    match unlinkat(dir, STORE_DIR, AtFlags::REMOVEDIR) {
        Ok(()) => Ok(true),
        Err(Errno::NOTEMPTY | Errno::EXIST | Errno::NOENT | Errno::NOTDIR | Errno::BUSY) => {
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}
