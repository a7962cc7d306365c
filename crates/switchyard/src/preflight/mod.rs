//! Preflight (S1, S3, S7, D4, M6): inspect every action's target and source, then run a
//! list of checks that each may stop or warn.
//!
//! Contract: preflight never mutates. It yields one [`PreflightRow`] per action,
//! sorted by (path, action_id). A plan may commit only if no row is `stop`. New gates
//! (mount flags, rescue, ownership oracle, preservation) are more [`Check`]s added to
//! the list, not edits to the inspection. The [`Inspection`]s are reused by apply, so
//! each target and source is observed and hashed once per run.
//!
//! `inspect.rs` observes (target, what it resolves to, source, backup, mount flags);
//! `checks.rs` holds the built-in gates.

pub(crate) mod checks;
mod inspect;

pub use checks::builtin_checks;
pub(crate) use inspect::inspect;

use crate::error::{Error, ErrorId};
use crate::node::{Node, NodeKind};
use crate::path::SafePath;
use crate::plan::{Action, ActionKind};
use crate::policy::Policy;
use crate::state::ActionRecord;
use std::os::fd::OwnedFd;

/// `ok`, `warn` or `stop`.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Nothing stands in the way.
    Ok,
    /// It can proceed; see the notes.
    Warn,
    /// It must not proceed; the notes say why.
    Stop,
}

impl Verdict {
    /// Lower-case name, as in facts.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Warn => "warn",
            Verdict::Stop => "stop",
        }
    }
}

/// The outcome of preflight for one action.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PreflightRow {
    /// Root-relative target path.
    pub path: SafePath,
    /// The action's ID.
    pub action_id: uuid::Uuid,
    /// `link` or `restore`.
    pub kind: ActionKind,
    /// What the target is now.
    pub current_kind: NodeKind,
    /// What the target will be.
    pub planned_kind: NodeKind,
    /// The worst verdict of any check.
    pub verdict: Verdict,
    /// The error class a stop maps to (`E_POLICY` unless more specific).
    pub error_id: Option<ErrorId>,
    /// Reasons behind the verdict, one per finding.
    pub notes: Vec<String>,
}

/// All rows of a preflight.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PreflightReport {
    /// One row per action, ordered by (path, action_id).
    pub rows: Vec<PreflightRow>,
}

impl PreflightReport {
    /// Rows that stop the plan.
    pub fn stops(&self) -> impl Iterator<Item = &PreflightRow> {
        self.rows.iter().filter(|r| r.verdict == Verdict::Stop)
    }

    /// Whether the plan may commit.
    pub fn ok(&self) -> bool {
        self.stops().next().is_none()
    }

    /// The error of a stopped preflight, `None` when the plan may commit (D4, O8):
    /// `E_BACKUP_MISSING` when missing backups are the only reason to stop, `E_EXDEV`
    /// when targets that are mount points are (F1), otherwise
    /// `E_POLICY` with the specific classes of the stops as causes. Apply fails with
    /// this same error, so a preflight and an apply of one plan exit alike.
    pub fn error(&self) -> Option<Error> {
        let stops: Vec<_> = self.stops().collect();
        let first = stops.first()?;
        let mut causes: Vec<ErrorId> = Vec::new();
        for id in stops.iter().filter_map(|r| r.error_id) {
            if !causes.contains(&id) {
                causes.push(id);
            }
        }
        let class = match causes[..] {
            [only @ (ErrorId::BackupMissing | ErrorId::Exdev)] => only,
            _ => ErrorId::Policy,
        };
        let message = format!(
            "preflight stopped {} of {} actions; first: {}: {}",
            stops.len(),
            self.rows.len(),
            first.path,
            first.notes.join("; ")
        );
        Some(Error::new(class, message).with_causes(causes))
    }
}

/// What preflight learned about one action; apply journals it as-is.
#[derive(Debug)]
pub struct Inspection {
    /// The action inspected.
    pub action: Action,
    /// The target's directory, when it could be opened safely (shared by every
    /// action in that directory).
    pub dir: Option<std::sync::Arc<OwnedFd>>,
    /// Why the directory could not be opened.
    pub dir_error: Option<String>,
    /// The I/O error behind `dir_error`, when there is one.
    pub(crate) dir_io_error: Option<std::io::Error>,
    /// The target now (hashed).
    pub current: Node,
    /// What the source resolves to (links).
    pub source: Option<std::io::Result<Node>>,
    /// A target of the plan that resolving the source passes through (a loop after
    /// the swap), if any.
    pub source_through: Option<String>,
    /// What the target resolves to now (itself for a file).
    pub resolved: Option<Node>,
    /// The link text to install (links).
    pub new_link: Option<String>,
    /// The backup a restore puts back: its name and its sidecar's prior snapshot.
    pub restore_from: Option<(String, Node, Node)>,
    /// The target already is what the plan asks for.
    pub noop: bool,
    /// SHA-256 of what the target resolves to now.
    pub before_hash: Option<String>,
    /// SHA-256 of what it will resolve to.
    pub after_hash: Option<String>,
    /// Why the target's filesystem or attributes forbid the swap (S2), if they do.
    pub immovable: Vec<String>,
    /// The `etc/alternatives/NAME` link that resolving the target (a symlink) passes
    /// through, root-relative: the target is managed by update-alternatives (M6).
    pub alternatives: Option<String>,
    /// Something is mounted on the target (a bind mount): no rename can replace it.
    pub(crate) mounted: bool,
    /// The package that owns the target (M1), when the root has a package database.
    pub(crate) owner: Option<crate::adapters::dpkg::Owner>,
    /// Another holder's diversion of the target's database path (M2): `(holder,
    /// diverted-to)`, the holder `None` for a local diversion.
    pub(crate) foreign_diversion: Option<(Option<String>, String)>,
    /// Switchyard's own diversion of the target's database path, by a live run, whose
    /// diverted-to backup is in the store: its diverted-to path (M2).
    pub(crate) own_diversion: Option<String>,
    /// Other database paths listing the same file as `owner` (merged-/usr: `/bin/x`
    /// and `/usr/bin/x`), with their packages: `(path, package)` (M1, M2).
    pub(crate) other_spellings: Vec<(String, String)>,
}

impl Inspection {
    /// The error of a resource this process ran out of while inspecting (descriptors,
    /// memory, space), if any: `EMFILE`, `ENFILE`, `ENOMEM`, `ENOSPC`.
    pub(crate) fn resource_error(&self) -> Option<Error> {
        use rustix::io::Errno;
        let exhausted =
            [Errno::MFILE, Errno::NFILE, Errno::NOMEM, Errno::NOSPC].map(Errno::raw_os_error);
        let hit = |e: &std::io::Error| e.raw_os_error().is_some_and(|n| exhausted.contains(&n));
        let e = self.dir_io_error.as_ref().filter(|e| hit(e)).or_else(|| {
            self.source
                .as_ref()
                .and_then(|s| s.as_ref().err())
                .filter(|e| hit(e))
        })?;
        Some(Error::io(
            ErrorId::Generic,
            format!(
                "{}: inspecting it ran out of a resource",
                self.action.target
            ),
            std::io::Error::from_raw_os_error(e.raw_os_error().unwrap_or_default()),
        ))
    }

    /// What the target becomes.
    pub fn planned_kind(&self) -> NodeKind {
        match (&self.action.kind, &self.restore_from) {
            (ActionKind::Link, _) => NodeKind::Symlink,
            (ActionKind::Restore, Some((_, node, _))) => node.kind,
            (ActionKind::Restore, None) => self.current.kind,
        }
    }

    /// The journal entry for this action, with `stage` and `backup` names chosen.
    pub(crate) fn record(&self, stage: String, backup: Option<String>) -> ActionRecord {
        let package = self.owner.as_ref().map(|o| crate::state::PackageRecord {
            package: o.package.clone(),
            version: o.version.clone(),
            db_path: o.db_path.clone(),
            // A link diverts to its new backup, unless the path is already diverted to
            // a backup that holds the package's file (the target is swapped already:
            // that diversion stays); a restore undoes the diversion of the backup it
            // puts back (its stage), when it is that backup that is diverted to.
            diverted_to: match self.action.kind {
                ActionKind::Link if self.own_diversion.is_some() => None,
                ActionKind::Link => backup
                    .as_deref()
                    .map(|b| crate::txn::package::store_path(&self.action.target, b)),
                ActionKind::Restore => {
                    let to = crate::txn::package::store_path(&self.action.target, &stage);
                    (self.own_diversion.as_deref() == Some(to.as_str())).then_some(to)
                }
            },
        });
        ActionRecord {
            action_id: self.action.action_id,
            kind: self.action.kind,
            target: self.action.target.clone(),
            prior: self.current.clone(),
            new_link: self.new_link.clone(),
            new_node: self.restore_from.as_ref().map(|(_, n, _)| n.clone()),
            stage,
            backup,
            noop: self.noop,
            package,
            before_hash: self.before_hash.clone(),
            after_hash: self.after_hash.clone(),
        }
    }
}

/// What checks see besides the inspection.
pub struct CheckContext<'a> {
    /// The policy in force.
    pub policy: &'a Policy,
    /// The identity (kind, device, inode) of every target node of the plan as it is
    /// now: a source resolving to one of these would, after the swap, resolve through
    /// its own link (a loop). A set: a 100 000-action plan checks each source in O(1).
    pub targets: std::collections::HashSet<(NodeKind, u64, u64)>,
    /// The root has a package database (M1).
    pub package_db: bool,
    /// Packages dpkg left half-installed, half-configured or needing reinstallation
    /// (M3): `(package, state)`.
    pub unsettled: Vec<(String, String)>,
}

impl<'a> CheckContext<'a> {
    /// The context for checking `items`.
    pub fn new(policy: &'a Policy, items: &[Inspection]) -> CheckContext<'a> {
        let targets = items
            .iter()
            .map(|i| &i.current)
            .filter(|n| n.kind != NodeKind::Absent)
            .map(|n| (n.kind, n.dev, n.ino))
            .collect();
        CheckContext {
            policy,
            targets,
            package_db: false,
            unsettled: Vec::new(),
        }
    }
}

/// Collects one row's verdict and notes.
#[derive(Debug, Default)]
pub struct Findings {
    verdict: Option<Verdict>,
    error_id: Option<ErrorId>,
    notes: Vec<String>,
}

impl Findings {
    /// Stops the plan, as a policy violation.
    pub fn stop(&mut self, note: impl Into<String>) {
        self.stop_as(ErrorId::Policy, note);
    }

    /// Stops the plan with a more specific error class.
    pub fn stop_as(&mut self, id: ErrorId, note: impl Into<String>) {
        self.verdict = Some(Verdict::Stop);
        self.error_id.get_or_insert(id);
        self.notes.push(note.into());
    }

    /// Adds an informational note.
    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }
}

/// One preflight gate.
pub trait Check: Send + Sync {
    /// Examines one inspected action.
    fn check(&self, cx: &CheckContext<'_>, item: &Inspection, out: &mut Findings);
}

/// Runs `checks` over `items`; rows come out sorted by (path, action_id).
pub fn evaluate(
    cx: &CheckContext<'_>,
    checks: &[Box<dyn Check>],
    items: &[Inspection],
) -> PreflightReport {
    let mut rows: Vec<PreflightRow> = items
        .iter()
        .map(|i| {
            let mut f = Findings::default();
            for c in checks {
                c.check(cx, i, &mut f);
            }
            if i.noop {
                f.note("already in effect; nothing to do");
            }
            PreflightRow {
                path: i.action.target.clone(),
                action_id: i.action.action_id,
                kind: i.action.kind,
                current_kind: i.current.kind,
                planned_kind: i.planned_kind(),
                verdict: f.verdict.unwrap_or(Verdict::Ok),
                error_id: f.error_id,
                notes: f.notes,
            }
        })
        .collect();
    rows.sort_by(|a, b| (&a.path, a.action_id).cmp(&(&b.path, b.action_id)));
    PreflightReport { rows }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(path: &str, verdict: Verdict, error_id: Option<ErrorId>) -> PreflightRow {
        PreflightRow {
            path: SafePath::new(path).unwrap(),
            action_id: uuid::Uuid::nil(),
            kind: ActionKind::Restore,
            current_kind: NodeKind::File,
            planned_kind: NodeKind::File,
            verdict,
            error_id,
            notes: vec![format!("{path} note")],
        }
    }

    #[test]
    fn stopped_report_names_its_error_d4_o8() {
        let ok = PreflightReport {
            rows: vec![row("a", Verdict::Ok, None), row("b", Verdict::Warn, None)],
        };
        assert!(ok.error().is_none());
        // Only missing backups: E_BACKUP_MISSING (exit 60), the class apply fails with.
        let missing = PreflightReport {
            rows: vec![
                row("a", Verdict::Ok, None),
                row("b", Verdict::Stop, Some(ErrorId::BackupMissing)),
            ],
        };
        let e = missing.error().unwrap();
        assert_eq!(e.id(), ErrorId::BackupMissing);
        assert_eq!(e.exit_code(), 60);
        assert_eq!(
            e.message(),
            "preflight stopped 1 of 2 actions; first: b: b note"
        );
        assert_eq!(e.summary_error_ids(), [ErrorId::BackupMissing]);
        assert!(e.remediation().is_none());
        // Mixed reasons: E_POLICY, the specific classes first, in row order.
        let mixed = PreflightReport {
            rows: vec![
                row("a", Verdict::Stop, Some(ErrorId::Ownership)),
                row("b", Verdict::Stop, Some(ErrorId::BackupMissing)),
                row("c", Verdict::Stop, Some(ErrorId::Policy)),
                row("d", Verdict::Stop, Some(ErrorId::Ownership)),
            ],
        };
        let e = mixed.error().unwrap();
        assert_eq!(e.id(), ErrorId::Policy);
        assert_eq!(
            e.summary_error_ids(),
            [ErrorId::Ownership, ErrorId::BackupMissing, ErrorId::Policy]
        );
        assert!(e
            .message()
            .starts_with("preflight stopped 4 of 4 actions; first: a: "));
    }
}
