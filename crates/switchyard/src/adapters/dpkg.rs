//! The dpkg adapter (M1–M3, S4, O7): the root's package database, read once per run;
//! its diversions, written the way dpkg writes them; and its locks, taken the way dpkg
//! and apt take them.
//!
//! Contract:
//! - [`DpkgDb::load`] reads `var/lib/dpkg` under the root once, in-process (no
//!   subprocess), through the root's directory handles: the admin directory is opened
//!   with [`Root::open_dir`] (`openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS)`, so a
//!   symlinked `var`, `var/lib` or `var/lib/dpkg` is refused, never followed out of the
//!   root), each file below it with `openat(O_RDONLY|O_NOFOLLOW|O_NONBLOCK)` and
//!   `fstat` (anything but a regular file is refused), `info/` and `updates/` listed
//!   with `getdents64`. Only what concerns the given targets is kept. A root without
//!   `var/lib/dpkg/status` has no package database (`Ok(None)`). The files:
//!   - `status`: RFC 822 stanzas separated by blank lines, of which `Package`,
//!     `Architecture`, `Version` and `Status` (`want eflag state`, e.g. `install ok
//!     installed`) are read (field names in any case, continuation lines skipped);
//!     then `updates/NNNN`, the stanzas dpkg journaled but has not yet folded into
//!     `status` (a dpkg killed mid-run leaves them), in numeric order, each replacing
//!     the stanza of its package and architecture, as dpkg does when it opens the
//!     database. A package owns its listed paths while its files are on disk: state
//!     `half-installed`, `unpacked`, `half-configured`, `triggers-awaited`,
//!     `triggers-pending` or `installed` (not `config-files`, not `not-installed`).
//!   - `info/<pkg>.list`, `info/<pkg>:<arch>.list`: one absolute path per line.
//!   - `info/<pkg>[:<arch>].md5sums` of the packages that own a target: `<md5>
//!     <path without its leading slash>`.
//!   - `diversions`: triples of lines (path, diverted-to path, holder package or `:`
//!     for a local diversion), kept whole and in file order. A file dpkg would refuse
//!     to read (below) fails the load, and so does one that is not UTF-8 (its entries
//!     could not be written back unchanged).
//! - Merged-/usr aliasing (DEP17): when the root's `bin`, `sbin`, `lib`, `lib32`,
//!   `lib64` or `libx32` is a symlink (`readlinkat` on the root's handle) to
//!   `usr/<same>` or `/usr/<same>`, a database path under it is the same file as the
//!   path under `usr/`: `/bin/ls` in the database is `usr/bin/ls` on disk. Database
//!   paths and targets are canonicalized that way and nothing else is resolved; a
//!   target listed under both spellings keeps every owner. dpkg itself does not alias
//!   the two spellings (a diversion of `/usr/bin/ls` does not catch an upgrade of a
//!   package shipping `/bin/ls`), so a target is diverted under the spelling its
//!   owning package uses.
//! - What dpkg refuses in `diversions` (`ensure_diversions` reading with
//!   `fgets_checked`), stopping every later `dpkg` and `dpkg-divert` run: a line
//!   without its final newline or longer than 1022 bytes; an incomplete last triple;
//!   a path occurring twice among all diverted and diverted-to paths ("conflicting
//!   diversions involving 'A' or 'B'": diverted twice, a diverted-to path diverted
//!   again or used twice, a diverted path used as another's diverted-to). Paths are
//!   compared as dpkg's file-name hash compares them, after skipping leading `/` and
//!   `./` (`/a`, `a` and `/./a` are one path). A path diverted to itself is read
//!   without complaint but drops out of dpkg's view.
//! - [`write_diversions`] replaces `var/lib/dpkg/diversions` atomically, as dpkg's
//!   `lib/dpkg/atomic-file.c` does with its backup flag, plus a directory fsync: write
//!   `diversions-new` (`openat(O_WRONLY|O_CREAT|O_TRUNC|O_NOFOLLOW)`, `fchmod` 0644
//!   whatever the umask) and fsync it, keep the previous file as `diversions-old`
//!   (`unlinkat`, then `linkat`), `renameat` the new file over `diversions`, fsync the
//!   directory. It refuses, with `InvalidData` and nothing changed, a list dpkg would
//!   refuse or lose an entry of (above), a newline or NUL inside a field, and a
//!   Switchyard entry with a relative path.
//! - [`DpkgLock::acquire`] takes `lock-frontend`, then `lock`, with `fcntl(F_SETLK,
//!   F_WRLCK)` on the whole file (`fcntl(2)`), exactly the locks apt and dpkg take,
//!   polling up to a bounded wait; a holder is named from `/proc/locks`. POSIX record
//!   locks belong to the process: the guard keeps the descriptors, and nothing else in
//!   the process opens those files.

use crate::error::{Error, ErrorId, Result};
use crate::path::{Root, SafePath};
use md5::{Digest, Md5};
use rustix::fs::{
    fchmod, fcntl_lock, fstat, fsync, linkat, openat, readlinkat, renameat, unlinkat, AtFlags, Dir,
    FileType, FlockOperation, Mode, OFlags,
};
use rustix::io::Errno;
use std::collections::{BTreeMap, HashMap};
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
/// dpkg reads `diversions` with `fgets` into 1024 bytes: a line and its newline must
/// fit in 1023.
const MAX_DIVERT_LINE: usize = 1022;
/// Package states in which a package's files are on disk.
const OWNING_STATES: [&str; 6] = [
    "half-installed",
    "unpacked",
    "half-configured",
    "triggers-awaited",
    "triggers-pending",
    "installed",
];

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

    /// What `dpkg-divert --list` prints for it (`diversion of A to B by P`, `local
    /// diversion of A to B`).
    pub(crate) fn describe(&self) -> String {
        match &self.holder {
            Some(p) => format!("diversion of {} to {} by {p}", self.from, self.to),
            None => format!("local diversion of {} to {}", self.from, self.to),
        }
    }

    /// Its third line in the file.
    fn holder_line(&self) -> &str {
        self.holder.as_deref().unwrap_or(":")
    }
}

/// The package database of a root, as far as a run's targets are concerned.
#[derive(Debug)]
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

/// The path as dpkg's file-name hash keys it: leading `/` and `./` skipped.
fn dpkg_key(path: &str) -> &str {
    let mut p = path;
    loop {
        if let Some(rest) = p.strip_prefix('/') {
            p = rest;
        } else if let Some(rest) = p.strip_prefix("./") {
            p = rest;
        } else {
            return p;
        }
    }
}

/// The regular file `name` of `dir`, read whole without following a symlink or
/// waiting on a FIFO; `None` when it does not exist.
fn read_bytes(dir: &OwnedFd, name: &str) -> io::Result<Option<Vec<u8>>> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
    let fd = match openat(dir, name, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    if FileType::from_raw_mode(fstat(&fd)?.st_mode) != FileType::RegularFile {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{name} is not a regular file"),
        ));
    }
    let mut bytes = Vec::new();
    std::fs::File::from(fd).read_to_end(&mut bytes)?;
    Ok(Some(bytes))
}

/// The subdirectory `name` of `dir`, not followed if a symlink; `None` when absent.
fn open_subdir(dir: &OwnedFd, name: &str) -> io::Result<Option<OwnedFd>> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match openat(dir, name, flags, Mode::empty()) {
        Ok(fd) => Ok(Some(fd)),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The UTF-8 names in `dir`, sorted.
fn list_dir(dir: &OwnedFd) -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in Dir::read_from(dir)? {
        if let Ok(name) = entry?.file_name().to_str() {
            names.push(name.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// Parses `diversions`: triples of lines (path, diverted-to, holder or `:`), refusing
/// what dpkg refuses (see the module docs).
fn parse_diversions(bytes: &[u8]) -> std::result::Result<Vec<Diversion>, String> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let text = std::str::from_utf8(bytes).map_err(|e| {
        format!(
            "is not UTF-8 (byte {}): its entries could not be written back unchanged",
            e.valid_up_to()
        )
    })?;
    let Some(body) = text.strip_suffix('\n') else {
        return Err("does not end with a newline (dpkg refuses it too)".into());
    };
    let lines: Vec<&str> = body.split('\n').collect();
    if !lines.len().is_multiple_of(3) {
        return Err(format!(
            "has {} lines, not whole triples (dpkg refuses it too)",
            lines.len()
        ));
    }
    let entries: Vec<Diversion> = lines
        .chunks_exact(3)
        .map(|c| Diversion {
            from: c[0].to_owned(),
            to: c[1].to_owned(),
            holder: (c[2] != ":").then(|| c[2].to_owned()),
        })
        .collect();
    check_diversions(&entries).map_err(|e| e.to_string())?;
    Ok(entries)
}

/// Reads the current diversions of the database at `admin` (`var/lib/dpkg`), in file
/// order.
///
/// # Errors
///
/// The file cannot be read, or dpkg would refuse it (see the module docs).
pub(crate) fn read_diversions(admin: &OwnedFd) -> Result<Vec<Diversion>> {
    let bytes = read_bytes(admin, DIVERSIONS).map_err(|e| db_err(DIVERSIONS, e))?;
    parse_diversions(bytes.as_deref().unwrap_or_default()).map_err(|m| {
        Error::new(
            ErrorId::Generic,
            format!("reading the package database: {ADMIN_DIR}/{DIVERSIONS} {m}"),
        )
        .with_remediation("`dpkg-divert --list` shows whether dpkg can read it")
    })
}

/// Checks that dpkg will read `entries` back and see each of them (see the module
/// docs); `InvalidData` naming the entries otherwise.
fn check_diversions(entries: &[Diversion]) -> io::Result<()> {
    let refuse = |m: String| Err(io::Error::new(io::ErrorKind::InvalidData, m));
    let mut seen: HashMap<&str, &Diversion> = HashMap::new();
    for d in entries {
        for field in [d.from.as_str(), d.to.as_str(), d.holder_line()] {
            if field.contains(['\n', '\0']) {
                return refuse(format!(
                    "'{}' has a newline or NUL in a field",
                    d.describe()
                ));
            }
            if field.len() > MAX_DIVERT_LINE {
                return refuse(format!(
                    "'{}' has a line longer than dpkg reads ({MAX_DIVERT_LINE} bytes)",
                    d.describe()
                ));
            }
        }
        if d.is_ours() && !(d.from.starts_with('/') && d.to.starts_with('/')) {
            return refuse(format!("'{}' has a relative path", d.describe()));
        }
        let (from, to) = (dpkg_key(&d.from), dpkg_key(&d.to));
        if from == to {
            return refuse(format!("'{}' diverts a path to itself", d.describe()));
        }
        if let Some(other) = seen.get(from).or_else(|| seen.get(to)) {
            return refuse(format!(
                "'{}' conflicts with '{}' (dpkg would refuse the file)",
                d.describe(),
                other.describe()
            ));
        }
        seen.insert(from, d);
        seen.insert(to, d);
    }
    Ok(())
}

/// Replaces the diversions file of `admin` with `entries`, atomically and durably
/// (see the module docs).
///
/// # Errors
///
/// `InvalidData` for a list dpkg would refuse (nothing is written), or an I/O error
/// (the old file is then still in place).
pub(crate) fn write_diversions(admin: &OwnedFd, entries: &[Diversion]) -> io::Result<()> {
    check_diversions(entries)?;
    let mut bytes = Vec::new();
    for d in entries {
        for field in [d.from.as_str(), d.to.as_str(), d.holder_line()] {
            bytes.extend_from_slice(field.as_bytes());
            bytes.push(b'\n');
        }
    }
    let flags =
        OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = openat(admin, DIVERSIONS_NEW, flags, Mode::from_raw_mode(0o644))?;
    let written = fchmod(&fd, Mode::from_raw_mode(0o644))
        .map_err(io::Error::from)
        .and_then(|()| {
            let mut f = std::fs::File::from(fd);
            f.write_all(&bytes)?;
            f.sync_all()
        });
    if let Err(e) = written {
        let _ = unlinkat(admin, DIVERSIONS_NEW, AtFlags::empty());
        return Err(e);
    }
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
#[derive(Debug, Default, Clone)]
struct Stanza {
    package: String,
    arch: String,
    version: String,
    status: String,
}

impl Stanza {
    /// The `Status` words: want, error flag, state.
    fn words(&self) -> (&str, &str, &str) {
        let mut w = self.status.split_whitespace();
        let mut next = || w.next().unwrap_or_default();
        (next(), next(), next())
    }

    fn owns_files(&self) -> bool {
        OWNING_STATES.contains(&self.words().2)
    }
}

/// Parses RFC 822 stanzas into `out`, each replacing the stanza of the same package
/// and architecture.
fn parse_status(text: &[u8], out: &mut BTreeMap<(String, String), Stanza>) {
    let mut cur = Stanza::default();
    let mut flush = |cur: &mut Stanza| {
        let s = std::mem::take(cur);
        if !s.package.is_empty() {
            out.insert((s.package.clone(), s.arch.clone()), s);
        }
    };
    for line in text.split(|b| *b == b'\n') {
        if line.iter().all(u8::is_ascii_whitespace) {
            flush(&mut cur);
            continue;
        }
        if line.starts_with(b" ") || line.starts_with(b"\t") {
            continue;
        }
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        let field = if name.eq_ignore_ascii_case(b"Package") {
            &mut cur.package
        } else if name.eq_ignore_ascii_case(b"Architecture") {
            &mut cur.arch
        } else if name.eq_ignore_ascii_case(b"Version") {
            &mut cur.version
        } else if name.eq_ignore_ascii_case(b"Status") {
            &mut cur.status
        } else {
            continue;
        };
        *field = String::from_utf8_lossy(value).trim().to_owned();
    }
    flush(&mut cur);
}

/// `status`, then the journal `updates/NNNN` in numeric order; `None` without a
/// `status` file.
fn read_status(admin: &OwnedFd) -> Result<Option<BTreeMap<(String, String), Stanza>>> {
    let Some(status) = read_bytes(admin, "status").map_err(|e| db_err("status", e))? else {
        return Ok(None);
    };
    let mut stanzas = BTreeMap::new();
    parse_status(&status, &mut stanzas);
    let Some(updates) = open_subdir(admin, "updates").map_err(|e| db_err("updates", e))? else {
        return Ok(Some(stanzas));
    };
    let mut names = list_dir(&updates).map_err(|e| db_err("updates", e))?;
    names.retain(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    names.sort_by(|a, b| (a.len(), a).cmp(&(b.len(), b)));
    for n in names {
        let what = format!("updates/{n}");
        if let Some(text) = read_bytes(&updates, &n).map_err(|e| db_err(&what, e))? {
            parse_status(&text, &mut stanzas);
        }
    }
    Ok(Some(stanzas))
}

impl DpkgDb {
    /// Reads the database under `root` for `targets` (see the module docs); `Ok(None)`
    /// when the root has no package database.
    ///
    /// # Errors
    ///
    /// A database file exists but cannot be read, is not a regular file (a symlink
    /// included), or is one dpkg would refuse.
    pub(crate) fn load(root: &Root, targets: &[&SafePath]) -> Result<Option<DpkgDb>> {
        let admin = match root.open_dir(ADMIN_DIR) {
            Ok(fd) => fd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(db_err(ADMIN_DIR, e)),
        };
        let Some(stanzas) = read_status(&admin)? else {
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
        for s in stanzas.values() {
            let (_, flag, state) = s.words();
            if matches!(state, "half-installed" | "half-configured") {
                db.unsettled.push((s.package.clone(), state.to_owned()));
            } else if flag.contains("reinstreq") {
                db.unsettled
                    .push((s.package.clone(), "reinstreq".to_owned()));
            }
        }
        for t in targets {
            db.owners.insert(db.canonical(t.as_str()), Vec::new());
        }
        if let Some(info) = open_subdir(&db.admin, "info").map_err(|e| db_err("info", e))? {
            db.read_lists(&info, &stanzas)?;
        }
        db.owners.retain(|_, owners| !owners.is_empty());
        db.diversions = read_diversions(&db.admin)?;
        Ok(Some(db))
    }

    /// Reads every `info/*.list` of a package whose files are on disk, keeping the
    /// lines that name a target, and the md5sums of those packages.
    fn read_lists(
        &mut self,
        info: &OwnedFd,
        stanzas: &BTreeMap<(String, String), Stanza>,
    ) -> Result<()> {
        for list in list_dir(info).map_err(|e| db_err("info", e))? {
            let Some((pkg, arch)) = list_owner(&list) else {
                continue;
            };
            // A list without an installed package is a leftover: not an owner.
            let Some(stanza) = stanzas
                .values()
                .filter(|s| s.owns_files())
                .find(|s| s.package == pkg && arch.is_none_or(|a| s.arch == a))
            else {
                continue;
            };
            let Some(text) = read_bytes(info, &list).map_err(|e| db_err(&list, e))? else {
                continue;
            };
            let mut owned = Vec::new();
            for line in text.split(|b| *b == b'\n') {
                let Ok(line) = std::str::from_utf8(line) else {
                    continue;
                };
                let canon = self.canonical(line);
                if self.owners.contains_key(&canon) {
                    owned.push((canon, format!("/{}", dpkg_key(line))));
                }
            }
            if owned.is_empty() {
                continue;
            }
            let sums_name = format!("{}.md5sums", list.trim_end_matches(".list"));
            let sums = read_bytes(info, &sums_name).map_err(|e| db_err(&sums_name, e))?;
            let sums = String::from_utf8_lossy(sums.as_deref().unwrap_or_default()).into_owned();
            for (canon, db_path) in owned {
                let md5 = sums.lines().find_map(|l| {
                    let (sum, p) = l.split_once(char::is_whitespace)?;
                    (dpkg_key(p.trim_start()) == dpkg_key(&db_path))
                        .then(|| sum.to_ascii_lowercase())
                });
                let owner = Owner {
                    package: pkg.to_owned(),
                    version: stanza.version.clone(),
                    db_path,
                    md5,
                };
                let owners = self.owners.entry(canon).or_default();
                if !owners.contains(&owner) {
                    owners.push(owner);
                }
            }
        }
        Ok(())
    }

    /// `p` (a database path, `/bin/ls`) as a root-relative path on disk, through the
    /// root's merged-/usr aliases (`usr/bin/ls`).
    pub(crate) fn canonical(&self, p: &str) -> String {
        let rel = dpkg_key(p);
        let (top, rest) = rel.split_once('/').unwrap_or((rel, ""));
        match self.aliases.iter().find(|(t, _)| t == top) {
            Some((_, to)) if !rest.is_empty() => format!("{to}/{rest}"),
            Some((_, to)) => to.clone(),
            None => rel.to_owned(),
        }
    }

    /// The packages that own `target` (usually one; two when both spellings are
    /// listed), in `info/*.list` order. A target spelled through an alias (`bin/ls`)
    /// is the same target as its `usr/` path.
    pub(crate) fn owners(&self, target: &SafePath) -> &[Owner] {
        self.owners
            .get(&self.canonical(target.as_str()))
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// The diversion of the database path `db_path`, if any (paths compared as dpkg
    /// compares them).
    pub(crate) fn diversion_of(&self, db_path: &str) -> Option<&Diversion> {
        let key = dpkg_key(db_path);
        self.diversions.iter().find(|d| dpkg_key(&d.from) == key)
    }

    /// Packages dpkg has left half-installed, half-configured or needing
    /// reinstallation (what `dpkg --audit` complains about): `(package, state)`, the
    /// state `reinstreq` for the last kind; sorted by package.
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
#[derive(Debug)]
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
    //! Synthetic databases for the parser, and the real dpkg tools (T7) for what dpkg
    //! itself writes, reads, refuses and locks. Every test has its own temp root.
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::os::unix::fs::PermissionsExt;
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Output, Stdio};
    use std::time::{Duration, Instant};

    /// A temp root with an admin directory: empty `status`, `info/`, `updates/`.
    struct TRoot {
        dir: tempfile::TempDir,
    }

    impl TRoot {
        fn new() -> TRoot {
            let dir = tempfile::tempdir().unwrap();
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
            let t = TRoot { dir };
            for d in ["info", "updates"] {
                std::fs::create_dir_all(t.admin().join(d)).unwrap();
            }
            t.put("var/lib/dpkg/status", "");
            t
        }

        fn path(&self) -> &Path {
            self.dir.path()
        }

        fn arg(&self) -> &str {
            self.path().to_str().unwrap()
        }

        fn admin(&self) -> PathBuf {
            self.path().join(ADMIN_DIR)
        }

        fn put(&self, rel: &str, text: &str) {
            let p = self.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }

        fn read(&self, rel: &str) -> String {
            std::fs::read_to_string(self.path().join(rel)).unwrap()
        }

        fn root(&self) -> Root {
            Root::open(self.path()).unwrap()
        }

        fn load(&self, targets: &[&str]) -> DpkgDb {
            let t: Vec<SafePath> = targets.iter().map(|s| sp(s)).collect();
            let refs: Vec<&SafePath> = t.iter().collect();
            DpkgDb::load(&self.root(), &refs)
                .unwrap()
                .expect("a database")
        }

        fn admin_fd(&self) -> OwnedFd {
            self.root().open_dir(ADMIN_DIR).unwrap()
        }

        /// `dpkg --root R --force-not-root --log=/dev/null ARGS` (runs as non-root too).
        fn dpkg(&self, args: &[&str]) -> Output {
            let mut all = vec!["--root", self.arg(), "--force-not-root", "--log=/dev/null"];
            all.extend_from_slice(args);
            tool("dpkg", &all)
        }

        fn divert(&self, args: &[&str]) -> Output {
            let mut all = vec!["--root", self.arg()];
            all.extend_from_slice(args);
            tool("dpkg-divert", &all)
        }

        fn divert_list(&self) -> Vec<String> {
            let out = self.divert(&["--list"]);
            assert!(out.status.success(), "dpkg-divert --list: {out:?}");
            let mut l: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
            l.sort();
            l
        }
    }

    /// Test-side shorthands over the engine's accessors.
    impl DpkgDb {
        fn owner(&self, target: &SafePath) -> Option<&Owner> {
            self.owners(target).first()
        }

        fn diversions(&self) -> &[Diversion] {
            &self.diversions
        }
    }

    fn sp(s: &str) -> SafePath {
        SafePath::new(s).unwrap()
    }

    fn stdout(o: &Output) -> String {
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn stderr(o: &Output) -> String {
        String::from_utf8_lossy(&o.stderr).into_owned()
    }

    /// A command with a fixed environment: `LC_ALL=C`, a fixed `PATH`, none of the
    /// `DPKG_*` variables that would redirect dpkg or skip its frontend lock.
    fn command(prog: &str, args: &[&str]) -> Command {
        let mut c = Command::new(prog);
        c.args(args).env("LC_ALL", "C").env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        );
        for v in [
            "DPKG_ROOT",
            "DPKG_ADMINDIR",
            "DPKG_FORCE",
            "DPKG_FRONTEND_LOCKED",
        ] {
            c.env_remove(v);
        }
        c
    }

    /// Runs a real tool (T7); panics naming the Debian package when it is missing.
    fn tool(prog: &str, args: &[&str]) -> Output {
        command(prog, args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {prog} (apt-get install dpkg perl): {e}"))
    }

    /// Builds a package with `dpkg-deb --root-owner-group --build`: `files` (path,
    /// content) and maintainer scripts (name, shell body).
    fn build_deb(
        t: &TRoot,
        name: &str,
        files: &[(&str, &str)],
        scripts: &[(&str, &str)],
    ) -> PathBuf {
        build_deb_version(t, name, "1.0-1", files, scripts)
    }

    fn build_deb_version(
        t: &TRoot,
        name: &str,
        version: &str,
        files: &[(&str, &str)],
        scripts: &[(&str, &str)],
    ) -> PathBuf {
        let src = t.path().join(format!("build-{name}-{version}"));
        let debian = src.join("DEBIAN");
        std::fs::create_dir_all(&debian).unwrap();
        std::fs::write(
            debian.join("control"),
            format!(
                "Package: {name}\nVersion: {version}\nArchitecture: all\nMaintainer: T <t@example.invalid>\n\
                 Description: test package\n"
            ),
        )
        .unwrap();
        for (script, body) in scripts {
            let p = debian.join(script);
            std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        for (path, content) in files {
            let p = src.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, content).unwrap();
        }
        for d in walk_dirs(&src) {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let deb = t.path().join(format!("{name}_{version}.deb"));
        let out = tool(
            "dpkg-deb",
            &[
                "--root-owner-group",
                "--build",
                src.to_str().unwrap(),
                deb.to_str().unwrap(),
            ],
        );
        assert!(out.status.success(), "dpkg-deb: {}", stderr(&out));
        deb
    }

    fn walk_dirs(p: &Path) -> Vec<PathBuf> {
        let mut out = vec![p.to_path_buf()];
        for e in std::fs::read_dir(p).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                out.extend(walk_dirs(&e.path()));
            }
        }
        out
    }

    #[test]
    fn status_stanzas_and_unsettled_states() {
        let text = "Package: a\nStatus: install ok installed\nVersion: 1\nArchitecture: all\nDescription: x\n continued\n\nPackage: b\nStatus: install ok half-configured\nVersion: 2\n\nPackage: c\nStatus: install reinstreq half-installed\nVersion: 3\n";
        let mut s = BTreeMap::new();
        parse_status(text.as_bytes(), &mut s);
        assert_eq!(s.len(), 3);
        let a = &s[&("a".to_owned(), "all".to_owned())];
        assert_eq!((a.package.as_str(), a.version.as_str()), ("a", "1"));
        let c = &s[&("c".to_owned(), String::new())];
        assert_eq!(c.status, "install reinstreq half-installed");
        assert_eq!(c.words(), ("install", "reinstreq", "half-installed"));
        assert!(c.owns_files());
    }

    #[test]
    fn diversions_round_trip_and_conflicts_are_refused() {
        let text =
            "/usr/bin/a\n/usr/bin/a.real\n:\n/bin/b\n/usr/bin/.switchyard/b.1.bak\nswitchyard\n";
        let d = parse_diversions(text.as_bytes()).unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].holder, None);
        assert!(d[1].is_ours());
        assert!(parse_diversions(b"/a\n/b\n").is_err());
        check_diversions(&d).unwrap();
        let mut twice = d.clone();
        twice.push(Diversion::ours("/usr/bin/a", "/x"));
        assert!(check_diversions(&twice).is_err(), "a path diverted twice");
        let mut chained = d.clone();
        chained.push(Diversion::ours("/usr/bin/a.real", "/y"));
        assert!(
            check_diversions(&chained).is_err(),
            "diverted to a diverted path"
        );
        let mut relative = d;
        relative.push(Diversion::ours("usr/bin/c", "/z"));
        assert!(
            check_diversions(&relative).is_err(),
            "ours must be absolute"
        );
        assert_eq!(
            Diversion::ours("/a", "/b").describe(),
            "diversion of /a to /b by switchyard"
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

    const STATUS: &str = "\
Package: coreutils
Essential: yes
Status: install ok installed
Priority: required
Architecture: amd64
Multi-Arch: foreign
Version: 9.1-1
Description: GNU core utilities
 This package contains the basic file, shell and text manipulation
 .
 Version: 0.0 (a continuation line, not a field)

Package: libfoo1
Status: install ok installed
Architecture: amd64
Multi-Arch: same
Version: 2.0-3

Package: libfoo1
Status: install ok installed
Architecture: i386
Multi-Arch: same
Version: 2.0-3

Package: oldpkg
Status: deinstall ok config-files
Architecture: amd64
Version: 0.1
Conffiles:
 /etc/oldpkg.conf 0123456789abcdef0123456789abcdef

Package: brokenpkg
Status: install reinstreq half-installed
Architecture: amd64
Version: 1.0

Package: halfconf
Status: install ok half-configured
Architecture: all
Version: 3

package: unpackedre
status: install reinstreq unpacked
architecture: all
version: 4

Package: gone
Status: purge ok not-installed
Architecture: amd64
";

    const LS_MD5: &str = "0123456789abcdef0123456789abcdef";
    const CAT_MD5: &str = "fedcba9876543210fedcba9876543210";

    /// A merged-/usr root (`bin -> usr/bin`) with the database above.
    fn synthetic() -> TRoot {
        let t = TRoot::new();
        t.put("var/lib/dpkg/status", STATUS);
        t.put(
            "var/lib/dpkg/info/coreutils.list",
            "/.\n/bin\n/bin/ls\n/usr\n/usr/bin\n/usr/bin/cat\n",
        );
        t.put(
            "var/lib/dpkg/info/coreutils.md5sums",
            &format!(
                "{LS_MD5}  bin/ls\n{}  usr/bin/cat\n",
                CAT_MD5.to_uppercase()
            ),
        );
        t.put(
            "var/lib/dpkg/info/libfoo1:amd64.list",
            "/usr/lib/x86_64-linux-gnu/libfoo.so.1\n",
        );
        t.put(
            "var/lib/dpkg/info/libfoo1:amd64.md5sums",
            "11111111111111111111111111111111  usr/lib/x86_64-linux-gnu/libfoo.so.1\n",
        );
        t.put(
            "var/lib/dpkg/info/libfoo1:i386.list",
            "/usr/lib/i386-linux-gnu/libfoo.so.1\n",
        );
        // A stale list of a removed package: it owns nothing.
        t.put(
            "var/lib/dpkg/info/oldpkg.list",
            "/usr/bin/cat\n/etc/oldpkg.conf\n",
        );
        t.put("var/lib/dpkg/info/brokenpkg.list", "/usr/bin/broken\n");
        t.put(
            "var/lib/dpkg/diversions",
            "/usr/bin/cat\n/usr/bin/cat.real\n:\n/bin/ls\n/usr/lib/sy/ls\nswitchyard\n",
        );
        std::fs::create_dir_all(t.path().join("usr/bin")).unwrap();
        std::os::unix::fs::symlink("usr/bin", t.path().join("bin")).unwrap();
        t
    }

    #[test]
    fn status_lists_md5sums_and_merged_usr_m1() {
        let t = synthetic();
        let db = t.load(&[
            "usr/bin/ls",
            "usr/bin/cat",
            "usr/lib/x86_64-linux-gnu/libfoo.so.1",
            "usr/lib/i386-linux-gnu/libfoo.so.1",
            "usr/bin/broken",
            "usr/bin/none",
        ]);
        let own = |p: &str| db.owner(&sp(p)).cloned();
        assert_eq!(
            own("usr/bin/ls"),
            Some(Owner {
                package: "coreutils".into(),
                version: "9.1-1".into(),
                db_path: "/bin/ls".into(),
                md5: Some(LS_MD5.into()),
            })
        );
        // The stale list of the config-files package does not make it an owner.
        assert_eq!(db.owners(&sp("usr/bin/cat")).len(), 1);
        assert_eq!(own("usr/bin/cat").unwrap().md5.as_deref(), Some(CAT_MD5));
        let lib = own("usr/lib/x86_64-linux-gnu/libfoo.so.1").unwrap();
        assert_eq!(
            (lib.package.as_str(), lib.version.as_str()),
            ("libfoo1", "2.0-3")
        );
        assert_eq!(lib.md5.as_deref(), Some("11111111111111111111111111111111"));
        let lib32 = own("usr/lib/i386-linux-gnu/libfoo.so.1").unwrap();
        assert_eq!((lib32.package.as_str(), lib32.md5), ("libfoo1", None));
        // A half-installed package's files are on disk: it owns them.
        assert_eq!(own("usr/bin/broken").unwrap().package, "brokenpkg");
        assert_eq!(own("usr/bin/none"), None);
        // A target not asked for is not kept.
        assert_eq!(db.owner(&sp("etc/oldpkg.conf")), None);
        // The alias spelling of a target finds the same owner; canonical maps back.
        assert_eq!(db.owner(&sp("bin/ls")), db.owner(&sp("usr/bin/ls")));
        assert_eq!(db.canonical("/bin/ls"), "usr/bin/ls");
        assert_eq!(db.canonical("/usr/sbin/x"), "usr/sbin/x");
        assert_eq!(
            db.unsettled(),
            [
                ("brokenpkg".to_owned(), "half-installed".to_owned()),
                ("halfconf".to_owned(), "half-configured".to_owned()),
                ("unpackedre".to_owned(), "reinstreq".to_owned()),
            ]
        );
        assert_eq!(
            db.diversions(),
            [
                Diversion {
                    from: "/usr/bin/cat".into(),
                    to: "/usr/bin/cat.real".into(),
                    holder: None
                },
                Diversion::ours("/bin/ls", "/usr/lib/sy/ls"),
            ]
        );
        // Diversions are per database spelling, as in dpkg.
        assert_eq!(db.diversion_of("/bin/ls"), Some(&db.diversions()[1]));
        assert_eq!(db.diversion_of("bin/ls"), Some(&db.diversions()[1]));
        assert_eq!(db.diversion_of("/usr/bin/ls"), None);
        assert_eq!(db.diversion_of("/usr/bin/cat.real"), None);
    }

    #[test]
    fn both_spellings_are_kept_m1() {
        for link in ["usr/bin", "/usr/bin/"] {
            let t = TRoot::new();
            t.put(
                "var/lib/dpkg/status",
                "Package: old\nStatus: install ok installed\nVersion: 1\n\n\
                 Package: new\nStatus: install ok installed\nVersion: 2\n",
            );
            t.put("var/lib/dpkg/info/old.list", "/bin/foo\n");
            t.put("var/lib/dpkg/info/new.list", "/usr/bin/foo\n");
            std::fs::create_dir_all(t.path().join("usr/bin")).unwrap();
            std::os::unix::fs::symlink(link, t.path().join("bin")).unwrap();
            let db = t.load(&["usr/bin/foo"]);
            let got: Vec<(&str, &str)> = db
                .owners(&sp("usr/bin/foo"))
                .iter()
                .map(|o| (o.package.as_str(), o.db_path.as_str()))
                .collect();
            // The on-disk spelling first.
            assert_eq!(
                got,
                [("new", "/usr/bin/foo"), ("old", "/bin/foo")],
                "{link}"
            );
            assert_eq!(db.owner(&sp("usr/bin/foo")).unwrap().package, "new");
        }
        // Without the alias `bin` is its own directory: two different paths.
        let t = TRoot::new();
        t.put(
            "var/lib/dpkg/status",
            "Package: old\nStatus: install ok installed\nVersion: 1\n",
        );
        t.put("var/lib/dpkg/info/old.list", "/bin/foo\n");
        std::fs::create_dir_all(t.path().join("bin")).unwrap();
        let db = t.load(&["usr/bin/foo", "bin/foo"]);
        assert_eq!(db.owner(&sp("usr/bin/foo")), None);
        assert_eq!(db.owner(&sp("bin/foo")).unwrap().db_path, "/bin/foo");
        // A link elsewhere than usr/<dir> is not an alias.
        let t = TRoot::new();
        t.put(
            "var/lib/dpkg/status",
            "Package: old\nStatus: install ok installed\nVersion: 1\n",
        );
        t.put("var/lib/dpkg/info/old.list", "/bin/foo\n");
        std::fs::create_dir_all(t.path().join("opt/bin")).unwrap();
        std::os::unix::fs::symlink("opt/bin", t.path().join("bin")).unwrap();
        assert_eq!(t.load(&["opt/bin/foo"]).owner(&sp("opt/bin/foo")), None);
    }

    #[test]
    fn updates_journal_overrides_status_m3() {
        let t = TRoot::new();
        t.put(
            "var/lib/dpkg/status",
            "Package: a\nStatus: install ok installed\nVersion: 1\nArchitecture: all\n",
        );
        t.put("var/lib/dpkg/info/a.list", "/usr/bin/a\n");
        t.put(
            "var/lib/dpkg/updates/0000",
            "Package: a\nStatus: install ok half-configured\nVersion: 2\nArchitecture: all\n",
        );
        t.put(
            "var/lib/dpkg/updates/0001",
            "Package: a\nStatus: install ok half-configured\nVersion: 3\nArchitecture: all\n",
        );
        // dpkg's temporary name is not a journal entry.
        t.put(
            "var/lib/dpkg/updates/tmp.i",
            "Package: a\nStatus: install ok installed\nVersion: 9\nArchitecture: all\n",
        );
        let db = t.load(&["usr/bin/a"]);
        assert_eq!(
            db.unsettled(),
            [("a".to_owned(), "half-configured".to_owned())]
        );
        assert_eq!(db.owner(&sp("usr/bin/a")).unwrap().version, "3");
    }

    #[test]
    fn no_database_is_none_m1() {
        let t = tempfile::tempdir().unwrap();
        let root = Root::open(t.path()).unwrap();
        assert!(DpkgDb::load(&root, &[&sp("usr/bin/ls")]).unwrap().is_none());
        std::fs::create_dir_all(t.path().join(ADMIN_DIR)).unwrap();
        assert!(DpkgDb::load(&root, &[&sp("usr/bin/ls")]).unwrap().is_none());
    }

    #[test]
    fn symlinks_in_the_database_are_not_followed_s1() {
        // A symlinked var/lib/dpkg is refused, not followed out of the root.
        let outside = synthetic();
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("var/lib")).unwrap();
        std::os::unix::fs::symlink(outside.admin(), t.path().join(ADMIN_DIR)).unwrap();
        let err = DpkgDb::load(&Root::open(t.path()).unwrap(), &[&sp("usr/bin/ls")]).unwrap_err();
        assert_eq!(err.id(), ErrorId::Generic);
        assert_eq!(err.errno(), Some(Errno::LOOP.raw_os_error()), "{err}");
        // So is a symlinked status or list file.
        let t = TRoot::new();
        std::fs::remove_file(t.admin().join("status")).unwrap();
        std::os::unix::fs::symlink(outside.admin().join("status"), t.admin().join("status"))
            .unwrap();
        let err = DpkgDb::load(&t.root(), &[&sp("usr/bin/ls")]).unwrap_err();
        assert!(err.message().contains("status"), "{err}");
        assert_eq!(err.errno(), Some(Errno::LOOP.raw_os_error()), "{err}");
        let t = TRoot::new();
        t.put("var/lib/dpkg/status", STATUS);
        std::os::unix::fs::symlink(
            outside.admin().join("info/coreutils.list"),
            t.admin().join("info/coreutils.list"),
        )
        .unwrap();
        let err = DpkgDb::load(&t.root(), &[&sp("usr/bin/ls")]).unwrap_err();
        assert!(err.message().contains("coreutils.list"), "{err}");
        assert_eq!(err.errno(), Some(Errno::LOOP.raw_os_error()), "{err}");
    }

    /// Diversions files and whether dpkg reads them (and sees every entry).
    fn diversion_cases() -> Vec<(&'static str, String, bool)> {
        let long = |n: usize| format!("/{}", "x".repeat(n - 1));
        vec![
            ("two entries", "/a\n/b\n:\n/c\n/d\npkg\n".into(), true),
            ("empty", String::new(), true),
            ("diverted twice", "/a\n/b\n:\n/a\n/c\npkg\n".into(), false),
            (
                "diverted-to used twice",
                "/a\n/b\n:\n/c\n/b\npkg\n".into(),
                false,
            ),
            (
                "diverted-to diverted again",
                "/a\n/b\n:\n/b\n/c\npkg\n".into(),
                false,
            ),
            (
                "diverted path as diverted-to",
                "/a\n/b\n:\n/c\n/a\npkg\n".into(),
                false,
            ),
            (
                "one path spelled twice",
                "/a\n/b\n:\n./a\n/c\npkg\n".into(),
                false,
            ),
            ("truncated triple", "/a\n/b\n".into(), false),
            ("no final newline", "/a\n/b\n:".into(), false),
            (
                "line of 1023 bytes",
                format!("{}\n/b\n:\n", long(1023)),
                false,
            ),
            (
                "line of 1022 bytes",
                format!("{}\n/b\n:\n", long(1022)),
                true,
            ),
            // dpkg reads it without complaint but the entry is gone from its view.
            ("diverted to itself", "/a\n/a\n:\n".into(), false),
        ]
    }

    #[test]
    fn checker_refuses_what_real_dpkg_refuses_t7_m2() {
        for (name, text, dpkg_reads) in diversion_cases() {
            let t = TRoot::new();
            t.put("var/lib/dpkg/diversions", &text);
            let out = t.divert(&["--list"]);
            let listed = stdout(&out).lines().count();
            let entries = text.matches('\n').count() / 3;
            let dpkg_ok = out.status.success() && listed == entries;
            assert_eq!(dpkg_ok, dpkg_reads, "{name}: real dpkg-divert {out:?}");
            let ours = parse_diversions(text.as_bytes());
            assert_eq!(ours.is_ok(), dpkg_reads, "{name}: {ours:?}");
            let load = DpkgDb::load(&t.root(), &[]);
            assert_eq!(load.is_ok(), dpkg_reads, "{name}: load");
            if !dpkg_reads {
                continue;
            }
            // What dpkg reads, the writer writes back unchanged.
            let entries = ours.unwrap();
            write_diversions(&t.admin_fd(), &entries).unwrap();
            assert_eq!(t.read("var/lib/dpkg/diversions"), text, "{name}");
        }
    }

    #[test]
    fn writer_refuses_conflicts_and_leaves_the_file_m2() {
        let t = TRoot::new();
        t.put("var/lib/dpkg/diversions", "/a\n/b\n:\n");
        for (name, text, dpkg_reads) in diversion_cases() {
            if dpkg_reads || !text.ends_with('\n') || !text.matches('\n').count().is_multiple_of(3)
            {
                continue;
            }
            let entries: Vec<Diversion> = text
                .trim_end_matches('\n')
                .split('\n')
                .collect::<Vec<_>>()
                .chunks(3)
                .map(|c| Diversion {
                    from: c[0].into(),
                    to: c[1].into(),
                    holder: (c[2] != ":").then(|| c[2].into()),
                })
                .collect();
            let e = write_diversions(&t.admin_fd(), &entries).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{name}");
            assert_eq!(t.read("var/lib/dpkg/diversions"), "/a\n/b\n:\n", "{name}");
            assert!(!t.admin().join("diversions-new").exists(), "{name}");
        }
        let nl = [Diversion::ours("/a\n/b", "/c")];
        assert!(write_diversions(&t.admin_fd(), &nl).is_err());
        // The first diversion of a root: no file to keep as diversions-old (as dpkg).
        let t = TRoot::new();
        let ours = [Diversion::ours("/usr/bin/ls", "/usr/bin/.switchyard/ls")];
        write_diversions(&t.admin_fd(), &ours).unwrap();
        assert!(!t.admin().join("diversions-old").exists());
        assert_eq!(
            t.divert_list(),
            ["diversion of /usr/bin/ls to /usr/bin/.switchyard/ls by switchyard"]
        );
    }

    #[test]
    fn reads_what_dpkg_divert_wrote_t7_m2() {
        let t = TRoot::new();
        for args in [
            &[
                "--no-rename",
                "--package",
                HOLDER,
                "--divert",
                "/usr/lib/sy/ls",
                "--add",
                "/bin/ls",
            ][..],
            &[
                "--no-rename",
                "--local",
                "--divert",
                "/etc/foo.local",
                "--add",
                "/etc/foo",
            ][..],
            &[
                "--no-rename",
                "--package",
                "linux-perf",
                "--divert",
                "/usr/bin/perf.w",
                "--add",
                "/usr/bin/perf",
            ][..],
        ] {
            let out = t.divert(args);
            assert!(
                out.status.success(),
                "dpkg-divert {args:?}: {}",
                stderr(&out)
            );
        }
        let db = t.load(&[]);
        let mut ours: Vec<String> = db.diversions().iter().map(Diversion::describe).collect();
        ours.sort();
        assert_eq!(ours, t.divert_list());
        assert_eq!(ours.len(), 3);
        assert_eq!(
            db.diversion_of("/bin/ls"),
            Some(&Diversion::ours("/bin/ls", "/usr/lib/sy/ls"))
        );
        assert_eq!(
            db.diversion_of("/etc/foo").and_then(|d| d.holder.clone()),
            None
        );
        assert!(db.diversion_of("/usr/lib/sy/ls").is_none());
    }

    #[test]
    fn dpkg_divert_lists_what_we_wrote_t7_m2() {
        let t = TRoot::new();
        let out = t.divert(&[
            "--no-rename",
            "--local",
            "--divert",
            "/etc/foo.local",
            "--add",
            "/etc/foo",
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        let before = t.read("var/lib/dpkg/diversions");
        let db = t.load(&[]);
        let ours = Diversion::ours("/usr/bin/ls", "/usr/bin/.switchyard/ls");
        let mut new = db.diversions().to_vec();
        new.push(ours.clone());
        write_diversions(db.admin(), &new).unwrap();
        assert_eq!(
            t.divert_list(),
            [
                "diversion of /usr/bin/ls to /usr/bin/.switchyard/ls by switchyard",
                "local diversion of /etc/foo to /etc/foo.local",
            ]
        );
        // dpkg's own view through the diversion: the truename of the path.
        let out = t.divert(&["--truename", "/usr/bin/ls"]);
        assert_eq!(stdout(&out).trim(), "/usr/bin/.switchyard/ls");
        // The previous file is kept as diversions-old; the new one is 0644 like dpkg's.
        assert_eq!(t.read("var/lib/dpkg/diversions-old"), before);
        let meta = std::fs::metadata(t.admin().join("diversions")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o644);
        assert!(!t.admin().join("diversions-new").exists());
        // dpkg-divert can edit what we wrote: it removes ours, keeps the local one.
        let out = t.divert(&[
            "--no-rename",
            "--package",
            HOLDER,
            "--remove",
            "/usr/bin/ls",
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(
            t.divert_list(),
            ["local diversion of /etc/foo to /etc/foo.local"]
        );
        // Our add and remove leave the other entries byte for byte.
        let db = t.load(&[]);
        let mut added = db.diversions().to_vec();
        added.push(ours.clone());
        write_diversions(db.admin(), &added).unwrap();
        let mut removed = read_diversions(db.admin()).unwrap();
        removed.retain(|d| *d != ours);
        write_diversions(db.admin(), &removed).unwrap();
        assert_eq!(t.read("var/lib/dpkg/diversions"), before);
    }

    /// A perl process (perl-base is Essential on Debian) that takes an fcntl write
    /// lock on `file` (`F_SETLK`, as dpkg) and prints `locked`, then holds it until its
    /// stdin closes; with `try`, it only tries and exits 0 (got it) or 3 (busy).
    const PERL_LOCK: &str = r#"
        use Fcntl;
        my ($mode, $file) = @ARGV;
        open(my $fh, "+<", $file) or die "open $file: $!";
        my $fl = pack("s s x![q] q q i x![q]", F_WRLCK, SEEK_SET, 0, 0, 0);
        if (!fcntl($fh, F_SETLK, $fl)) { exit 3 if $mode eq "try"; die "lock: $!"; }
        exit 0 if $mode eq "try";
        $| = 1; print "locked\n"; <STDIN>;
    "#;

    fn perl_holding(file: &Path) -> Child {
        let mut child = command("perl", &["-e", PERL_LOCK, "hold", file.to_str().unwrap()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run perl (apt-get install perl-base): {e}"));
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line, "locked\n", "perl did not take the lock");
        child
    }

    fn perl_try(file: &Path) -> i32 {
        let out = tool("perl", &["-e", PERL_LOCK, "try", file.to_str().unwrap()]);
        out.status.code().unwrap()
    }

    #[test]
    fn lock_held_by_another_process_is_named_m3() {
        let t = TRoot::new();
        t.put("var/lib/dpkg/lock", "");
        let mut holder = perl_holding(&t.admin().join("lock"));
        let start = Instant::now();
        let e = DpkgLock::acquire(&t.admin_fd(), Duration::from_millis(200)).unwrap_err();
        assert!(start.elapsed() >= Duration::from_millis(200));
        assert_eq!(e.id(), ErrorId::Locking);
        let want = format!(
            "dpkg's lock var/lib/dpkg/lock is held by perl (pid {})",
            holder.id()
        );
        assert!(e.message().contains(&want), "{e}");
        // The frontend lock it had taken was released with the failure.
        assert_eq!(perl_try(&t.admin().join("lock-frontend")), 0);
        drop(holder.stdin.take());
        assert!(holder.wait().unwrap().success());
        // Now it is free: acquired, and another process sees both files locked.
        let guard = DpkgLock::acquire(&t.admin_fd(), Duration::from_millis(200)).unwrap();
        assert_eq!(perl_try(&t.admin().join("lock-frontend")), 3);
        assert_eq!(perl_try(&t.admin().join("lock")), 3);
        drop(guard);
        assert_eq!(perl_try(&t.admin().join("lock-frontend")), 0);
        assert_eq!(perl_try(&t.admin().join("lock")), 0);
    }

    #[test]
    fn real_dpkg_holding_its_lock_is_named_and_ours_stops_dpkg_t7_m3() {
        let t = TRoot::new();
        let (ready, hold) = (t.path().join("ready"), t.path().join("hold"));
        // dpkg holds both locks while it runs the preinst, which waits.
        let body = waiting_script(&ready, &hold);
        let deb = build_deb(
            &t,
            "holder",
            &[("usr/share/holder/f", "x\n")],
            &[("preinst", &body)],
        );
        let mut dpkg = dpkg_in_script(&t, &deb, &ready);
        let e = DpkgLock::acquire(&t.admin_fd(), Duration::from_millis(300)).unwrap_err();
        assert_eq!(e.id(), ErrorId::Locking);
        let want = format!(
            "dpkg's lock var/lib/dpkg/lock-frontend is held by dpkg (pid {})",
            dpkg.id()
        );
        assert!(e.message().contains(&want), "{e}");
        std::fs::remove_file(&hold).unwrap();
        assert!(dpkg.wait().unwrap().success());

        // Ours held: a real dpkg run is refused, naming this process; then it runs.
        let guard = DpkgLock::acquire(&t.admin_fd(), Duration::from_secs(5)).unwrap();
        let out = t.dpkg(&["--configure", "-a"]);
        assert!(!out.status.success(), "dpkg ran under our lock: {out:?}");
        let err = stderr(&out);
        assert!(
            err.contains("lock") && err.contains(&std::process::id().to_string()),
            "{err}"
        );
        drop(guard);
        let out = t.dpkg(&["--configure", "-a"]);
        assert!(out.status.success(), "{}", stderr(&out));
    }

    /// A real dpkg installing `deb` whose maintainer script waits (see
    /// [`waiting_script`]), started and waited for until the script runs.
    fn dpkg_in_script(t: &TRoot, deb: &Path, ready: &Path) -> Child {
        let mut dpkg = command(
            "dpkg",
            &[
                "--root",
                t.arg(),
                "--force-not-root",
                "--log=/dev/null",
                "--force-script-chrootless",
                "--install",
                deb.to_str().unwrap(),
            ],
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !ready.exists() {
            assert!(
                dpkg.try_wait().unwrap().is_none(),
                "dpkg ended before its script ran"
            );
            assert!(Instant::now() < deadline, "dpkg's script never ran");
            std::thread::sleep(Duration::from_millis(20));
        }
        dpkg
    }

    /// A maintainer script (run on the host: --force-script-chrootless) that creates
    /// `ready`, then waits for `hold` to go (the temp root's removal ends it too).
    fn waiting_script(ready: &Path, hold: &Path) -> String {
        std::fs::write(hold, "").unwrap();
        format!(
            "touch '{}'\nwhile [ -e '{}' ]; do sleep 0.05; done",
            ready.display(),
            hold.display()
        )
    }

    /// M3 after a crash of dpkg itself: killed in the middle of an upgrade, dpkg has
    /// recorded the package's new state only in its journal (`updates/`), while
    /// `status` still says installed. dpkg --audit reads the journal, and so must we.
    #[test]
    fn a_dpkg_killed_mid_upgrade_is_unsettled_t7_m3() {
        let t = TRoot::new();
        let v1 = build_deb_version(&t, "up", "1.0-1", &[("usr/bin/up", "1\n")], &[]);
        let out = t.dpkg(&["--install", v1.to_str().unwrap()]);
        assert!(out.status.success(), "{}", stderr(&out));
        let (ready, hold) = (t.path().join("ready"), t.path().join("hold"));
        let body = waiting_script(&ready, &hold);
        let v2 = build_deb_version(
            &t,
            "up",
            "2.0-1",
            &[("usr/bin/up", "2\n")],
            &[("preinst", &body)],
        );
        let mut dpkg = dpkg_in_script(&t, &v2, &ready);
        dpkg.kill().unwrap();
        dpkg.wait().unwrap();
        std::fs::remove_file(&hold).unwrap();
        assert!(
            t.read("var/lib/dpkg/status")
                .contains("Package: up\nStatus: install ok installed\n"),
            "status already records the upgrade; the test shows nothing"
        );
        let db = t.load(&["usr/bin/up"]);
        assert_eq!(
            db.unsettled(),
            [("up".to_owned(), "half-installed".to_owned())]
        );
        let q = tool(
            "dpkg-query",
            &["--root", t.arg(), "--show", "-f", "${Status}", "up"],
        );
        assert_eq!(stdout(&q), "install reinstreq half-installed");
        let audit = stdout(&t.dpkg(&["--audit"]));
        assert!(audit.contains(" up "), "dpkg --audit: {audit}");
        let v = tool(
            "dpkg-query",
            &["--root", t.arg(), "--show", "-f", "${Version}", "up"],
        );
        assert_eq!(db.owner(&sp("usr/bin/up")).unwrap().version, stdout(&v));
    }

    #[test]
    fn unsettled_matches_real_dpkg_audit_t7_m3() {
        let t = TRoot::new();
        let fine = build_deb(&t, "fine", &[("usr/bin/fine", "ok\n")], &[]);
        let halfinst = build_deb(&t, "halfinst", &[("usr/bin/halfinst", "x\n")], &[]);
        // A real failing postinst leaves the package half-configured.
        let failing = build_deb(
            &t,
            "failconf",
            &[("usr/bin/failconf", "x\n")],
            &[("postinst", "exit 1")],
        );
        for deb in [&fine, &halfinst] {
            let out = t.dpkg(&["--install", deb.to_str().unwrap()]);
            assert!(out.status.success(), "{}", stderr(&out));
        }
        let out = t.dpkg(&[
            "--force-script-chrootless",
            "--install",
            failing.to_str().unwrap(),
        ]);
        assert!(!out.status.success(), "the failing postinst did not fail");
        let q = tool(
            "dpkg-query",
            &["--root", t.arg(), "--show", "-f", "${Status}", "failconf"],
        );
        assert_eq!(stdout(&q), "install ok half-configured");
        // half-installed is what an interrupted unpack leaves; written the way dpkg
        // records it (its status file), then read back by dpkg --audit below.
        let status = t.read("var/lib/dpkg/status");
        let edited = status.replace(
            "Package: halfinst\nStatus: install ok installed",
            "Package: halfinst\nStatus: install reinstreq half-installed",
        );
        assert_ne!(edited, status);
        t.put("var/lib/dpkg/status", &edited);

        let db = t.load(&["usr/bin/fine", "usr/bin/failconf"]);
        assert_eq!(
            db.unsettled(),
            [
                ("failconf".to_owned(), "half-configured".to_owned()),
                ("halfinst".to_owned(), "half-installed".to_owned()),
            ]
        );
        let audit = stdout(&t.dpkg(&["--audit"]));
        for (pkg, _) in db.unsettled() {
            assert!(
                audit.contains(&format!(" {pkg} ")),
                "dpkg --audit misses {pkg}:\n{audit}"
            );
        }
        assert!(!audit.contains(" fine "), "{audit}");
        let own = db.owner(&sp("usr/bin/fine")).unwrap();
        assert_eq!(
            (own.package.as_str(), own.version.as_str()),
            ("fine", "1.0-1")
        );
        // dpkg-deb's md5sums, checked against the real md5sum of the installed file.
        let sum = stdout(&tool(
            "md5sum",
            &[t.path().join("usr/bin/fine").to_str().unwrap()],
        ));
        assert_eq!(own.md5.as_deref(), sum.split_whitespace().next());
    }

    /// The host's own database (Debian 12 here and in CI): ~100 targets from
    /// /usr/bin, every owner cross-checked with `dpkg-query --search` under both
    /// spellings. Prints the load time (`--nocapture`).
    #[test]
    fn host_database_agrees_with_dpkg_query_m1() {
        let mut names: Vec<String> = std::fs::read_dir("/usr/bin")
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names.truncate(98);
        names.extend(["dpkg".to_owned(), "ls".to_owned()]);
        names.sort();
        names.dedup();
        let targets: Vec<SafePath> = names.iter().map(|n| sp(&format!("usr/bin/{n}"))).collect();
        let root = Root::open(Path::new("/")).unwrap();
        let start = Instant::now();
        let refs: Vec<&SafePath> = targets.iter().collect();
        let db = DpkgDb::load(&root, &refs)
            .unwrap()
            .expect("the host has a dpkg database");
        let elapsed = start.elapsed();
        eprintln!(
            "DpkgDb::load of the host database for {} targets: {:.1} ms",
            targets.len(),
            elapsed.as_secs_f64() * 1000.0
        );
        let merged =
            std::fs::read_link("/bin").is_ok_and(|l| dpkg_key(l.to_str().unwrap()) == "usr/bin");
        let mut paths: Vec<String> = names.iter().map(|n| format!("/usr/bin/{n}")).collect();
        if merged {
            paths.extend(names.iter().map(|n| format!("/bin/{n}")));
        }
        let mut args = vec!["--search"];
        args.extend(paths.iter().map(String::as_str));
        let out = tool("dpkg-query", &args);
        let mut theirs: HashMap<String, Vec<(String, String)>> = HashMap::new();
        for line in stdout(&out).lines() {
            if line.starts_with("diversion by") || line.starts_with("local diversion") {
                continue;
            }
            let (pkgs, path) = line.split_once(": ").unwrap();
            let target = db.canonical(path);
            // dpkg-query says `libperl5.36:amd64`; Owner::package has no architecture.
            for p in pkgs.split(", ").map(|p| p.split(':').next().unwrap_or(p)) {
                theirs
                    .entry(target.clone())
                    .or_default()
                    .push((p.to_owned(), path.to_owned()));
            }
        }
        let mut owned = 0;
        for t in &targets {
            let mut ours: Vec<(String, String)> = db
                .owners(t)
                .iter()
                .map(|o| (o.package.clone(), o.db_path.clone()))
                .collect();
            let mut want = theirs.remove(t.as_str()).unwrap_or_default();
            ours.sort();
            want.sort();
            assert_eq!(ours, want, "owners of {t}");
            owned += usize::from(!ours.is_empty());
        }
        assert!(
            owned > 50,
            "only {owned} of {} targets owned",
            targets.len()
        );
        let dpkg = db.owner(&sp("usr/bin/dpkg")).unwrap();
        let v = tool("dpkg-query", &["--show", "-f", "${Version}", "dpkg"]);
        assert_eq!(
            (dpkg.package.as_str(), dpkg.version.as_str()),
            ("dpkg", stdout(&v).as_str())
        );
        let sum = stdout(&tool("md5sum", &["/usr/bin/dpkg"]));
        assert_eq!(dpkg.md5.as_deref(), sum.split_whitespace().next());
    }
}
