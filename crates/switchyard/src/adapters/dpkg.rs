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
//!   owning package uses; a target listed under both spellings stops preflight.
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
use md5::Md5;
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
            // One pass over the md5sums, then a lookup per owned path (not a scan each).
            let by_path: HashMap<&str, &str> = sums
                .lines()
                .filter_map(|l| {
                    let (sum, p) = l.split_once(char::is_whitespace)?;
                    Some((dpkg_key(p.trim_start()), sum))
                })
                .collect();
            for (canon, db_path) in owned {
                let md5 = by_path
                    .get(dpkg_key(&db_path))
                    .map(|sum| sum.to_ascii_lowercase());
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
    crate::node::digest_file::<Md5>(std::fs::File::from(fd)).map(Some)
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
                let who = crate::adapters::lock::holder_of(&fd)
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

#[cfg(test)]
mod tests;
