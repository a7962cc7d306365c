//! The dpkg adapter (M1–M3, S4, O7): the root's package database, read once per run;
//! its diversions, written the way dpkg writes them; and its locks, taken the way dpkg
//! and apt take them.
//!
//! Contract:
//! - [`DpkgDb::load`] reads `var/lib/dpkg` under the root through the root's
//!   directory handles (`openat(2)` with `O_NOFOLLOW`; nothing is followed out of the
//!   root), with no subprocess: `status` (one RFC 822 stanza per package: `Package`,
//!   `Status`, `Version`), every `info/<pkg>[:<arch>].list` (one path per line),
//!   `info/<pkg>[:<arch>].md5sums` of the packages that own a target (`<md5>  <path
//!   without its leading slash>`), and `diversions` (triples of lines: path, diverted-to
//!   path, holder package or `:` for a local diversion). Only what concerns the
//!   given targets is kept. A root without `var/lib/dpkg/status` has no package
//!   database (`Ok(None)`).
//! - Merged-/usr aliasing (DEP17): when the root's `bin`, `sbin`, `lib`, `lib32`,
//!   `lib64` or `libx32` is a symlink to `usr/<same>`, a database path under it is the
//!   same file as the path under `usr/`: `/bin/ls` in the database is `usr/bin/ls` on
//!   disk. dpkg itself does not alias the two spellings (a diversion of `/usr/bin/ls`
//!   does not catch an upgrade of a package shipping `/bin/ls`), so a target is diverted
//!   under the spelling its owning package uses.
//! - [`write_diversions`] replaces `var/lib/dpkg/diversions` atomically, as dpkg's
//!   `lib/dpkg/atomic-file.c` does: write `diversions-new` (mode 0644) and fsync it,
//!   keep the previous file as `diversions-old` (a hard link), rename the new file over
//!   `diversions`, fsync the directory. It refuses a list dpkg would refuse to read
//!   (a path diverted twice, or diverted to a path that is itself diverted).
//! - [`DpkgLock::acquire`] takes `lock-frontend`, then `lock`, with `fcntl(F_SETLK,
//!   F_WRLCK)` on the whole file (`fcntl(2)`), exactly the locks apt and dpkg take,
//!   polling up to a bounded wait; a holder is named from `/proc/locks`. POSIX record
//!   locks belong to the process: the guard keeps the descriptors, and nothing else in
//!   the process opens those files.

use crate::error::{Error, ErrorId, Result};
use crate::path::{Root, SafePath};
use md5::{Digest, Md5};
use rustix::fs::{
    fcntl_lock, fstat, fsync, linkat, openat, readlinkat, renameat, unlinkat, AtFlags,
    FlockOperation, Mode, OFlags,
};
use rustix::io::Errno;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

/// Where the database is, relative to the root.
pub(crate) const ADMIN_DIR: &str = "var/lib/dpkg";
/// The holder of Switchyard's diversions (`dpkg-divert --package switchyard`).
pub(crate) const HOLDER: &str = "switchyard";
const DIVERSIONS: &str = "diversions";
const DIVERSIONS_NEW: &str = "diversions-new";
const DIVERSIONS_OLD: &str = "diversions-old";
const ALIASED_TOPS: [&str; 6] = ["bin", "sbin", "lib", "lib32", "lib64", "libx32"];

/// A package that owns a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Owner {
    /// Package name (without architecture).
    pub(crate) package: String,
    /// Installed version.
    pub(crate) version: String,
    /// The path as the database spells it, with its leading `/` (e.g. `/bin/ls`).
    pub(crate) db_path: String,
    /// The packaged file's MD5 (lower-case hex), from the package's md5sums.
    pub(crate) md5: Option<String>,
}

/// One dpkg diversion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Diversion {
    /// The diverted path (absolute, as dpkg spells it).
    pub(crate) from: String,
    /// Where dpkg puts the packaged file instead.
    pub(crate) to: String,
    /// The package holding it; `None` for a local diversion (`:`).
    pub(crate) holder: Option<String>,
}

impl Diversion {
    /// A diversion held by Switchyard.
    pub(crate) fn ours(from: &str, to: &str) -> Diversion {
        Diversion {
            from: from.to_owned(),
            to: to.to_owned(),
            holder: Some(HOLDER.to_owned()),
        }
    }

    /// Whether Switchyard holds it.
    pub(crate) fn is_ours(&self) -> bool {
        self.holder.as_deref() == Some(HOLDER)
    }
}

/// The package database of a root, as far as a run's targets are concerned.
pub(crate) struct DpkgDb {
    admin: OwnedFd,
    owners: HashMap<String, Vec<Owner>>,
    diversions: Vec<Diversion>,
    unsettled: Vec<(String, String)>,
    aliases: Vec<(String, String)>,
}

fn db_err(what: impl std::fmt::Display, e: io::Error) -> Error {
    Error::io(
        ErrorId::Generic,
        format!("reading the package database: {what}"),
        e,
    )
}

fn open_in(dir: &OwnedFd, name: &str) -> io::Result<Option<std::fs::File>> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
    match openat(dir, name, flags, Mode::empty()) {
        Ok(fd) => {
            let st = fstat(&fd)?;
            if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile
            {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{name} is not a regular file"),
                ));
            }
            Ok(Some(std::fs::File::from(fd)))
        }
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn read_text(dir: &OwnedFd, name: &str) -> io::Result<Option<String>> {
    let Some(mut f) = open_in(dir, name)? else {
        return Ok(None);
    };
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes)?;
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

/// Parses `diversions`: triples of lines (path, diverted-to, holder or `:`).
fn parse_diversions(text: &str) -> io::Result<Vec<Diversion>> {
    let lines: Vec<&str> = text.lines().collect();
    if !lines.len().is_multiple_of(3) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "diversions: the number of lines is not a multiple of three",
        ));
    }
    Ok(lines
        .chunks(3)
        .map(|c| Diversion {
            from: c[0].to_owned(),
            to: c[1].to_owned(),
            holder: (c[2] != ":").then(|| c[2].to_owned()),
        })
        .collect())
}

/// Reads the current diversions of the database at `admin` (`var/lib/dpkg`).
///
/// # Errors
///
/// The file cannot be read or is malformed.
pub(crate) fn read_diversions(admin: &OwnedFd) -> Result<Vec<Diversion>> {
    let text = read_text(admin, DIVERSIONS).map_err(|e| db_err(DIVERSIONS, e))?;
    parse_diversions(text.as_deref().unwrap_or_default()).map_err(|e| db_err(DIVERSIONS, e))
}

/// Checks that dpkg will read `entries` back: every path occurs once across all
/// diverted and diverted-to paths (dpkg's `ensure_diversions` refuses "conflicting
/// diversions" otherwise), and none is diverted to itself.
fn check_diversions(entries: &[Diversion]) -> io::Result<()> {
    let mut seen = HashSet::new();
    for d in entries {
        for p in [&d.from, &d.to] {
            if !p.starts_with('/') || p.contains('\n') || !seen.insert(p.as_str()) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "diversion of {} to {} would conflict with another one (dpkg would refuse the file)",
                        d.from, d.to
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Replaces the diversions file of `admin` with `entries`, atomically and durably
/// (see the module docs).
///
/// # Errors
///
/// A list dpkg would refuse, or an I/O error (the old file is then still in place).
pub(crate) fn write_diversions(admin: &OwnedFd, entries: &[Diversion]) -> io::Result<()> {
    check_diversions(entries)?;
    let mut text = String::new();
    for d in entries {
        text.push_str(&format!(
            "{}\n{}\n{}\n",
            d.from,
            d.to,
            d.holder.as_deref().unwrap_or(":")
        ));
    }
    let flags =
        OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = openat(admin, DIVERSIONS_NEW, flags, Mode::from_raw_mode(0o644))?;
    let mut f = std::fs::File::from(fd);
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    match unlinkat(admin, DIVERSIONS_OLD, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => {}
        Err(e) => return Err(e.into()),
    }
    match linkat(admin, DIVERSIONS, admin, DIVERSIONS_OLD, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => {}
        Err(e) => return Err(e.into()),
    }
    renameat(admin, DIVERSIONS_NEW, admin, DIVERSIONS)?;
    fsync(admin)?;
    Ok(())
}

/// The package and architecture a `info/<name>.list` file belongs to.
fn list_owner(file: &str) -> Option<(&str, Option<&str>)> {
    let stem = file.strip_suffix(".list")?;
    Some(match stem.split_once(':') {
        Some((p, a)) => (p, Some(a)),
        None => (stem, None),
    })
}

/// One stanza of `status`.
#[derive(Default)]
struct Stanza {
    package: String,
    arch: String,
    version: String,
    status: String,
}

fn parse_status(text: &str) -> Vec<Stanza> {
    let mut out = Vec::new();
    let mut cur = Stanza::default();
    for line in text.lines().chain(std::iter::once("")) {
        if line.trim().is_empty() {
            if !cur.package.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            continue;
        }
        if line.starts_with([' ', '\t']) {
            continue;
        }
        if let Some((k, v)) = line.split_once(':') {
            let v = v.trim().to_owned();
            match k {
                "Package" => cur.package = v,
                "Architecture" => cur.arch = v,
                "Version" => cur.version = v,
                "Status" => cur.status = v,
                _ => {}
            }
        }
    }
    out
}

impl DpkgDb {
    /// Reads the database under `root` for `targets` (see the module docs); `Ok(None)`
    /// when the root has no package database.
    ///
    /// # Errors
    ///
    /// A database file exists but cannot be read, or is malformed.
    pub(crate) fn load(root: &Root, targets: &[&SafePath]) -> Result<Option<DpkgDb>> {
        let admin = match root.open_dir(ADMIN_DIR) {
            Ok(fd) => fd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(db_err(ADMIN_DIR, e)),
        };
        let Some(status) = read_text(&admin, "status").map_err(|e| db_err("status", e))? else {
            return Ok(None);
        };
        let top = root.open_dir("").map_err(|e| db_err("the root", e))?;
        let mut aliases = Vec::new();
        for t in ALIASED_TOPS {
            if let Ok(dest) = readlinkat(&top, t, Vec::new()) {
                let dest = dest.to_string_lossy().trim_end_matches('/').to_owned();
                if dest.trim_start_matches('/') == format!("usr/{t}") {
                    aliases.push((t.to_owned(), format!("usr/{t}")));
                }
            }
        }
        let mut db = DpkgDb {
            admin,
            owners: HashMap::new(),
            diversions: Vec::new(),
            unsettled: Vec::new(),
            aliases,
        };
        let wanted: HashSet<&str> = targets.iter().map(|t| t.as_str()).collect();
        let stanzas = parse_status(&status);
        for s in &stanzas {
            let words: Vec<&str> = s.status.split_whitespace().collect();
            if let [_, flag, state] = words[..] {
                if matches!(state, "half-installed" | "half-configured") {
                    db.unsettled.push((s.package.clone(), state.to_owned()));
                } else if flag == "reinstreq" {
                    db.unsettled.push((s.package.clone(), flag.to_owned()));
                }
            }
        }
        let info = match openat(
            &db.admin,
            "info",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => Some(fd),
            Err(Errno::NOENT) => None,
            Err(e) => return Err(db_err("info", e.into())),
        };
        if let Some(info) = &info {
            let mut lists = Vec::new();
            for entry in rustix::fs::Dir::read_from(info).map_err(|e| db_err("info", e.into()))? {
                let entry = entry.map_err(|e| db_err("info", e.into()))?;
                if let Ok(name) = entry.file_name().to_str() {
                    if name.ends_with(".list") {
                        lists.push(name.to_owned());
                    }
                }
            }
            lists.sort();
            for list in &lists {
                let Some((pkg, arch)) = list_owner(list) else {
                    continue;
                };
                let version = stanzas
                    .iter()
                    .find(|s| s.package == pkg && arch.is_none_or(|a| s.arch == a))
                    .filter(|s| !s.status.ends_with("not-installed"))
                    .map(|s| s.version.clone());
                // A list without an installed package is a leftover: not an owner.
                let Some(version) = version else {
                    continue;
                };
                let Some(text) = read_text(info, list).map_err(|e| db_err(list, e))? else {
                    continue;
                };
                let mut owned = Vec::new();
                for line in text.lines() {
                    let canon = db.canonical(line);
                    if wanted.contains(canon.as_str()) {
                        owned.push((canon, line.to_owned()));
                    }
                }
                if owned.is_empty() {
                    continue;
                }
                let sums_name = format!("{}.md5sums", list.trim_end_matches(".list"));
                let sums = read_text(info, &sums_name).map_err(|e| db_err(&sums_name, e))?;
                for (canon, db_path) in owned {
                    let rel = db_path.trim_start_matches('/');
                    let md5 = sums.as_deref().and_then(|s| {
                        s.lines().find_map(|l| {
                            let (sum, p) = l.split_once("  ")?;
                            (p == rel).then(|| sum.to_ascii_lowercase())
                        })
                    });
                    db.owners.entry(canon).or_default().push(Owner {
                        package: pkg.to_owned(),
                        version: version.clone(),
                        db_path,
                        md5,
                    });
                }
            }
        }
        db.diversions = read_diversions(&db.admin)?;
        Ok(Some(db))
    }

    /// `p` (a database path, `/bin/ls`) as a root-relative path on disk, through the
    /// root's merged-/usr aliases (`usr/bin/ls`).
    pub(crate) fn canonical(&self, p: &str) -> String {
        let rel = p.trim_start_matches('/');
        let (top, rest) = rel.split_once('/').unwrap_or((rel, ""));
        match self.aliases.iter().find(|(t, _)| t == top) {
            Some((_, to)) if !rest.is_empty() => format!("{to}/{rest}"),
            Some((_, to)) => to.clone(),
            None => rel.to_owned(),
        }
    }

    /// The packages that own `target` (usually one; two when both spellings are
    /// listed), in `info/*.list` order.
    pub(crate) fn owners(&self, target: &SafePath) -> &[Owner] {
        self.owners
            .get(target.as_str())
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// The diversion of the database path `db_path`, if any.
    pub(crate) fn diversion_of(&self, db_path: &str) -> Option<&Diversion> {
        self.diversions.iter().find(|d| d.from == db_path)
    }

    /// Packages dpkg has left half-installed, half-configured or needing
    /// reinstallation (what `dpkg --audit` complains about): `(package, state)`.
    pub(crate) fn unsettled(&self) -> &[(String, String)] {
        &self.unsettled
    }

    /// The database directory (`var/lib/dpkg`).
    pub(crate) fn admin(&self) -> &OwnedFd {
        &self.admin
    }
}

/// The MD5 (lower-case hex) of the regular file `name` in `dir`, as dpkg's md5sums
/// record it; `None` when it is not a regular file.
///
/// # Errors
///
/// The file cannot be read.
pub(crate) fn md5_of(dir: impl AsFd, name: &str) -> io::Result<Option<String>> {
    let Some(st) = crate::node::lstat(dir.as_fd(), name)? else {
        return Ok(None);
    };
    if crate::node::kind_of(&st) != crate::node::NodeKind::File {
        return Ok(None);
    }
    let fd = crate::node::open_noatime(dir, name)?;
    let mut f = std::fs::File::from(fd);
    let mut h = Md5::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(Some(
        h.finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>(),
    ))
}

/// dpkg's locks of a root, held until dropped.
pub(crate) struct DpkgLock {
    _frontend: OwnedFd,
    _lock: OwnedFd,
}

impl DpkgLock {
    /// Takes `lock-frontend`, then `lock`, in `admin`, each within what is left of
    /// `timeout` (see the module docs).
    ///
    /// # Errors
    ///
    /// `E_LOCKING` naming the holder when a lock is not acquired in time; the I/O
    /// error when a lock file cannot be opened.
    pub(crate) fn acquire(admin: &OwnedFd, timeout: Duration) -> Result<DpkgLock> {
        let start = Instant::now();
        let frontend = take(admin, "lock-frontend", start, timeout)?;
        let lock = take(admin, "lock", start, timeout)?;
        Ok(DpkgLock {
            _frontend: frontend,
            _lock: lock,
        })
    }
}

fn take(admin: &OwnedFd, name: &str, start: Instant, timeout: Duration) -> Result<OwnedFd> {
    let flags = OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = openat(admin, name, flags, Mode::from_raw_mode(0o640)).map_err(|e| {
        Error::io(
            ErrorId::Locking,
            format!("opening dpkg's {ADMIN_DIR}/{name}"),
            e.into(),
        )
    })?;
    loop {
        match fcntl_lock(&fd, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(fd),
            Err(Errno::AGAIN | Errno::ACCESS) if start.elapsed() < timeout => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(Errno::AGAIN | Errno::ACCESS) => {
                let who = holder(&fd)
                    .map(|(pid, comm)| format!("{comm} (pid {pid})"))
                    .unwrap_or_else(|| "another process".to_owned());
                return Err(Error::new(
                    ErrorId::Locking,
                    format!(
                        "dpkg's lock {ADMIN_DIR}/{name} is held by {who}; not acquired within {} ms",
                        timeout.as_millis()
                    ),
                )
                .with_remediation(
                    "wait for the package manager (apt, dpkg, unattended-upgrades) to finish, then run the same command again",
                ));
            }
            Err(e) => {
                return Err(Error::io(
                    ErrorId::Locking,
                    format!("locking dpkg's {ADMIN_DIR}/{name}"),
                    e.into(),
                ))
            }
        }
    }
}

/// The process holding a POSIX lock on `fd`'s file, from `/proc/locks` (device as
/// `major:minor` in hex, then the inode), with its `comm`.
fn holder(fd: &OwnedFd) -> Option<(u32, String)> {
    let st = fstat(fd).ok()?;
    let dev = st.st_dev;
    let key = format!(
        "{:02x}:{:02x}:{}",
        rustix::fs::major(dev),
        rustix::fs::minor(dev),
        st.st_ino
    );
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    let pids: BTreeMap<u32, ()> = locks
        .lines()
        .filter(|l| l.split_whitespace().nth(5) == Some(key.as_str()))
        .filter_map(|l| l.split_whitespace().nth(4)?.parse().ok())
        .filter(|pid: &u32| *pid != std::process::id())
        .map(|p| (p, ()))
        .collect();
    let pid = *pids.keys().next()?;
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    Some((pid, comm.trim().to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_stanzas_and_unsettled_states() {
        let text = "Package: a\nStatus: install ok installed\nVersion: 1\nArchitecture: all\nDescription: x\n continued\n\nPackage: b\nStatus: install ok half-configured\nVersion: 2\n\nPackage: c\nStatus: install reinstreq half-installed\nVersion: 3\n";
        let s = parse_status(text);
        assert_eq!(s.len(), 3);
        assert_eq!((s[0].package.as_str(), s[0].version.as_str()), ("a", "1"));
        assert_eq!(s[2].status, "install reinstreq half-installed");
    }

    #[test]
    fn diversions_round_trip_and_conflicts_are_refused() {
        let text =
            "/usr/bin/a\n/usr/bin/a.real\n:\n/bin/b\n/usr/bin/.switchyard/b.1.bak\nswitchyard\n";
        let d = parse_diversions(text).unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].holder, None);
        assert!(d[1].is_ours());
        assert!(parse_diversions("/a\n/b\n").is_err());
        check_diversions(&d).unwrap();
        let mut twice = d.clone();
        twice.push(Diversion::ours("/usr/bin/a", "/x"));
        assert!(check_diversions(&twice).is_err(), "a path diverted twice");
        let mut chained = d;
        chained.push(Diversion::ours("/usr/bin/a.real", "/y"));
        assert!(
            check_diversions(&chained).is_err(),
            "diverted to a diverted path"
        );
    }

    #[test]
    fn list_file_names_name_package_and_arch() {
        assert_eq!(list_owner("coreutils.list"), Some(("coreutils", None)));
        assert_eq!(
            list_owner("libc6:amd64.list"),
            Some(("libc6", Some("amd64")))
        );
        assert_eq!(list_owner("coreutils.md5sums"), None);
    }
}
