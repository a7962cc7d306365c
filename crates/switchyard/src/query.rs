//! Read-only queries (M4, L1, A3; see `docs/GUARANTEES.md`): what the library answers without
//! changing anything — the managed targets and whether each is still in effect
//! ([`Switchyard::status`]), the run history ([`Switchyard::runs`]), whether a plan is
//! in effect ([`Switchyard::in_effect`]), and the health report behind
//! `switchyard doctor` ([`Switchyard::doctor`]).
//!
//! Contract: no query mutates, creates the state directory or the lock file, takes
//! the lock (doctor only probes it), creates a run or emits a fact, and none obeys a
//! policy. Every result type is `serde::Serialize`: the CLI prints them as its
//! `--json` documents, so their field names are a stable interface (`docs/GUARANTEES.md`).

use crate::adapters::dpkg::DpkgDb;
use crate::adapters::lock::{self, LockProbe};
use crate::error::{Error, ErrorId, Result};
use crate::handle::Switchyard;
use crate::node::{lstat, Node, NodeKind};
use crate::path::SafePath;
use crate::plan::{ActionKind, Plan};
use crate::report::Outcome;
use crate::state::{ActionRecord, RunKind, RunRecord, RunStatus, StateDir};
use crate::txn::recovery::planned_outcome;
use serde::{Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use uuid::Uuid;

/// Host paths are shown as text (`Path::display`), like everywhere in the CLI.
fn display_path<S: Serializer>(p: &Path, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.collect_str(&p.display())
}

/// How a managed target compares with the run that last changed it (M4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DriftState {
    /// The target is the node the run installed: a symlink with the recorded link
    /// text (link actions), or the very node put back (restore actions).
    InEffect,
    /// Something else is there now, or the target cannot be observed safely (e.g.
    /// its directory was replaced by a symlink).
    Drifted,
    /// Nothing is there (the target or its directory is gone).
    Missing,
}

impl DriftState {
    /// Lower-case name, as in `--json`.
    pub fn as_str(self) -> &'static str {
        match self {
            DriftState::InEffect => "in_effect",
            DriftState::Drifted => "drifted",
            DriftState::Missing => "missing",
        }
    }
}

/// A managed target, as [`Switchyard::status`] reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetStatus {
    /// Root-relative target path.
    pub path: String,
    /// What the target is now (`other` also when it cannot be observed).
    pub kind: NodeKind,
    /// Its link text now, when it is a symlink.
    pub link_dest: Option<String>,
    /// The live apply run that last changed it.
    pub run_id: Uuid,
    /// Its backup, if one is there, relative to its directory (`.switchyard/…`).
    pub backup: Option<String>,
    /// Whether it is still what that run made it (M4).
    pub state: DriftState,
    /// The package that owns the target now, per the root's package database (M1,
    /// M4): for a drifted target, the package that replaced it.
    pub package: Option<String>,
    /// That package's installed version.
    pub version: Option<String>,
    /// Whether the backup holds the file the package database says is installed (its
    /// MD5 matches): `false` after an upgrade that did not go through the diversion;
    /// `None` without a database, a package or a backup file.
    pub backup_current: Option<bool>,
    /// The pending rollback of its run, when one could not finish (R8): the run is
    /// partly rolled back, and `recover` (or the next mutating command) finishes it.
    /// Its `state` then tells how far this target got, not that it drifted.
    pub rolling_back: Option<Uuid>,
}

/// What [`Switchyard::status`] reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    /// Every target a live (committed, not rolled back) apply run changed, by path.
    pub targets: Vec<TargetStatus>,
    /// A journal is pending: a run was interrupted and `recover` has not settled it.
    pub pending_journal: bool,
    /// The state directory's host path.
    #[serde(serialize_with = "display_path")]
    pub state_dir: PathBuf,
}

/// One run of the history, as [`Switchyard::runs`] reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunSummary {
    /// The run's ID (UUIDv7: time-ordered).
    pub run_id: Uuid,
    /// `apply`, `rollback` or `recovery`.
    pub kind: RunKind,
    /// The plan it ran (none for a recovery of a journal without one).
    pub plan_id: Option<Uuid>,
    /// How the run itself ended: `committed`, or `undone` when it failed and undid
    /// what it had done.
    pub status: RunStatus,
    /// Whether it changed anything on disk.
    pub changed: bool,
    /// A later rollback undid it (apply runs).
    pub undone: bool,
    /// It is an apply run still in effect: committed and not undone.
    pub live: bool,
    /// How many actions its record holds.
    pub action_count: usize,
    /// Rollback and recovery: the run it undid or settled.
    pub target_run_id: Option<Uuid>,
    /// Why it failed, when it did.
    pub error: Option<String>,
    /// When it started (RFC 3339, UTC), read from its time-ordered (UUIDv7) run ID;
    /// `None` if the ID carries no time.
    pub time: Option<String>,
}

impl RunSummary {
    fn of(r: &RunRecord) -> RunSummary {
        let time = r.run_id.get_timestamp().map(|t| {
            let (secs, nanos) = t.to_unix();
            let at = std::time::UNIX_EPOCH + std::time::Duration::new(secs, nanos);
            humantime::format_rfc3339_millis(at).to_string()
        });
        RunSummary {
            run_id: r.run_id,
            kind: r.kind,
            plan_id: r.plan_id,
            status: r.status,
            changed: r.changed,
            undone: r.undone,
            live: r.is_live_apply(),
            action_count: r.actions.len(),
            target_run_id: r.target_run_id,
            error: r.error.clone(),
            time,
        }
    }
}

/// Whether one action of a plan is in effect, as [`Switchyard::in_effect`] reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActionEffect {
    /// The action's ID (D1).
    pub action_id: Uuid,
    /// `link` or `restore`.
    pub kind: ActionKind,
    /// Root-relative target path.
    pub target: String,
    /// The target already is what the action asks: a symlink with the planned
    /// relative link text to the source, or the backup a settled restore put back.
    pub in_effect: bool,
    /// What the target is now.
    pub current_kind: NodeKind,
    /// Its link text now, when it is a symlink.
    pub link_dest: Option<String>,
    /// The link text the action installs (links).
    pub planned_link: Option<String>,
    /// Why the target could not be inspected, when it could not.
    pub note: Option<String>,
}

/// An interrupted run: its journal is pending.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PendingRun {
    /// The interrupted run.
    pub run_id: Uuid,
    /// `apply` or `rollback`.
    pub kind: RunKind,
}

/// What [`Switchyard::in_effect`] reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InEffect {
    /// The plan asked about.
    pub plan_id: Uuid,
    /// Every action is in effect and no run is pending. A pending journal makes this
    /// false whatever the targets show: the next mutating command settles it first,
    /// and may undo what is on disk (A3).
    pub in_effect: bool,
    /// One entry per action, in plan order.
    pub actions: Vec<ActionEffect>,
    /// Interrupted runs waiting for recovery, oldest first.
    pub pending_journals: Vec<PendingRun>,
}

/// Whether the state directory exists, and what it is like.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StateDirHealth {
    /// Its host path.
    #[serde(serialize_with = "display_path")]
    pub path: PathBuf,
    /// It exists (true also when it exists but cannot be opened).
    pub exists: bool,
    /// It was opened (its lock, records and journals could be looked at).
    pub opened: bool,
    /// Its permission bits (`st_mode & 0o7777`), when it could be examined.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
    /// How many run records are readable, when all of them are.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub records: Option<usize>,
}

/// The lock's state (L1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LockState {
    /// No lock file yet: nothing has run here.
    Absent,
    /// Nobody holds it.
    Free,
    /// A run holds it (see `pid`).
    Held,
    /// It could not be probed.
    Unknown,
}

/// The lock, as [`Switchyard::doctor`] found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LockStatus {
    /// Absent, free, held or unknown.
    pub state: LockState,
    /// The holder's pid, when held and the lock file names it.
    pub pid: Option<u32>,
}

/// What `recover --commit` would do with one pending journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RecoverStep {
    /// The interrupted run.
    pub run_id: Uuid,
    /// `completed` (it had committed: only its journal goes) or `undone`.
    pub outcome: Outcome,
}

/// Which part of the health report a [`Problem`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Area {
    /// The state directory: exists, can be opened, is not group/world-writable.
    StateDir,
    /// The lock file can be probed.
    Lock,
    /// Every run record is readable.
    RunRecords,
    /// No journal is pending (no interrupted run).
    PendingJournal,
    /// What recovery would do can be worked out.
    Recover,
    /// Every managed target is still what its run made it (M4).
    Targets,
}

impl Area {
    /// Every area, in report order.
    pub const ALL: [Area; 6] = [
        Area::StateDir,
        Area::Lock,
        Area::RunRecords,
        Area::PendingJournal,
        Area::Recover,
        Area::Targets,
    ];

    /// The area's name in the report, e.g. `"state directory"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Area::StateDir => "state directory",
            Area::Lock => "lock",
            Area::RunRecords => "run records",
            Area::PendingJournal => "pending journal",
            Area::Recover => "recover would",
            Area::Targets => "managed targets",
        }
    }
}

/// Something that needs an operator's care. Serialized (and displayed) as one line,
/// `"<area>: <message>"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// What part of the report it is about.
    pub area: Area,
    /// One line saying what is wrong (and, where known, what to do).
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.area.as_str(), self.message)
    }
}

impl Serialize for Problem {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The one-word summary of a [`Health`] report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthVerdict {
    /// Nothing needs care.
    Ok,
    /// Something other than an interrupted run needs care.
    NeedsAttention,
    /// An interrupted run waits for `recover` (or a journal cannot be read).
    PendingRecovery,
}

impl HealthVerdict {
    /// The error class of this verdict: none, `E_GENERIC` or `E_RECOVERY`.
    pub fn error_id(self) -> Option<ErrorId> {
        match self {
            HealthVerdict::Ok => None,
            HealthVerdict::NeedsAttention => Some(ErrorId::Generic),
            HealthVerdict::PendingRecovery => Some(ErrorId::Recovery),
        }
    }

    /// The exit status `switchyard doctor` ends with: 0, 1, or 90.
    pub fn exit_code(self) -> i32 {
        self.error_id().map_or(0, ErrorId::exit_code)
    }
}

/// What [`Switchyard::doctor`] reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Health {
    /// The state directory.
    pub state_dir: StateDirHealth,
    /// The lock (L1).
    pub lock: LockStatus,
    /// Interrupted runs, oldest first.
    pub pending_journals: Vec<PendingRun>,
    /// What `recover --commit` would do, per interrupted run (from recovery's own
    /// dry-run logic).
    pub recover: Vec<RecoverStep>,
    /// How many targets live runs manage, when their records could be read; each one
    /// that is not in effect is a problem (M4).
    pub managed_targets: Option<usize>,
    /// Everything that needs care, in report order.
    pub problems: Vec<Problem>,
    /// The summary: ok, needs attention, or pending recovery.
    pub verdict: HealthVerdict,
    /// [`HealthVerdict::exit_code`] of `verdict`.
    pub exit_code: i32,
    /// [`HealthVerdict::error_id`] of `verdict`.
    pub error_id: Option<ErrorId>,
}

impl Health {
    /// The problems of `area`.
    pub fn problems_in(&self, area: Area) -> impl Iterator<Item = &Problem> {
        self.problems.iter().filter(move |p| p.area == area)
    }

    /// The failure a command reporting this health exits with, if any: `E_RECOVERY`
    /// when a run is pending, `E_GENERIC` when anything else needs care.
    pub fn error(&self) -> Option<Error> {
        let id = self.verdict.error_id()?;
        let list: Vec<String> = self.problems.iter().map(Problem::to_string).collect();
        let e = Error::new(id, format!("needs attention: {}", list.join("; ")));
        Some(match self.verdict {
            HealthVerdict::PendingRecovery => {
                e.with_remediation("run `switchyard recover --commit`")
            }
            _ => e,
        })
    }
}

/// Whether `node` is what action `a` installed.
fn drift(a: &ActionRecord, node: &Node) -> DriftState {
    let installed = match a.kind {
        ActionKind::Link => {
            node.kind == NodeKind::Symlink
                && node.link_dest.is_some()
                && node.link_dest == a.new_link
        }
        ActionKind::Restore => a.new_node.as_ref().is_some_and(|n| n.same_inode(node)),
    };
    match node.kind {
        NodeKind::Absent => DriftState::Missing,
        _ if installed => DriftState::InEffect,
        _ => DriftState::Drifted,
    }
}

fn pending_runs(state: Option<&StateDir>) -> Result<Vec<RunRecord>> {
    state.map_or(Ok(Vec::new()), StateDir::pending)
}

impl Switchyard {
    /// Every managed target — changed by a live (committed, not rolled back) apply
    /// run — with what it is now, the run that made it, its backup, and whether it is
    /// still what that run installed (M4); and whether a run is pending.
    ///
    /// # Errors
    ///
    /// The state directory, a run record or a journal cannot be read (an unknown
    /// record format included).
    pub fn status(&self) -> Result<Status> {
        let state = self.open_state(false)?;
        let records = self.records(state.as_ref())?;
        let pending = pending_runs(state.as_ref())?;
        self.status_of(&records, &pending)
    }

    /// [`Switchyard::status`] from records and pending journals already read.
    fn status_of(&self, records: &[RunRecord], pending: &[RunRecord]) -> Result<Status> {
        let pending_journal = !pending.is_empty();
        // R8: (run, target) pairs a pending rollback is undoing.
        let rolling_back: BTreeMap<(Uuid, &str), Uuid> = pending
            .iter()
            .filter(|j| j.kind == crate::state::RunKind::Rollback)
            .filter_map(|j| j.target_run_id.map(|t| (t, j)))
            .flat_map(|(t, j)| {
                j.actions
                    .iter()
                    .map(move |a| ((t, a.target.as_str()), j.run_id))
            })
            .collect();
        let mut latest: BTreeMap<&str, (Uuid, &ActionRecord)> = BTreeMap::new();
        for r in records.iter().filter(|r| r.is_live_apply()) {
            for a in r.actions.iter().filter(|a| !a.noop) {
                latest.insert(a.target.as_str(), (r.run_id, a));
            }
        }
        let paths: Vec<&SafePath> = latest.values().map(|(_, a)| &a.target).collect();
        let db = DpkgDb::load(&self.root, &paths)?;
        let targets = latest
            .into_values()
            .map(|(run_id, a)| TargetStatus {
                rolling_back: rolling_back.get(&(run_id, a.target.as_str())).copied(),
                ..self.target_status(run_id, a, db.as_ref())
            })
            .collect();
        Ok(Status {
            targets,
            pending_journal,
            state_dir: self.state_path(),
        })
    }

    fn target_status(&self, run_id: Uuid, a: &ActionRecord, db: Option<&DpkgDb>) -> TargetStatus {
        let owner = db.and_then(|db| db.owners(&a.target).first());
        let unobservable = Node {
            kind: NodeKind::Other,
            ..Node::absent()
        };
        let mut backup_current = None;
        let (node, backup, state) = match self.root.open_parent(&a.target) {
            Ok(dir) => {
                let store = crate::store::open(&dir, false).ok().flatten();
                backup_current = match (owner.and_then(|o| o.md5.as_deref()), &store, &a.backup) {
                    (Some(md5), Some(st), Some(b)) => crate::adapters::dpkg::md5_of(st, b)
                        .ok()
                        .flatten()
                        .map(|m| m == md5),
                    _ => None,
                };
                let backup = a
                    .backup
                    .as_deref()
                    .filter(|b| {
                        store
                            .as_ref()
                            .is_some_and(|s| lstat(s, b).ok().flatten().is_some())
                    })
                    .map(crate::store::shown);
                match Node::observe(&dir, a.target.file_name(), false) {
                    Ok(node) => {
                        let state = drift(a, &node);
                        (node, backup, state)
                    }
                    Err(_) => (unobservable, backup, DriftState::Drifted),
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                (Node::absent(), None, DriftState::Missing)
            }
            Err(_) => (unobservable, None, DriftState::Drifted),
        };
        TargetStatus {
            path: a.target.to_string(),
            kind: node.kind,
            link_dest: node.link_dest,
            run_id,
            backup,
            state,
            package: owner.map(|o| o.package.clone()),
            version: owner.map(|o| o.version.clone()),
            backup_current,
            rolling_back: None,
        }
    }

    /// The run history, newest first: every settled run's record (pending runs are
    /// in [`Switchyard::status`] and [`Switchyard::doctor`]). Empty when the state
    /// directory does not exist, which is never created.
    ///
    /// # Errors
    ///
    /// The state directory or a run record cannot be read (an unknown record format
    /// included).
    pub fn runs(&self) -> Result<Vec<RunSummary>> {
        let state = self.open_state(false)?;
        let records = self.records(state.as_ref())?;
        Ok(records.iter().rev().map(RunSummary::of).collect())
    }

    /// Whether `plan` is in effect: per action, whether the target already is what
    /// the action asks (the same observation preflight makes, and apply's D3 no-op
    /// test), and overall. Reads only — no fact, no run, no state directory — and
    /// reports interrupted runs instead of ignoring them.
    ///
    /// # Errors
    ///
    /// The state directory, a journal or (for restore actions) a run record cannot
    /// be read.
    pub fn in_effect(&self, plan: &Plan) -> Result<InEffect> {
        let state = self.open_state(false)?;
        let pending: Vec<PendingRun> = pending_runs(state.as_ref())?
            .iter()
            .map(|j| PendingRun {
                run_id: j.run_id,
                kind: j.kind,
            })
            .collect();
        // History is read only when a restore needs it, as apply does.
        let records = if plan.actions.iter().any(|a| a.kind == ActionKind::Restore) {
            self.records(state.as_ref())?
        } else {
            Vec::new()
        };
        let actions: Vec<ActionEffect> = crate::preflight::inspect(&self.root, plan, &records)
            .into_iter()
            .map(|i| ActionEffect {
                action_id: i.action.action_id,
                kind: i.action.kind,
                target: i.action.target.to_string(),
                in_effect: i.noop && i.dir_error.is_none(),
                current_kind: i.current.kind,
                link_dest: i.current.link_dest,
                planned_link: i.new_link,
                note: i.dir_error,
            })
            .collect();
        Ok(InEffect {
            plan_id: plan.plan_id,
            in_effect: pending.is_empty() && actions.iter().all(|a| a.in_effect),
            actions,
            pending_journals: pending,
        })
    }

    /// The health report behind `switchyard doctor`: the state directory (a
    /// group/world-writable one is a problem, S9), the lock (L1), interrupted runs and
    /// what recovery would do with each (A3), every problem, and a verdict. Never
    /// fails: whatever cannot be examined is itself a problem.
    pub fn doctor(&self) -> Health {
        let path = self.state_path();
        let mut problems = Vec::new();
        let mut problem = |area, message: String| problems.push(Problem { area, message });
        let mut sd_health = StateDirHealth {
            path: path.clone(),
            exists: false,
            opened: false,
            mode: None,
            records: None,
        };
        let mut lock = LockStatus {
            state: LockState::Absent,
            pid: None,
        };
        let (mut pending_journals, mut recover) = (Vec::new(), Vec::new());
        let mut pending = false;
        let mut managed = None;
        match self.open_state(false) {
            Err(e) => {
                sd_health.exists = true;
                lock.state = LockState::Unknown;
                problem(
                    Area::StateDir,
                    format!("{} cannot be opened: {}", path.display(), e.message()),
                );
                problem(Area::Recover, format!("fail: {}", e.message()));
            }
            Ok(None) => {}
            Ok(Some(sd)) => {
                sd_health.exists = true;
                sd_health.opened = true;
                // Opening checked ownership and mode (S9); the mode is reported.
                if let Ok(st) = rustix::fs::fstat(sd.fd()) {
                    sd_health.mode = Some(st.st_mode & 0o7777);
                }
                lock = match lock::probe(sd.fd().as_fd()) {
                    Ok(LockProbe::Absent) => lock,
                    Ok(LockProbe::Free) => LockStatus {
                        state: LockState::Free,
                        pid: None,
                    },
                    Ok(LockProbe::Held(pid)) => LockStatus {
                        state: LockState::Held,
                        pid,
                    },
                    Err(e) => {
                        problem(Area::Lock, format!("cannot be probed: {e}"));
                        LockStatus {
                            state: LockState::Unknown,
                            pid: None,
                        }
                    }
                };
                let records = sd.records();
                match &records {
                    Ok(r) => sd_health.records = Some(r.len()),
                    Err(e) => problem(Area::RunRecords, e.message().to_owned()),
                }
                let journals = sd.pending();
                // M4: a managed target that is no longer what its run made it.
                let st = match (&records, &journals) {
                    (Ok(r), Ok(j)) => self.status_of(r, j).ok(),
                    _ => None,
                };
                if let Some(st) = st {
                    managed = Some(st.targets.len());
                    // A target a pending rollback is undoing is not drift: its run is
                    // partly rolled back (R8).
                    for t in &st.targets {
                        if let Some(rb) = t.rolling_back {
                            problem(
                                Area::Targets,
                                format!(
                                    "{} is partly rolled back (now {}): rollback {rb} of run {} could not finish; fix what it reported, then `recover --commit` finishes it",
                                    t.path,
                                    t.kind.as_str(),
                                    t.run_id
                                ),
                            );
                        }
                    }
                    for t in st
                        .targets
                        .iter()
                        .filter(|t| t.state != DriftState::InEffect && t.rolling_back.is_none())
                    {
                        problem(
                            Area::Targets,
                            format!(
                                "{} is {} (run {} made it; now {}{}): apply the manifest again to put it back, or roll the run back",
                                t.path,
                                t.state.as_str(),
                                t.run_id,
                                t.kind.as_str(),
                                match (&t.package, &t.version, t.state) {
                                    (Some(p), Some(v), DriftState::Drifted) => format!(", owned by package {p} {v}"),
                                    _ => String::new(),
                                }
                            ),
                        );
                    }
                }
                match sd.stale_journal_temporaries() {
                    Ok(t) if !t.is_empty() => problem(
                        Area::PendingJournal,
                        format!(
                            "{} temporary journal file(s) left by an interrupted write ({}); `recover --commit` removes them",
                            t.len(),
                            t.join(", ")
                        ),
                    ),
                    Ok(_) => {}
                    Err(e) => problem(Area::PendingJournal, e.message().to_owned()),
                }
                match journals {
                    Ok(js) => {
                        pending = !js.is_empty();
                        if pending {
                            let list: Vec<String> = js
                                .iter()
                                .map(|j| match (j.kind, j.target_run_id) {
                                    (crate::state::RunKind::Rollback, Some(t)) => format!(
                                        "{} (rollback of run {t}, not finished: the run is partly rolled back)",
                                        j.run_id
                                    ),
                                    _ => format!("{} ({})", j.run_id, j.kind.as_str()),
                                })
                                .collect();
                            problem(
                                Area::PendingJournal,
                                format!("interrupted run(s): {}", list.join(", ")),
                            );
                        }
                        for j in &js {
                            pending_journals.push(PendingRun {
                                run_id: j.run_id,
                                kind: j.kind,
                            });
                            match planned_outcome(&sd, j) {
                                Ok(outcome) => recover.push(RecoverStep {
                                    run_id: j.run_id,
                                    outcome,
                                }),
                                Err(e) => problem(Area::Recover, format!("fail: {}", e.message())),
                            }
                        }
                    }
                    Err(e) => {
                        pending = true;
                        problem(Area::PendingJournal, e.message().to_owned());
                        problem(Area::Recover, format!("fail: {}", e.message()));
                    }
                }
            }
        }
        let verdict = if pending {
            HealthVerdict::PendingRecovery
        } else if !problems.is_empty() {
            HealthVerdict::NeedsAttention
        } else {
            HealthVerdict::Ok
        };
        Health {
            state_dir: sd_health,
            lock,
            pending_journals,
            recover,
            managed_targets: managed,
            problems,
            verdict,
            exit_code: verdict.exit_code(),
            error_id: verdict.error_id(),
        }
    }
}
