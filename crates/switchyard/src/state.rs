//! Journal and run records: the on-disk truth that rollback and recovery read (A3, R7).
//!
//! Layout of the state directory (default `<root>/var/lib/switchyard`):
//!
//! ```text
//! lock                         flock(2) target (adapters::lock)
//! journal/<run_id>.json        intent of a run in progress (exists ⇔ run unsettled)
//! runs/<run_id>/record.json    the settled run: what it did, with every prior snapshot
//! runs/<run_id>/facts.jsonl    the run's facts
//! runs/<run_id>/undone         marker: a settled rollback undid this run (its ID)
//! runs/LATEST                  the newest committed apply that changed something
//! ```
//!
//! Contract:
//! - A journal is durable before the run's first mutation, and removed (durably) only
//!   after the run is settled: committed, or undone.
//! - `record.json` of an apply run with status `committed` is its commit point: a
//!   journal whose record is committed is completed by recovery, any other is undone.
//! - Every action's `prior` snapshot (kind, link text, mode, owner, mtime, inode,
//!   SHA-256) is the backup's sidecar (S6); it lives here, written once per run, so
//!   sidecars cost no per-action fsync.
//! - Every journal and record carries its `format`, checked on read: a format this
//!   build does not know is a clear error, never a guess (S9). Format 3 records the
//!   run's [`RunPolicy`], which rollback and recovery of that run obey, and names
//!   stages and backups inside each directory's backup store (`store.rs`, S8).
//!   Formats 1 and 2 kept backups beside their targets; they are refused with a
//!   message saying so, never read as format 3.

use crate::durability::{ensure_dir, remove_durably, write_durably, write_renamed};
use crate::error::{Error, ErrorId, Result};
use crate::node::Node;
use crate::path::{Root, SafePath};
use crate::plan::ActionKind;
use crate::policy::RunPolicy;
use rustix::fs::{openat, Dir, Mode, OFlags};
use serde::{Deserialize, Serialize};
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use uuid::Uuid;

/// Format version of journal and record files written by this build (and the only
/// one it reads).
pub const RECORD_FORMAT: u32 = 3;

/// What kind of run a record describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RunKind {
    /// An apply.
    Apply,
    /// A rollback of an earlier run.
    Rollback,
    /// A recovery of interrupted runs.
    Recovery,
}

impl RunKind {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            RunKind::Apply => "apply",
            RunKind::Rollback => "rollback",
            RunKind::Recovery => "recovery",
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RunStatus {
    /// Journal only: the run has not settled.
    Pending,
    /// Every action took effect.
    Committed,
    /// The run failed and every action it applied was undone.
    Undone,
}

/// One action as journaled: enough to finish or undo it from any intermediate state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionRecord {
    pub action_id: Uuid,
    pub kind: ActionKind,
    pub target: SafePath,
    /// The target before the run: the backup's sidecar (S6).
    pub prior: Node,
    /// Link text of the new symlink (link actions).
    pub new_link: Option<String>,
    /// The backup being put back (restore actions): its identity and sidecar.
    pub new_node: Option<Node>,
    /// Entry of the backup store where the new node waits before the swap:
    /// the staging name of a link, or the backup being restored.
    pub stage: String,
    /// Entry of the backup store the prior node moves to; `None` if absent.
    pub backup: Option<String>,
    /// The target was already as planned; nothing is done.
    pub noop: bool,
    /// The package that owned the target when the run was journaled, and the
    /// diversion the run registered for it (M1, M2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<PackageRecord>,
    pub before_hash: Option<String>,
    pub after_hash: Option<String>,
}

/// The package that owned a target, as journaled (M1, M2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageRecord {
    /// Package name.
    pub package: String,
    /// Its version then.
    pub version: String,
    /// The target's path as the package database spells it (`/bin/ls`).
    pub db_path: String,
    /// The diversion of `db_path` the action concerns: the backup's absolute path, where
    /// dpkg writes upgrades of the target while it is diverted. A link action registers
    /// it (to its new backup); a restore action removes it (to the backup it puts back).
    pub diverted_to: Option<String>,
}

/// A run's journal, and once settled, its record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunRecord {
    /// [`RECORD_FORMAT`] when written; checked on read.
    pub format: u32,
    pub run_id: Uuid,
    pub kind: RunKind,
    pub plan_id: Option<Uuid>,
    pub status: RunStatus,
    /// Rollback/recovery: the run whose actions this one undoes or settles.
    pub target_run_id: Option<Uuid>,
    /// Apply: the plan's actions in order. Rollback: the actions being undone.
    pub actions: Vec<ActionRecord>,
    pub changed: bool,
    /// Why the run failed, when it did.
    pub error: Option<String>,
    /// The policy the run was committed under (always present in format 3): rollback
    /// and recovery of this run obey it (see [`RunPolicy::for_undo`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<RunPolicy>,
    /// A settled rollback undid this run (read from the `undone` marker, not stored).
    #[serde(skip)]
    pub undone: bool,
}

/// Where the state directory is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateLocation {
    /// Inside the root, reached without following symlinks.
    InRoot(SafePath),
    /// A host path (e.g. `--state-dir`).
    Host(PathBuf),
}

impl Default for StateLocation {
    fn default() -> Self {
        StateLocation::InRoot(
            SafePath::new("var/lib/switchyard").unwrap_or_else(|_| unreachable!()),
        )
    }
}

/// The opened state directory.
#[derive(Debug)]
pub struct StateDir {
    path: PathBuf,
    fd: OwnedFd,
}

const JOURNAL: &str = "journal";
pub(crate) const RUNS: &str = "runs";
/// Mode of the directories Switchyard creates for itself: the state directory and
/// everything in it (S9: no other user can read, plant or lock anything there).
const PRIVATE: u32 = 0o700;
/// Mode of the ancestors of a state directory Switchyard has to create (e.g. `var/lib`
/// in a fresh root): ordinary system directories.
const PUBLIC: u32 = 0o755;
const RECORD: &str = "record.json";
pub(crate) const FACTS: &str = "facts.jsonl";
const UNDONE: &str = "undone";
const LATEST: &str = "LATEST";

fn io_err(what: impl std::fmt::Display, e: io::Error) -> Error {
    Error::io(ErrorId::Generic, what, e)
}

/// S9: the state directory and every ancestor up to `/` must be owned by root or by
/// the effective user, and not writable by group or others — except an ancestor that
/// is root's and sticky (`/tmp`), where nobody else can rename or remove our entry.
/// The ancestors are the real ones: walked with `openat(dir, "..")` from the opened
/// directory, never re-resolved from the path string; `/` is where `..` is itself.
fn check_trusted(fd: &OwnedFd, path: &std::path::Path) -> Result<()> {
    let euid = rustix::process::geteuid().as_raw();
    let refuse = |what: String| {
        Error::new(
            ErrorId::Policy,
            format!("state directory {}: {what}; its records cannot be trusted (S9)", path.display()),
        )
        .with_remediation(
            "make it and every directory above it owned by root (or by you) and not writable by group or others (e.g. `chmod go-w`), or choose another --state-dir",
        )
    };
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut dir = fd
        .try_clone()
        .map_err(|e| io_err("state directory handle", e))?;
    let mut own = true;
    // For messages only: the ancestors are checked through `..`, not by these names.
    let canonical = std::fs::canonicalize(path).ok();
    let mut level = 0;
    loop {
        let st = rustix::fs::fstat(&dir)
            .map_err(|e| io_err("examining the state directory", e.into()))?;
        let mode = st.st_mode & 0o7777;
        let which = match canonical.as_ref().and_then(|c| c.ancestors().nth(level)) {
            _ if own => "it".to_owned(),
            Some(a) => format!("an ancestor, {},", a.display()),
            None => "an ancestor".to_owned(),
        };
        if st.st_uid != 0 && st.st_uid != euid {
            return Err(refuse(format!("{which} is owned by uid {}", st.st_uid)));
        }
        let sticky_root = !own && st.st_uid == 0 && mode & 0o1000 != 0;
        if mode & 0o022 != 0 && !sticky_root {
            return Err(refuse(format!(
                "{which} is writable by group or others (mode {mode:04o})"
            )));
        }
        let parent = openat(&dir, "..", flags, Mode::empty())
            .map_err(|e| io_err("examining the state directory's ancestors", e.into()))?;
        let up =
            rustix::fs::fstat(&parent).map_err(|e| io_err("examining an ancestor", e.into()))?;
        if (up.st_dev, up.st_ino) == (st.st_dev, st.st_ino) {
            return Ok(());
        }
        dir = parent;
        own = false;
        level += 1;
    }
}

impl StateDir {
    /// Opens the state directory; with `create`, makes it (and missing parents).
    /// Returns `None` when it does not exist and `create` is false.
    pub fn open(loc: &StateLocation, root: &Root, create: bool) -> Result<Option<StateDir>> {
        let (path, rel_parts): (PathBuf, Vec<String>) = match loc {
            StateLocation::InRoot(p) => (
                root.host_path(p),
                p.as_str().split('/').map(str::to_owned).collect(),
            ),
            StateLocation::Host(p) => (p.clone(), Vec::new()),
        };
        let opened = match loc {
            StateLocation::InRoot(p) => root.open_dir(p.as_str()),
            StateLocation::Host(p) => {
                let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
                openat(rustix::fs::CWD, p, flags, Mode::empty()).map_err(Into::into)
            }
        };
        let fd = match opened {
            Ok(fd) => fd,
            Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                let made = match loc {
                    StateLocation::InRoot(_) => root.open_dir("").and_then(|top| {
                        let last = rel_parts.len().saturating_sub(1);
                        rel_parts
                            .iter()
                            .enumerate()
                            .try_fold(top, |dir, (i, part)| {
                                ensure_dir(
                                    dir.as_fd(),
                                    part,
                                    if i == last { PRIVATE } else { PUBLIC },
                                )
                            })
                    }),
                    // One component at a time, so each new entry is fsynced (A4).
                    StateLocation::Host(p) => {
                        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
                        let start = if p.is_absolute() { "/" } else { "." };
                        openat(rustix::fs::CWD, start, flags, Mode::empty())
                            .map_err(io::Error::from)
                            .and_then(|top| {
                                // `..` is walked, not dropped: `x/../s` names `s`, where
                                // the commands that only open the state directory look.
                                use std::path::Component;
                                let parts: Vec<Component> = p.components().collect();
                                let last = parts
                                    .iter()
                                    .rposition(|c| matches!(c, Component::Normal(_)));
                                parts
                                    .iter()
                                    .enumerate()
                                    .try_fold(top, |dir, (i, c)| match c {
                                        Component::Normal(n) => {
                                            let mode =
                                                if Some(i) == last { PRIVATE } else { PUBLIC };
                                            ensure_dir(dir.as_fd(), *n, mode)
                                        }
                                        Component::ParentDir => Ok(openat(
                                            &dir,
                                            "..",
                                            flags | OFlags::NOFOLLOW,
                                            Mode::empty(),
                                        )?),
                                        _ => Ok(dir),
                                    })
                            })
                    }
                };
                made.map_err(|e| io_err(format!("creating state directory {}", path.display()), e))?
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(io_err(
                    format!("opening state directory {}", path.display()),
                    e,
                ))
            }
        };
        check_trusted(&fd, &path)?;
        let sd = StateDir { path, fd };
        if create {
            sd.tighten()?;
        }
        Ok(Some(sd))
    }

    /// S9 for state an earlier version made readable by others (0755 directories):
    /// a mutating command makes the state directory, `journal` and `runs` 0700
    /// (`fchmod(2)`; only what this user owns and only ever tighter).
    fn tighten(&self) -> Result<()> {
        let subs = [JOURNAL, RUNS]
            .into_iter()
            .map(|n| self.sub(n))
            .collect::<io::Result<Vec<_>>>()
            .map_err(|e| io_err("opening the state directory", e))?;
        for fd in std::iter::once(Some(&self.fd))
            .chain(subs.iter().map(Option::as_ref))
            .flatten()
        {
            let st = rustix::fs::fstat(fd)
                .map_err(|e| io_err("examining the state directory", e.into()))?;
            if st.st_mode & 0o077 != 0 && st.st_uid == rustix::process::geteuid().as_raw() {
                rustix::fs::fchmod(fd, Mode::from_raw_mode(PRIVATE))
                    .map_err(|e| io_err("making the state directory private", e.into()))?;
            }
        }
        Ok(())
    }

    /// The directory handle (for the lock file).
    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// The host path of a run's facts file.
    pub fn facts_path(&self, run_id: &Uuid) -> PathBuf {
        self.path.join(RUNS).join(run_id.to_string()).join(FACTS)
    }

    fn sub(&self, name: &str) -> io::Result<Option<OwnedFd>> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        match openat(&self.fd, name, flags, Mode::empty()) {
            Ok(fd) => Ok(Some(fd)),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Durably writes `rec` as the pending journal of its run.
    pub fn write_journal(&self, rec: &RunRecord) -> Result<()> {
        let dir = ensure_dir(self.fd.as_fd(), JOURNAL, PRIVATE)
            .map_err(|e| io_err("creating journal directory", e))?;
        let bytes = serde_json::to_vec_pretty(rec)
            .map_err(|e| Error::new(ErrorId::Generic, e.to_string()))?;
        write_durably(dir.as_fd(), &format!("{}.json", rec.run_id), &bytes)
            .map_err(|e| io_err(format!("writing journal {}", rec.run_id), e))
    }

    /// Durably removes the journal of `run_id`.
    pub fn clear_journal(&self, run_id: &Uuid) -> Result<()> {
        let Some(dir) = self
            .sub(JOURNAL)
            .map_err(|e| io_err("opening journal directory", e))?
        else {
            return Ok(());
        };
        remove_durably(dir.as_fd(), &format!("{run_id}.json"))
            .map_err(|e| io_err(format!("removing journal {run_id}"), e))
    }

    /// Temporary files an interrupted write left in `journal/` (`.<run>.json.tmp`): a
    /// journal that never became durable, so its run never mutated anything.
    ///
    /// # Errors
    ///
    /// The journal directory cannot be listed.
    pub fn stale_journal_temporaries(&self) -> Result<Vec<String>> {
        Ok(self
            .journal_temporaries()?
            .map(|(_, n)| n)
            .unwrap_or_default())
    }

    /// The journal directory and the temporary files in it, sorted; `None` without one.
    fn journal_temporaries(&self) -> Result<Option<(OwnedFd, Vec<String>)>> {
        let Some((dir, names)) = self.journal_listing()? else {
            return Ok(None);
        };
        let mut names: Vec<String> = names
            .into_iter()
            .filter(|n| n.starts_with('.') && n.ends_with(".json.tmp"))
            .collect();
        names.sort();
        Ok(Some((dir, names)))
    }

    /// The journal directory and its entries; `None` when there is none.
    fn journal_listing(&self) -> Result<Option<(OwnedFd, Vec<String>)>> {
        let Some(dir) = self
            .sub(JOURNAL)
            .map_err(|e| io_err("opening journal directory", e))?
        else {
            return Ok(None);
        };
        let names = list(&dir).map_err(|e| io_err("listing journal directory", e))?;
        Ok(Some((dir, names)))
    }

    /// Removes the temporary files of [`Self::stale_journal_temporaries`]; call only
    /// under the lock (no other run can be writing one).
    ///
    /// # Errors
    ///
    /// One cannot be removed.
    pub fn remove_stale_journal_temporaries(&self) -> Result<usize> {
        let Some((dir, names)) = self.journal_temporaries()?.filter(|(_, n)| !n.is_empty()) else {
            return Ok(0);
        };
        for n in &names {
            match rustix::fs::unlinkat(&dir, n.as_str(), rustix::fs::AtFlags::empty()) {
                Ok(()) | Err(rustix::io::Errno::NOENT) => {}
                Err(e) => return Err(io_err(format!("removing {n}"), e.into())),
            }
        }
        rustix::fs::fsync(&dir).map_err(|e| io_err("syncing journal directory", e.into()))?;
        Ok(names.len())
    }

    /// Every pending journal, oldest first.
    pub fn pending(&self) -> Result<Vec<RunRecord>> {
        let Some((dir, names)) = self.journal_listing()? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for name in names {
            if let Some(stem) = name.strip_suffix(".json").filter(|s| !s.starts_with('.')) {
                let rec = match read_json(&dir, &name) {
                    // Settled (removed) since the listing, by a run the caller holds no
                    // lock against (the read-only queries): not pending any more.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    r => r,
                };
                let rec = rec
                    .and_then(|r| {
                        // S9: a journal is settled and removed under its own name; one
                        // naming another run could never be cleared.
                        if r.run_id.to_string() == stem {
                            Ok(r)
                        } else {
                            Err(io::Error::new(
                                io::ErrorKind::InvalidData,
                                format!("it names run {}, not {stem}", r.run_id),
                            ))
                        }
                    })
                    .map_err(|e| {
                        Error::new(
                            ErrorId::Recovery,
                            format!("journal {stem} is unreadable: {e}"),
                        )
                        .with_remediation(
                            "inspect the journal file by hand; recovery cannot proceed without it",
                        )
                    })?;
                out.push(rec);
            }
        }
        out.sort_by_key(|r: &RunRecord| r.run_id);
        Ok(out)
    }

    /// Durably writes a run's facts and record (the record last: it is the commit
    /// point of an apply run).
    pub fn write_record(&self, rec: &RunRecord, facts: &[u8]) -> Result<()> {
        let runs = ensure_dir(self.fd.as_fd(), RUNS, PRIVATE)
            .map_err(|e| io_err("creating runs directory", e))?;
        let id = rec.run_id.to_string();
        if rec.kind == RunKind::Apply && rec.status == RunStatus::Committed && rec.changed {
            // Renamed into place before the run's directory is created: the fsync of
            // `runs/` that makes the new run durable makes the pointer durable too, so
            // a durable record is never newer than LATEST.
            write_renamed(runs.as_fd(), LATEST, id.as_bytes())
                .map_err(|e| io_err("updating runs/LATEST", e))?;
        }
        let dir = ensure_dir(runs.as_fd(), &id, PRIVATE)
            .map_err(|e| io_err(format!("creating run directory {id}"), e))?;
        write_durably(dir.as_fd(), FACTS, facts)
            .map_err(|e| io_err(format!("writing facts of run {id}"), e))?;
        let bytes = serde_json::to_vec_pretty(rec)
            .map_err(|e| Error::new(ErrorId::Generic, e.to_string()))?;
        write_durably(dir.as_fd(), RECORD, &bytes)
            .map_err(|e| io_err(format!("writing record of run {id}"), e))
    }

    /// Durably writes the facts of a run that has no record (yet): a rollback that
    /// failed and stays pending (R8) keeps its evidence (O1) in
    /// `runs/<run_id>/facts.jsonl`; a record written later keeps them (see
    /// [`Self::facts`]).
    pub fn write_facts(&self, run_id: &Uuid, facts: &[u8]) -> Result<()> {
        let runs = ensure_dir(self.fd.as_fd(), RUNS, PRIVATE)
            .map_err(|e| io_err("creating runs directory", e))?;
        let id = run_id.to_string();
        let dir = ensure_dir(runs.as_fd(), &id, PRIVATE)
            .map_err(|e| io_err(format!("creating run directory {id}"), e))?;
        write_durably(dir.as_fd(), FACTS, facts)
            .map_err(|e| io_err(format!("writing facts of run {id}"), e))
    }

    /// The facts written for run `run_id` (empty when there are none).
    pub fn facts(&self, run_id: &Uuid) -> Result<Vec<u8>> {
        let Some(dir) = self.run_dir(run_id)? else {
            return Ok(Vec::new());
        };
        let mut bytes = Vec::new();
        match open_file(&dir, FACTS) {
            Ok(mut f) => f
                .read_to_end(&mut bytes)
                .map_err(|e| io_err(format!("reading facts of run {run_id}"), e))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(io_err(format!("reading facts of run {run_id}"), e)),
        };
        Ok(bytes)
    }

    /// The directory of run `run_id`, if it exists.
    fn run_dir(&self, run_id: &Uuid) -> Result<Option<OwnedFd>> {
        let Some(runs) = self
            .sub(RUNS)
            .map_err(|e| io_err("opening runs directory", e))?
        else {
            return Ok(None);
        };
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        match openat(&runs, run_id.to_string(), flags, Mode::empty()) {
            Ok(d) => Ok(Some(d)),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(e) => Err(io_err(format!("opening run {run_id}"), e.into())),
        }
    }

    /// The record of `run_id`, if it exists.
    pub fn record(&self, run_id: &Uuid) -> Result<Option<RunRecord>> {
        let Some(dir) = self.run_dir(run_id)? else {
            return Ok(None);
        };
        match read_json(&dir, RECORD) {
            Ok(mut r) => {
                r.undone = crate::node::lstat(&dir, UNDONE)
                    .map_err(|e| io_err(format!("reading undone marker of run {run_id}"), e))?
                    .is_some();
                Ok(Some(r))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(format!("reading record of run {run_id}"), e)),
        }
    }

    /// Durably removes the record of `run_id`, if any (an aborted commit must not
    /// leave a `committed` record behind).
    pub fn discard_record(&self, run_id: &Uuid) -> Result<()> {
        match self.run_dir(run_id)? {
            Some(dir) => remove_durably(dir.as_fd(), RECORD)
                .map_err(|e| io_err(format!("discarding record of run {run_id}"), e)),
            None => Ok(()),
        }
    }

    /// Durably marks `run_id` as undone by the rollback `by`.
    pub fn mark_undone(&self, run_id: &Uuid, by: &Uuid) -> Result<()> {
        let runs = ensure_dir(self.fd.as_fd(), RUNS, PRIVATE)
            .map_err(|e| io_err("creating runs directory", e))?;
        let id = run_id.to_string();
        let dir = ensure_dir(runs.as_fd(), &id, PRIVATE)
            .map_err(|e| io_err(format!("opening run directory {id}"), e))?;
        write_durably(dir.as_fd(), UNDONE, by.to_string().as_bytes())
            .map_err(|e| io_err(format!("marking run {id} undone"), e))
    }

    /// Every recorded run ID, oldest first (run IDs are UUIDv7: time-ordered).
    pub fn run_ids(&self) -> Result<Vec<Uuid>> {
        let Some(runs) = self
            .sub(RUNS)
            .map_err(|e| io_err("opening runs directory", e))?
        else {
            return Ok(Vec::new());
        };
        let mut ids: Vec<Uuid> = list(&runs)
            .map_err(|e| io_err("listing runs directory", e))?
            .iter()
            .filter_map(|n| Uuid::parse_str(n).ok())
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// The newest committed apply run that changed something (see `write_record`).
    pub fn latest_apply(&self) -> Result<Option<Uuid>> {
        let Some(runs) = self
            .sub(RUNS)
            .map_err(|e| io_err("opening runs directory", e))?
        else {
            return Ok(None);
        };
        let mut file = match open_file(&runs, LATEST) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("reading runs/LATEST", e)),
        };
        let mut s = String::new();
        file.read_to_string(&mut s)
            .map_err(|e| io_err("reading runs/LATEST", e))?;
        Ok(Uuid::parse_str(s.trim()).ok())
    }

    /// Every settled run's record, oldest first. Reads the whole history: for
    /// `status` and restores, never on the path of a plain apply or rollback.
    pub fn records(&self) -> Result<Vec<RunRecord>> {
        let mut out = Vec::new();
        for id in self.run_ids()? {
            if let Some(r) = self.record(&id)? {
                out.push(r);
            }
        }
        Ok(out)
    }
}

impl RunRecord {
    /// A committed apply run that still has effect (not undone by a rollback).
    pub fn is_live_apply(&self) -> bool {
        self.kind == RunKind::Apply && self.status == RunStatus::Committed && !self.undone
    }
}

fn list(dir: &OwnedFd) -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in Dir::read_from(dir)? {
        let entry = entry?;
        if let Ok(name) = entry.file_name().to_str() {
            if name != "." && name != ".." {
                names.push(name.to_owned());
            }
        }
    }
    Ok(names)
}

/// Opens the file `name` of `dir` for reading, never following a symlink and never
/// waiting on a FIFO someone planted there (S9: a crafted state directory makes a
/// command fail, not hang); anything but a regular file is refused.
fn open_file(dir: &OwnedFd, name: &str) -> io::Result<std::fs::File> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
    let fd = openat(dir, name, flags, Mode::empty())?;
    if rustix::fs::FileType::from_raw_mode(rustix::fs::fstat(&fd)?.st_mode)
        != rustix::fs::FileType::RegularFile
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{name} is not a regular file"),
        ));
    }
    Ok(std::fs::File::from(fd))
}

fn read_json(dir: &OwnedFd, name: &str) -> io::Result<RunRecord> {
    let mut s = String::new();
    open_file(dir, name)?.read_to_string(&mut s)?;
    parse_record(&s).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Parses a journal or record, checking its format version first (S9): an unknown
/// version is refused with a message naming it, never read as another one.
pub fn parse_record(text: &str) -> std::result::Result<RunRecord, String> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let format = v.get("format").and_then(serde_json::Value::as_u64);
    match format {
        Some(f) if f == u64::from(RECORD_FORMAT) => {}
        Some(f @ (1 | 2)) => {
            return Err(format!(
                "format version {f} was written by an earlier switchyard, which kept backups \
                 beside their targets; this one ({RECORD_FORMAT}) keeps them in a root-only \
                 store and will not guess: roll that run back with the switchyard that made it"
            ))
        }
        Some(f) => {
            return Err(format!(
                "format version {f} is not one this switchyard reads ({RECORD_FORMAT}); \
                 it was written by another version of switchyard"
            ))
        }
        None => return Err("no numeric format version".to_owned()),
    }
    let rec: RunRecord = serde_json::from_value(v).map_err(|e| e.to_string())?;
    if rec.policy.is_none() {
        return Err(format!(
            "format {RECORD_FORMAT} must record the run's policy, but it is missing"
        ));
    }
    // S9: every name the engine will hand to a `*at` call in a backup store must be
    // one it creates itself: a plain `<name>.<n>.bak` or `<name>.<run>.stage` entry.
    // An absolute path or a `..` would reach outside the store.
    for (i, a) in rec.actions.iter().enumerate() {
        // A no-op action names nothing (its names are empty and never used).
        let names = if a.noop && a.stage.is_empty() && a.backup.is_none() {
            [("staging", None), ("backup", None)]
        } else {
            [("staging", Some(&a.stage)), ("backup", a.backup.as_ref())]
        };
        for (what, name) in names {
            if let Some(name) = name.filter(|n| !crate::store::is_entry_name(n)) {
                return Err(format!(
                    "action {i} ({}): {what} name {name:?} is not a name switchyard creates \
                     (a plain `<name>.<n>.bak` or `<name>.<run>.stage` entry of the backup store)",
                    a.target
                ));
            }
        }
    }
    Ok(rec)
}
