//! Lock manager (L1–L4): one mutating run at a time per state directory.
//!
//! Contract: [`FileLock`] takes an exclusive `flock(2)` on `<state>/lock`, polling
//! with a bounded wait; it reports the real wait and number of attempts, and writes
//! the holder's pid into the file (for `doctor`). The lock is released when the
//! [`LockGuard`] drops (or the process dies — flock is released by the kernel).

use crate::error::{Error, ErrorId, Result};
use rustix::fs::{openat, Mode, OFlags};
use std::fs::{File, TryLockError};
use std::io::{Read, Seek, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

/// Name of the lock file in the state directory.
pub const LOCK_FILE: &str = "lock";

/// A held lock and how it was obtained.
pub struct LockGuard {
    /// The lock backend, as in facts (`flock`, or `none`).
    pub backend: &'static str,
    /// How long acquiring the lock waited.
    pub wait_ms: u64,
    /// How many times acquiring it was tried.
    pub attempts: u64,
    _file: Option<File>,
}

impl LockGuard {
    /// The guard used when no lock manager is configured (dev/test only, L3).
    pub fn none() -> LockGuard {
        LockGuard {
            backend: "none",
            wait_ms: 0,
            attempts: 0,
            _file: None,
        }
    }
}

/// Serializes mutating runs.
pub trait LockManager: Send + Sync {
    /// Backend name for facts (`lock_backend`).
    fn backend(&self) -> &'static str;
    /// Takes the lock in `state_dir`, waiting at most `timeout`; `E_LOCKING` after.
    fn acquire(&self, state_dir: BorrowedFd<'_>, timeout: Duration) -> Result<LockGuard>;
}

/// `flock(2)` on `<state>/lock`.
#[derive(Debug, Clone, Default)]
pub struct FileLock {
    poll: Option<Duration>,
}

impl FileLock {
    /// A file lock polling every 10 ms.
    pub fn new() -> FileLock {
        FileLock::default()
    }
}

fn open_lock(state_dir: BorrowedFd<'_>) -> std::io::Result<File> {
    let flags = OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = openat(
        state_dir,
        LOCK_FILE,
        flags,
        // S9: readable by no one else, so no one else can take it (even shared).
        Mode::from_raw_mode(0o600),
    )?;
    // A lock file an earlier version made 0644 is made 0600 (only ever tighter).
    let st = rustix::fs::fstat(&fd)?;
    if st.st_mode & 0o077 != 0 && st.st_uid == rustix::process::geteuid().as_raw() {
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o600))?;
    }
    Ok(File::from(fd))
}

impl LockManager for FileLock {
    fn backend(&self) -> &'static str {
        "flock"
    }

    fn acquire(&self, state_dir: BorrowedFd<'_>, timeout: Duration) -> Result<LockGuard> {
        let mut file = open_lock(state_dir)
            .map_err(|e| Error::io(ErrorId::Locking, "opening lock file", e))?;
        let poll = self.poll.unwrap_or(Duration::from_millis(10));
        let start = Instant::now();
        let mut attempts = 0;
        loop {
            attempts += 1;
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) if start.elapsed() < timeout => {
                    std::thread::sleep(poll)
                }
                Err(TryLockError::WouldBlock) => {
                    let holder = who_holds(&mut file)
                        .map(|who| format!(" (held by {who})"))
                        .unwrap_or_default();
                    return Err(Error::new(
                        ErrorId::Locking,
                        format!(
                            "lock not acquired within {} ms after {attempts} attempts{holder}",
                            timeout.as_millis()
                        ),
                    )
                    .with_remediation(
                        "wait for the other switchyard run to finish, or raise lock_timeout_ms",
                    ));
                }
                Err(TryLockError::Error(e)) => {
                    return Err(Error::io(ErrorId::Locking, "locking", e))
                }
            }
        }
        let _ = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{}", std::process::id()));
        Ok(LockGuard {
            backend: self.backend(),
            wait_ms: start.elapsed().as_millis() as u64,
            attempts,
            _file: Some(file),
        })
    }
}

fn read_holder(file: &mut File) -> Option<u32> {
    let mut s = String::new();
    file.rewind().ok()?;
    file.read_to_string(&mut s).ok()?;
    s.trim().parse().ok()
}

/// The process holding a lock (flock or POSIX record lock) on `fd`'s file, with its
/// `comm`: read from `/proc/locks` (`proc(5)`: type, mode, pid, then the device as
/// `major:minor` in hex and the inode), which names the real holder, where a pid
/// written into the file may be a stale one. This process is never named.
pub(crate) fn holder_of(fd: impl AsFd) -> Option<(u32, String)> {
    let st = rustix::fs::fstat(fd).ok()?;
    let key = format!(
        "{:02x}:{:02x}:{}",
        rustix::fs::major(st.st_dev),
        rustix::fs::minor(st.st_dev),
        st.st_ino
    );
    // `/proc/locks` is a seq_file over a list other processes change while it is
    // read: a busy system can drop a line from one read. A few reads settle it.
    let pid = (0..5).find_map(|_| {
        let locks = std::fs::read_to_string("/proc/locks").ok()?;
        locks
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            // A waiter's line has `->` after the number: only holders are named.
            .filter(|f| f.get(5) == Some(&key.as_str()))
            .filter_map(|f| f.get(4)?.parse::<u32>().ok())
            .filter(|pid| *pid != std::process::id())
            .min()
    })?;
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    Some((pid, comm.trim().to_owned()))
}

/// Who holds the lock file `file`: the real holder from `/proc/locks`, else the pid
/// the last holder wrote into it.
fn who_holds(file: &mut File) -> Option<String> {
    match holder_of(&*file) {
        Some((pid, comm)) => Some(format!("{comm} (pid {pid})")),
        None => read_holder(file).map(|p| format!("pid {p}, as the lock file says")),
    }
}

/// What [`probe`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockProbe {
    /// There is no lock file yet (nothing has run here).
    Absent,
    /// Nobody holds the lock.
    Free,
    /// A process holds it: its pid, from `/proc/locks` (or, where that does not name
    /// it, the pid the last holder wrote into the lock file).
    Held(Option<u32>),
}

/// Who holds the lock in `state_dir`. Read-only: it never creates the lock file, and
/// opens it read-only (`flock` needs no write access). Probing takes and releases
/// the lock for an instant when it is free.
///
/// # Errors
///
/// The lock file cannot be opened (other than not existing) or locked.
pub fn probe(state_dir: BorrowedFd<'_>) -> std::io::Result<LockProbe> {
    // NONBLOCK: a FIFO planted as the lock file must not make `doctor` wait (S9).
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
    let mut file = match openat(state_dir, LOCK_FILE, flags, Mode::empty()) {
        Ok(fd) => File::from(fd),
        Err(rustix::io::Errno::NOENT) => return Ok(LockProbe::Absent),
        Err(e) => return Err(e.into()),
    };
    match file.try_lock() {
        Ok(()) => Ok(LockProbe::Free),
        Err(TryLockError::WouldBlock) => Ok(LockProbe::Held(
            holder_of(&file)
                .map(|(pid, _)| pid)
                .or_else(|| read_holder(&mut file).filter(|pid| *pid != 0)),
        )),
        Err(TryLockError::Error(e)) => Err(e),
    }
}
