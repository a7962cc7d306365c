//! Reports: what each operation returns to its caller, serializable as the CLI's
//! `--json` documents print them (their field names are a stable interface, see
//! `docs/GUARANTEES.md`).

use serde::Serialize;
use std::path::PathBuf;
use uuid::Uuid;

use crate::node::NodeKind;
use crate::plan::ActionKind;

/// What one action did (or, in a dry-run, would do).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActionOutcome {
    /// The action's ID (D1).
    pub action_id: Uuid,
    /// `link` or `restore`.
    pub kind: ActionKind,
    /// Root-relative target path.
    pub target: String,
    /// What the target was before.
    pub before_kind: NodeKind,
    /// What the target is after (or would be, in a dry-run).
    pub after_kind: NodeKind,
    /// SHA-256 of what the target resolved to before (O5).
    pub before_hash: Option<String>,
    /// SHA-256 of what the target resolves to after (O5).
    pub after_hash: Option<String>,
    /// The backup of the prior node, relative to the target's directory: an entry of
    /// its backup store, `.switchyard/<name>.<n>.bak`.
    pub backup: Option<String>,
    /// Whether the target already was what the plan asks (D3).
    pub noop: bool,
    /// Who owns the target (O7): owner, group and package.
    pub provenance: crate::facts::Provenance,
}

/// The result of [`Switchyard::apply`](crate::Switchyard::apply).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApplyReport {
    /// The run (UUIDv7); its record and facts are under `runs/<run_id>/`.
    pub run_id: Uuid,
    /// The plan carried out (D1).
    pub plan_id: Uuid,
    /// Whether this was a dry-run (nothing was modified).
    pub dry_run: bool,
    /// Whether anything on disk changed (D3: false when already in effect).
    pub changed: bool,
    /// The run's `facts.jsonl`, when it was written (commits).
    #[serde(rename = "facts")]
    pub facts_path: Option<PathBuf>,
    /// One outcome per action, in plan order.
    pub actions: Vec<ActionOutcome>,
    /// Bookkeeping that failed after the commit point (O9): the change is in effect,
    /// and `recover` (or the next mutating run) completes what is named here.
    pub warnings: Vec<String>,
}

/// Which run to undo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum RunSelector {
    /// A specific run.
    Id(Uuid),
    /// The newest apply run that has not been undone.
    Last,
}

/// The result of [`Switchyard::rollback`](crate::Switchyard::rollback).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RollbackReport {
    /// This rollback's own run (UUIDv7).
    pub run_id: Uuid,
    /// The plan of the run undone.
    pub plan_id: Option<Uuid>,
    /// The apply run undone.
    pub target_run_id: Uuid,
    /// Whether this was a dry-run.
    pub dry_run: bool,
    /// Whether anything on disk changed.
    pub changed: bool,
    /// Nothing was left to undo (R3).
    pub idempotent_noop: bool,
    /// The run's `facts.jsonl`, when it was written.
    #[serde(rename = "facts")]
    pub facts_path: Option<PathBuf>,
    /// Targets restored (or, dry-run, to restore), in undo order.
    pub actions: Vec<RestoredTarget>,
    /// Bookkeeping that failed after every target was restored (O9): `recover` (or
    /// the next mutating run) completes what is named here.
    pub warnings: Vec<String>,
}

/// One target of a rollback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RestoredTarget {
    /// Root-relative target path.
    pub target: String,
    /// `restored`, or `would_restore` in a dry-run.
    pub result: RestoreResult,
}

/// What a rollback did to one target.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RestoreResult {
    /// Put back as it was before the run.
    Restored,
    /// A dry-run: would be put back.
    WouldRestore,
    /// Put back as the package manager updated it through the diversion since the run
    /// (its MD5 checked against the package database, M5): never an older file than
    /// the one the database says is installed.
    RestoredPackageUpdate,
    /// A dry-run: would be put back as the package manager updated it.
    WouldRestorePackageUpdate,
    /// The package manager replaced the target since the run: it is left as the
    /// package put it, and the superseded backup is removed (M5).
    KeptPackaged,
    /// A dry-run: would be left as the package put it.
    WouldKeepPackaged,
    /// Something else replaced the target since the run and the original is no longer
    /// kept (removed from the backup store by hand): there is nothing to put back, so
    /// the target is left as it is (R5: never reported as restored). Only without
    /// integrity checks; with them the missing backup stops the rollback (S6).
    KeptReplaced,
    /// A dry-run: would be left as it is (its original is gone).
    WouldKeepReplaced,
    /// The package manager removed the file since the run (an upgrade dropped it from
    /// the package, or the package was removed): dpkg deleted the kept original where
    /// it diverted it, and the link is removed too, leaving the target absent as the
    /// package left it (M5).
    RemovedWithPackage,
    /// A dry-run: would be removed, as the package removed its file.
    WouldRemoveWithPackage,
    /// Something else replaced the target; it was not overwritten (R5). Only in a
    /// failed rollback's per-target states: the rollback stays pending (R8).
    Refused,
    /// A dry-run: the commit would refuse to overwrite what replaced the target, and
    /// stay pending until it is moved aside (R8).
    WouldRefuse,
}

impl RestoreResult {
    /// Lower-case name, as in `--json`.
    pub fn as_str(self) -> &'static str {
        match self {
            RestoreResult::Restored => "restored",
            RestoreResult::WouldRestore => "would_restore",
            RestoreResult::RestoredPackageUpdate => "restored_package_update",
            RestoreResult::WouldRestorePackageUpdate => "would_restore_package_update",
            RestoreResult::KeptPackaged => "kept_packaged",
            RestoreResult::WouldKeepPackaged => "would_keep_packaged",
            RestoreResult::KeptReplaced => "kept_replaced",
            RestoreResult::WouldKeepReplaced => "would_keep_replaced",
            RestoreResult::RemovedWithPackage => "removed_with_package",
            RestoreResult::WouldRemoveWithPackage => "would_remove_with_package",
            RestoreResult::Refused => "refused",
            RestoreResult::WouldRefuse => "would_refuse",
        }
    }
}

/// How one interrupted run was settled.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The run had committed; only its journal was left.
    Completed,
    /// The run was undone (apply) or finished (rollback).
    Undone,
}

impl Outcome {
    /// Lower-case name, as in facts.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::Undone => "undone",
        }
    }
}

/// The result of [`Switchyard::recover`](crate::Switchyard::recover).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct RecoveryReport {
    /// The first recovery run (there is one per settled journal), if any.
    pub run_id: Option<Uuid>,
    /// Every recovery run, in the order the journals were settled.
    pub run_ids: Vec<Uuid>,
    /// The plan of the first settled run that had one.
    pub plan_id: Option<Uuid>,
    /// Whether this was a dry-run.
    pub dry_run: bool,
    /// Whether anything on disk changed.
    pub changed: bool,
    /// The first recovery run's `facts.jsonl`, when it was written.
    #[serde(rename = "facts")]
    pub facts_path: Option<PathBuf>,
    /// Each interrupted run and how it was (dry-run: would be) settled.
    pub actions: Vec<SettledRun>,
}

/// One interrupted run settled by recovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SettledRun {
    /// The interrupted run.
    pub run_id: Uuid,
    /// How it was (or, in a dry-run, would be) settled.
    pub outcome: Outcome,
}
