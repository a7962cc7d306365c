//! Facts (O1–O3, O5, O8): one JSON line per step, with a versioned schema.
//!
//! Contract:
//! - Every fact carries the [`Envelope`] (schema version 2); the internal `Emitter`
//!   fills it, numbering `seq` from 0 per run.
//! - A fact is an [`Event`]: one variant per stage, whose type holds exactly the
//!   fields that stage carries, so a stage's required fields are required by the
//!   type. Failed steps carry the O8 error fields ([`Failure`]).
//! - `schema/facts.schema.json` is generated from these types by [`json_schema`] (a
//!   test fails if the committed file differs): one closed shape per stage, unknown
//!   fields rejected.
//! - Facts name paths root-relative, never by host path, so streams from different
//!   temp roots are comparable.
//! - [`redact`] is the canonical redaction (`docs/GUARANTEES.md`, O2); after it, a
//!   dry-run stream equals the commit stream minus `smoke` events.

use crate::error::{Error, ErrorId};
use crate::node::NodeKind;
use crate::plan::ActionKind;
use crate::preflight::Verdict;
use crate::report::Outcome;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use uuid::Uuid;

/// Version of the fact schema (`schema_version`).
pub const SCHEMA_VERSION: u32 = 2;

/// Which step a fact describes: the value of its `event` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[non_exhaustive]
pub enum Stage {
    /// One per planned action.
    #[serde(rename = "plan")]
    Plan,
    /// One per preflight row.
    #[serde(rename = "preflight")]
    Preflight,
    /// The verdict of a preflight.
    #[serde(rename = "preflight.summary")]
    PreflightSummary,
    /// The lock taken (or not) by a mutating run.
    #[serde(rename = "apply.attempt")]
    ApplyAttempt,
    /// One per action of an apply, then the apply's summary.
    #[serde(rename = "apply.result")]
    ApplyResult,
    /// One per smoke check (commit only).
    #[serde(rename = "smoke")]
    Smoke,
    /// One per action undone by a rollback (or an automatic undo).
    #[serde(rename = "rollback")]
    Rollback,
    /// The summary of a rollback.
    #[serde(rename = "rollback.summary")]
    RollbackSummary,
    /// One per action undone by recovery.
    #[serde(rename = "recovery")]
    Recovery,
    /// One per interrupted run that recovery settled.
    #[serde(rename = "recovery.summary")]
    RecoverySummary,
}

impl Stage {
    /// Every stage, in the order of a run.
    pub const ALL: [Stage; 10] = [
        Stage::Plan,
        Stage::Preflight,
        Stage::PreflightSummary,
        Stage::ApplyAttempt,
        Stage::ApplyResult,
        Stage::Smoke,
        Stage::Rollback,
        Stage::RollbackSummary,
        Stage::Recovery,
        Stage::RecoverySummary,
    ];

    /// The name written in the `event` field, e.g. `"apply.result"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Stage::Plan => "plan",
            Stage::Preflight => "preflight",
            Stage::PreflightSummary => "preflight.summary",
            Stage::ApplyAttempt => "apply.attempt",
            Stage::ApplyResult => "apply.result",
            Stage::Smoke => "smoke",
            Stage::Rollback => "rollback",
            Stage::RollbackSummary => "rollback.summary",
            Stage::Recovery => "recovery",
            Stage::RecoverySummary => "recovery.summary",
        }
    }
}

/// `success`, `failure` or `warn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// The step did what it set out to do.
    #[default]
    Success,
    /// The step failed; the fact says why.
    Failure,
    /// The step succeeded with a caveat (see its `notes`).
    Warn,
}

/// The hash algorithm of `before_hash`/`after_hash` (O5): always SHA-256.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum HashAlg {
    /// SHA-256, hex-encoded.
    #[default]
    Sha256,
}

/// Time spent per phase of an apply, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct Perf {
    /// Hashing targets and sources.
    pub hash_ms: u64,
    /// Writing the journal (the sidecar of every backup).
    pub backup_ms: u64,
    /// Staging and swapping.
    pub swap_ms: u64,
    /// Making the touched directories durable.
    pub fsync_ms: u64,
}

/// The `error` object of a failure fact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FactError {
    /// The error's class.
    pub kind: ErrorId,
    /// The OS error number behind it, when an I/O error caused it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno: Option<i32>,
    /// One line naming the path and what went wrong.
    pub message: String,
    /// What to do about it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remediation: Option<String>,
}

/// The error fields of a failed step (O8).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Failure {
    /// The top-level class.
    pub error_id: ErrorId,
    /// The exit code of that class.
    pub exit_code: i32,
    /// Specific causes first, then the class.
    pub summary_error_ids: Vec<ErrorId>,
    /// The details.
    pub error: FactError,
}

impl Failure {
    /// The failure fields of `e`.
    pub fn of(e: &Error) -> Failure {
        Failure {
            error_id: e.id(),
            exit_code: e.exit_code(),
            summary_error_ids: e.summary_error_ids(),
            error: FactError {
                kind: e.id(),
                errno: e.errno(),
                message: e.message().to_owned(),
                remediation: e.remediation().map(str::to_owned),
            },
        }
    }
}

/// The envelope every fact carries (schema version 2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Envelope {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// When the fact was emitted, RFC 3339 UTC.
    pub ts: String,
    /// The run that emitted it (UUIDv7).
    pub run_id: Uuid,
    /// This fact's ID: UUIDv5 of its `seq` in the run's namespace.
    pub event_id: Uuid,
    /// Position in the run's stream, from 0.
    pub seq: u64,
    /// The plan the run carries out, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_id: Option<Uuid>,
    /// Whether the run was a dry-run.
    pub dry_run: bool,
    /// The library version that emitted it.
    pub switchyard_version: String,
    /// How the step ended.
    pub decision: Decision,
}

/// One fact: the envelope, then the fields of its stage. Serialized as one flat JSON
/// object whose `event` field names the stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Fact {
    /// Fields every fact carries.
    #[serde(flatten)]
    pub envelope: Envelope,
    /// The stage and its fields.
    #[serde(flatten)]
    pub event: Event,
}

/// The stage of a fact with the fields that stage carries (`event` is the tag).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event")]
#[non_exhaustive]
pub enum Event {
    /// `plan`.
    #[serde(rename = "plan")]
    Plan(PlanFact),
    /// `preflight`.
    #[serde(rename = "preflight")]
    Preflight(PreflightFact),
    /// `preflight.summary`.
    #[serde(rename = "preflight.summary")]
    PreflightSummary(PreflightSummaryFact),
    /// `apply.attempt`.
    #[serde(rename = "apply.attempt")]
    ApplyAttempt(LockFact),
    /// `apply.result`: per action or the summary.
    #[serde(rename = "apply.result")]
    ApplyResult(ApplyResultFact),
    /// `smoke`.
    #[serde(rename = "smoke")]
    Smoke(SmokeFact),
    /// `rollback`.
    #[serde(rename = "rollback")]
    Rollback(UndoFact),
    /// `rollback.summary`.
    #[serde(rename = "rollback.summary")]
    RollbackSummary(RollbackSummaryFact),
    /// `recovery`.
    #[serde(rename = "recovery")]
    Recovery(UndoFact),
    /// `recovery.summary`.
    #[serde(rename = "recovery.summary")]
    RecoverySummary(RecoverySummaryFact),
}

/// A planned action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PlanFact {
    /// The action's ID (UUIDv5, D1).
    pub action_id: Uuid,
    /// Root-relative target path.
    pub path: String,
    /// `link` or `restore`.
    pub kind: ActionKind,
    /// Root-relative source of a link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// One preflight row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PreflightFact {
    /// The action's ID.
    pub action_id: Uuid,
    /// Root-relative target path.
    pub path: String,
    /// `link` or `restore`.
    pub kind: ActionKind,
    /// What the target is now.
    pub current_kind: NodeKind,
    /// What the target will be.
    pub planned_kind: NodeKind,
    /// `ok`, `warn` or `stop`.
    pub verdict: Verdict,
    /// Reasons behind the verdict.
    pub notes: Vec<String>,
}

/// The verdict of a preflight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PreflightSummaryFact {
    /// Rows in the report.
    pub action_count: u64,
    /// Rows that stop the plan.
    pub stops: u64,
    /// Rows with warnings.
    pub warnings: u64,
    /// Why the plan cannot proceed, when a row stops it.
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
}

/// The lock of a mutating run (L2, L3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LockFact {
    /// `flock`, or `none` without a lock manager.
    pub lock_backend: String,
    /// How long the run waited for the lock.
    pub lock_wait_ms: u64,
    /// How many times it tried.
    pub lock_attempts: u64,
    /// Caveats (e.g. no lock manager configured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<Vec<String>>,
}

/// `apply.result`: one per action, then one summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ApplyResultFact {
    /// What one action did (or, in a dry-run, would do).
    Action(ApplyActionFact),
    /// The apply as a whole.
    Summary(ApplySummaryFact),
}

/// Who owns a target (O7, M1): its owner and group before the run, and the package
/// that owns it per the root's package database (`null` without a database, or when
/// no package owns it; the apply summary's `package_db` says which).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
pub struct Provenance {
    /// Owner of the prior node (`null` when the target was absent).
    pub uid: Option<u32>,
    /// Group of the prior node (`null` when the target was absent).
    pub gid: Option<u32>,
    /// The owning package.
    pub pkg: Option<String>,
    /// Its installed version.
    pub version: Option<String>,
}

impl Provenance {
    /// The provenance an action journaled.
    pub(crate) fn of(a: &crate::state::ActionRecord) -> Provenance {
        let present = a.prior.kind != NodeKind::Absent;
        Provenance {
            uid: present.then_some(a.prior.uid),
            gid: present.then_some(a.prior.gid),
            pkg: a.package.as_ref().map(|p| p.package.clone()),
            version: a.package.as_ref().map(|p| p.version.clone()),
        }
    }
}

/// What one action of an apply did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ApplyActionFact {
    /// The action's ID.
    pub action_id: Uuid,
    /// Root-relative target path.
    pub path: String,
    /// `link` or `restore`.
    pub kind: ActionKind,
    /// What the target was.
    pub before_kind: NodeKind,
    /// What the target is now.
    pub after_kind: NodeKind,
    /// SHA-256 of what the target resolved to before (O5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before_hash: Option<String>,
    /// SHA-256 of what the target resolves to after (O5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_hash: Option<String>,
    /// Always `sha256`.
    pub hash_alg: HashAlg,
    /// The backup of the prior node, relative to the target's directory
    /// (`.switchyard/<name>.<n>.bak`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<String>,
    /// Whether a backup was kept and made durable.
    pub backup_durable: bool,
    /// Whether a non-atomic fallback was used (F2).
    pub degraded: bool,
    /// Why the fallback was needed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub degraded_reason: Option<String>,
    /// Whether the target already was what the plan asks (D3).
    pub noop: bool,
    /// Time spent on this action.
    pub duration_ms: u64,
    /// The filesystem rejected `renameat2`'s flags, so the hard-link method of A1 ran:
    /// the original was hard-linked to its backup name and that link fsynced before the
    /// rename (the target was never missing, so the swap is not `degraded`). Known only
    /// once the swap ran: `false` in a dry-run, and removed by `redact` (O2).
    pub link_fallback: bool,
    /// Who owns the target (O7).
    pub provenance: Provenance,
}

/// Which package database a run consulted (M1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum PackageDb {
    /// The root's dpkg database (`var/lib/dpkg`).
    Dpkg,
    /// The root has no package database.
    None,
}

/// The summary of an apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ApplySummaryFact {
    /// Actions in the plan.
    pub action_count: u64,
    /// Whether anything on disk changed.
    pub changed: bool,
    /// Time spent per phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub perf: Option<Perf>,
    /// Directories fsynced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fsync_count: Option<u64>,
    /// The package database consulted for ownership (M1): `dpkg`, or `none` when the
    /// root has none. Absent when the run failed before looking.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package_db: Option<PackageDb>,
    /// Why the apply failed.
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
}

/// One smoke check (H2–H4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SmokeFact {
    /// The check's name.
    pub check: String,
    /// Why it failed or could not run (H4).
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
}

/// One action undone (rollback, automatic undo, recovery).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct UndoFact {
    /// The action's ID.
    pub action_id: Uuid,
    /// Root-relative target path.
    pub path: String,
    /// `link` or `restore`.
    pub kind: ActionKind,
    /// What the target is after the undo: what it was before the run.
    pub after_kind: NodeKind,
    /// SHA-256 of what the target resolves to after the undo (O5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_hash: Option<String>,
    /// Always `sha256`.
    pub hash_alg: HashAlg,
    /// Who owned the target when it was swapped (O7).
    pub provenance: Provenance,
    /// How it was undone (M5): `restored`, `restored_package_update` (the backup as
    /// dpkg updated it through the diversion, MD5 checked), `kept_packaged` or
    /// `kept_replaced` (replaced by something else and the original gone: left as it
    /// is, R5), `removed_with_package` (the package no longer ships the path: removed,
    /// M5); `refused` when undoing it failed because it would have overwritten a node
    /// Switchyard did not install (R8), absent when undoing it failed otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<crate::report::RestoreResult>,
    /// Why undoing this action failed.
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
}

/// The summary of a rollback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RollbackSummaryFact {
    /// The run being rolled back.
    pub target_run_id: Uuid,
    /// Actions of that run that changed something.
    pub action_count: u64,
    /// Whether anything on disk changed.
    pub changed: bool,
    /// Nothing was left to undo (R3).
    pub idempotent_noop: bool,
    /// Why the rollback failed.
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
}

/// One interrupted run settled by recovery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RecoverySummaryFact {
    /// The interrupted run.
    pub target_run_id: Uuid,
    /// How it was settled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// Whether anything on disk changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed: Option<bool>,
    /// Actions of that run that had changed something.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action_count: Option<u64>,
    /// Why it could not be settled.
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
}

impl Event {
    /// The stage this event belongs to.
    pub fn stage(&self) -> Stage {
        match self {
            Event::Plan(_) => Stage::Plan,
            Event::Preflight(_) => Stage::Preflight,
            Event::PreflightSummary(_) => Stage::PreflightSummary,
            Event::ApplyAttempt(_) => Stage::ApplyAttempt,
            Event::ApplyResult(_) => Stage::ApplyResult,
            Event::Smoke(_) => Stage::Smoke,
            Event::Rollback(_) => Stage::Rollback,
            Event::RollbackSummary(_) => Stage::RollbackSummary,
            Event::Recovery(_) => Stage::Recovery,
            Event::RecoverySummary(_) => Stage::RecoverySummary,
        }
    }

    fn failure_slot(&mut self) -> Option<&mut Option<Failure>> {
        match self {
            Event::PreflightSummary(f) => Some(&mut f.failure),
            Event::ApplyResult(ApplyResultFact::Summary(f)) => Some(&mut f.failure),
            Event::Smoke(f) => Some(&mut f.failure),
            Event::Rollback(f) | Event::Recovery(f) => Some(&mut f.failure),
            Event::RollbackSummary(f) => Some(&mut f.failure),
            Event::RecoverySummary(f) => Some(&mut f.failure),
            Event::Plan(_)
            | Event::Preflight(_)
            | Event::ApplyAttempt(_)
            | Event::ApplyResult(ApplyResultFact::Action(_)) => None,
        }
    }
}

impl Fact {
    /// A successful fact of `event` with an empty envelope (filled in when it is emitted).
    pub(crate) fn new(event: Event) -> Fact {
        Fact {
            envelope: Envelope {
                schema_version: SCHEMA_VERSION,
                ts: String::new(),
                run_id: Uuid::nil(),
                event_id: Uuid::nil(),
                seq: 0,
                plan_id: None,
                dry_run: false,
                switchyard_version: String::new(),
                decision: Decision::Success,
            },
            event,
        }
    }

    /// Sets the decision.
    pub(crate) fn decided(mut self, decision: Decision) -> Fact {
        self.envelope.decision = decision;
        self
    }

    /// Marks this fact as the failure `e` (O8): the error fields are added to stages
    /// that carry them.
    pub(crate) fn failed(mut self, e: &Error) -> Fact {
        self.envelope.decision = Decision::Failure;
        if let Some(slot) = self.event.failure_slot() {
            *slot = Some(Failure::of(e));
        }
        self
    }

    /// The stage this fact describes.
    pub fn stage(&self) -> Stage {
        self.event.stage()
    }

    /// The root-relative target path, on per-action facts.
    pub fn path(&self) -> Option<&str> {
        match &self.event {
            Event::Plan(f) => Some(&f.path),
            Event::Preflight(f) => Some(&f.path),
            Event::ApplyResult(ApplyResultFact::Action(f)) => Some(&f.path),
            Event::Rollback(f) | Event::Recovery(f) => Some(&f.path),
            _ => None,
        }
    }

    /// The error fields, on a failed step that carries them.
    pub fn failure(&self) -> Option<&Failure> {
        match &self.event {
            Event::PreflightSummary(f) => f.failure.as_ref(),
            Event::ApplyResult(ApplyResultFact::Summary(f)) => f.failure.as_ref(),
            Event::Smoke(f) => f.failure.as_ref(),
            Event::Rollback(f) | Event::Recovery(f) => f.failure.as_ref(),
            Event::RollbackSummary(f) => f.failure.as_ref(),
            Event::RecoverySummary(f) => f.failure.as_ref(),
            Event::Plan(_)
            | Event::Preflight(_)
            | Event::ApplyAttempt(_)
            | Event::ApplyResult(ApplyResultFact::Action(_)) => None,
        }
    }
}

/// Where facts go, besides the run's own record. Implementations must be cheap per
/// call and thread-safe.
///
/// A sink is a copy: the authoritative stream of a commit is the run's
/// `facts.jsonl`, written durably with its record in the state directory. An error
/// a sink returns therefore neither fails nor undoes the run, and is not reported;
/// a sink that must not lose facts has to buffer or alert on its own.
pub trait FactSink: Send + Sync {
    /// Records one fact.
    fn emit(&self, fact: &Fact) -> io::Result<()>;
    /// Makes everything recorded so far durable (or at least flushed).
    fn flush(&self) -> io::Result<()> {
        Ok(())
    }
}

/// Appends facts as JSON lines to a file.
pub struct JsonlSink {
    out: Mutex<BufWriter<std::fs::File>>,
}

impl JsonlSink {
    /// Creates (truncating) `path`.
    ///
    /// # Errors
    ///
    /// The error of creating the file.
    pub fn create(path: &Path) -> io::Result<JsonlSink> {
        Ok(JsonlSink {
            out: Mutex::new(BufWriter::new(std::fs::File::create(path)?)),
        })
    }

    /// Appends to `path`, creating it if needed.
    ///
    /// # Errors
    ///
    /// The error of opening the file.
    pub fn append(path: &Path) -> io::Result<JsonlSink> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(JsonlSink {
            out: Mutex::new(BufWriter::new(f)),
        })
    }
}

impl FactSink for JsonlSink {
    fn emit(&self, fact: &Fact) -> io::Result<()> {
        let mut out = self
            .out
            .lock()
            .map_err(|_| io::Error::other("facts sink poisoned"))?;
        serde_json::to_writer(&mut *out, fact)?;
        out.write_all(b"\n")
    }

    fn flush(&self) -> io::Result<()> {
        let mut out = self
            .out
            .lock()
            .map_err(|_| io::Error::other("facts sink poisoned"))?;
        out.flush()?;
        out.get_ref().sync_data()
    }
}

/// Keeps facts in memory (for embedding and tests).
#[derive(Clone, Default)]
pub struct MemorySink {
    facts: Arc<Mutex<Vec<Fact>>>,
}

impl MemorySink {
    /// Everything recorded so far.
    pub fn facts(&self) -> Vec<Fact> {
        self.facts.lock().map(|f| f.clone()).unwrap_or_default()
    }

    /// Forgets everything recorded so far.
    pub fn clear(&self) {
        if let Ok(mut f) = self.facts.lock() {
            f.clear();
        }
    }
}

impl FactSink for MemorySink {
    fn emit(&self, fact: &Fact) -> io::Result<()> {
        self.facts
            .lock()
            .map_err(|_| io::Error::other("facts sink poisoned"))?
            .push(fact.clone());
        Ok(())
    }
}

/// Fills the envelope and hands facts of one run to every sink, keeping a copy for
/// the run's `facts.jsonl`.
pub(crate) struct Emitter {
    sinks: Vec<Arc<dyn FactSink>>,
    pub(crate) run_id: Uuid,
    pub(crate) plan_id: Option<Uuid>,
    dry_run: bool,
    seq: u64,
    pub(crate) log: Vec<Fact>,
}

impl Emitter {
    pub(crate) fn new(
        sinks: Vec<Arc<dyn FactSink>>,
        plan_id: Option<Uuid>,
        dry_run: bool,
    ) -> Emitter {
        Emitter {
            sinks,
            run_id: Uuid::now_v7(),
            plan_id,
            dry_run,
            seq: 0,
            log: Vec::new(),
        }
    }

    pub(crate) fn emit(&mut self, mut f: Fact) {
        let e = &mut f.envelope;
        e.ts = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
        e.run_id = self.run_id;
        e.event_id = Uuid::new_v5(&self.run_id, &self.seq.to_be_bytes());
        e.seq = self.seq;
        e.plan_id = self.plan_id;
        e.dry_run = self.dry_run;
        e.switchyard_version = env!("CARGO_PKG_VERSION").to_owned();
        self.seq += 1;
        // A sink's error neither fails nor undoes the run (see `FactSink`).
        for s in &self.sinks {
            let _ = s.emit(&f);
        }
        self.log.push(f);
    }

    pub(crate) fn flush(&mut self) {
        for s in &self.sinks {
            let _ = s.flush();
        }
    }

    /// The run's facts as JSON lines.
    pub(crate) fn jsonl(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for f in &self.log {
            if serde_json::to_writer(&mut out, f).is_ok() {
                out.push(b'\n');
            }
        }
        out
    }
}

/// Fields removed by [`redact`]: durations, perf, lock timing, `dry_run` and
/// `link_fallback` (what only the commit observes).
const REDACTED_AWAY: &[&str] = &[
    "duration_ms",
    "link_fallback",
    "perf",
    "lock_wait_ms",
    "lock_attempts",
    "dry_run",
];
const NIL: &str = "00000000-0000-0000-0000-000000000000";

/// The canonical redaction (`docs/GUARANTEES.md`, "Facts"): `ts` to the epoch, run and
/// event IDs to a fixed value, timing fields and `dry_run` removed.
pub fn redact(fact: &Value) -> Value {
    let mut v = fact.clone();
    if let Value::Object(m) = &mut v {
        for k in REDACTED_AWAY {
            m.remove(*k);
        }
        for (k, val) in m.iter_mut() {
            if k == "ts" {
                *val = Value::from("1970-01-01T00:00:00Z");
            } else if (k == "event_id" || k.ends_with("run_id")) && val.is_string() {
                *val = Value::from(NIL);
            }
        }
    }
    v
}

/// The stages and the shape of each one's own fields, for [`json_schema`]: `(stage,
/// schema of its fields, per-action)`; `apply.result` has two shapes.
fn stage_schemas() -> Vec<(Stage, schemars::Schema)> {
    use schemars::schema_for;
    vec![
        (Stage::Plan, schema_for!(PlanFact)),
        (Stage::Preflight, schema_for!(PreflightFact)),
        (Stage::PreflightSummary, schema_for!(PreflightSummaryFact)),
        (Stage::ApplyAttempt, schema_for!(LockFact)),
        (Stage::ApplyResult, schema_for!(ApplyActionFact)),
        (Stage::ApplyResult, schema_for!(ApplySummaryFact)),
        (Stage::Smoke, schema_for!(SmokeFact)),
        (Stage::Rollback, schema_for!(UndoFact)),
        (Stage::RollbackSummary, schema_for!(RollbackSummaryFact)),
        (Stage::Recovery, schema_for!(UndoFact)),
        (Stage::RecoverySummary, schema_for!(RecoverySummaryFact)),
    ]
}

/// The JSON Schema of a facts line, as committed in `schema/facts.schema.json`,
/// generated from the types: one closed object shape per stage (the [`Envelope`]'s
/// fields plus the stage's own, unknown fields rejected), and for every failed step
/// that carries error fields, those fields required (O8).
pub fn json_schema() -> Value {
    let envelope = serde_json::to_value(schemars::schema_for!(Envelope)).unwrap_or(Value::Null);
    let mut defs = serde_json::Map::new();
    let mut take_defs = |v: &mut Value| {
        if let Some(Value::Object(d)) = v.as_object_mut().and_then(|m| m.remove("$defs")) {
            defs.extend(d);
        }
    };
    let mut envelope = envelope;
    take_defs(&mut envelope);
    let mut shapes = Vec::new();
    for (stage, schema) in stage_schemas() {
        let mut own = serde_json::to_value(schema).unwrap_or(Value::Null);
        take_defs(&mut own);
        let mut props = envelope["properties"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        props.insert("event".into(), serde_json::json!({"const": stage.as_str()}));
        if let Some(p) = own["properties"].as_object() {
            props.extend(p.clone());
        }
        let mut required: Vec<Value> = envelope["required"].as_array().cloned().unwrap_or_default();
        required.push("event".into());
        required.extend(own["required"].as_array().cloned().unwrap_or_default());
        let mut shape = serde_json::json!({
            "title": own.get("title").cloned().unwrap_or(Value::Null),
            "type": "object",
            "properties": props,
            "required": required,
            "additionalProperties": false,
        });
        if own["properties"].get("error_id").is_some() {
            shape["if"] = serde_json::json!({"properties": {"decision": {"const": "failure"}}});
            shape["then"] = serde_json::json!({"required": ["error_id", "exit_code", "summary_error_ids", "error"]});
        }
        shapes.push(shape);
    }
    serde_json::json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Switchyard fact",
        "description": format!("One line of a Switchyard facts.jsonl (schema_version {SCHEMA_VERSION})"),
        "oneOf": shapes,
        "$defs": defs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_is_canonical() {
        let f = Fact::new(Event::RollbackSummary(RollbackSummaryFact {
            target_run_id: Uuid::now_v7(),
            action_count: 1,
            changed: true,
            idempotent_noop: false,
            failure: None,
        }));
        let action = Fact::new(Event::ApplyResult(ApplyResultFact::Action(
            ApplyActionFact {
                action_id: Uuid::nil(),
                path: "usr/bin/ls".into(),
                kind: ActionKind::Link,
                before_kind: NodeKind::File,
                after_kind: NodeKind::Symlink,
                before_hash: None,
                after_hash: None,
                hash_alg: HashAlg::Sha256,
                backup: None,
                backup_durable: false,
                degraded: false,
                degraded_reason: None,
                noop: false,
                duration_ms: 5,
                link_fallback: false,
                provenance: Provenance::default(),
            },
        )));
        let mut e = Emitter::new(vec![], None, true);
        e.emit(f);
        e.emit(action);
        let a = redact(&serde_json::to_value(&e.log[1]).unwrap());
        assert!(a.get("duration_ms").is_none() && a["path"] == "usr/bin/ls");
        let v = redact(&serde_json::to_value(&e.log[0]).unwrap());
        assert_eq!(v["ts"], "1970-01-01T00:00:00Z");
        assert_eq!(v["run_id"], NIL);
        assert_eq!(v["target_run_id"], NIL);
        assert_eq!(v["event_id"], NIL);
        assert!(v.get("dry_run").is_none());
        assert_eq!(v["seq"], 0);
    }

    #[test]
    fn every_stage_has_a_schema_shape() {
        let schema = json_schema();
        let consts: Vec<&str> = schema["oneOf"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["properties"]["event"]["const"].as_str().unwrap())
            .collect();
        for stage in Stage::ALL {
            assert!(consts.contains(&stage.as_str()), "{stage:?} has no shape");
        }
    }
}
