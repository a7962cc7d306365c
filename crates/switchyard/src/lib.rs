//! Switchyard: swap files on a live Linux system for alternatives, atomically,
//! reversibly and crash-safely, with a structured fact for every step.
//!
//! `docs/GUARANTEES.md` states what is promised (the requirement IDs cited
//! throughout, e.g. A1, R2) and which tests prove it; `ARCHITECTURE.md` is the
//! codemap.
//!
//! # The API in one screen
//!
//! - Configure: [`Switchyard::builder`] with a [`Policy`] ([`Preset`]), a
//!   [`LockManager`] ([`FileLock`]), a [`SmokeRunner`] ([`CommandSmoke`] of
//!   [`CommandCheck`]s), [`FactSink`]s ([`JsonlSink`], [`MemorySink`]).
//! - Say what you want: a [`PlanInput`] of [`SafePath`]s, or a TOML `Manifest`
//!   (feature `manifest`, on by default) that also carries its policy and checks.
//! - The transaction: [`Switchyard::plan`] → [`Switchyard::preflight`]
//!   ([`PreflightReport`]) → [`Switchyard::apply`] ([`ApplyReport`]), undone by
//!   [`Switchyard::rollback`] ([`RollbackReport`]); [`Switchyard::recover`]
//!   ([`RecoveryReport`]) settles what a crash interrupted. Each is dry-run unless
//!   given [`ApplyMode::Commit`].
//! - Read-only questions: [`Switchyard::status`] ([`Status`], with [`DriftState`]),
//!   [`Switchyard::runs`] ([`RunSummary`]), [`Switchyard::in_effect`]
//!   ([`InEffect`]), [`Switchyard::doctor`] ([`Health`]). They never create state
//!   and emit no facts.
//! - Evidence: one [`Fact`] per step ([`facts`] holds the per-stage types and the
//!   JSON Schema); every failure is an [`Error`] whose [`ErrorId`] decides the exit
//!   code.
//!
//! Reports and query results are `serde::Serialize`; the CLI prints them as its
//! `--json` documents.
//!
//! ```no_run
//! use switchyard::{ApplyMode, FileLock, PlanInput, Policy, SafePath, Switchyard};
//! # fn main() -> Result<(), switchyard::Error> {
//! let sy = Switchyard::builder(Policy::dev())
//!     .root("/tmp/root")
//!     .with_lock_manager(FileLock::new())
//!     .build()?;
//! let p = |s: &str| SafePath::new(s).expect("valid path");
//! let plan = sy.plan(&PlanInput::default().link(p("usr/bin/ls"), p("usr/lib/uutils/ls")))?;
//! let report = sy.apply(&plan, ApplyMode::Commit)?;
//! sy.rollback(switchyard::RunSelector::Id(report.run_id), ApplyMode::Commit)?;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

// One home per step of the transaction; see ARCHITECTURE.md for the codemap.
mod adapters;
mod durability;
mod error;
pub mod facts;
#[doc(hidden)]
pub mod failpoints;
mod handle;
#[cfg(feature = "manifest")]
mod manifest;
mod node;
mod path;
mod plan;
mod policy;
mod preflight;
mod query;
mod report;
mod state;
mod store;
mod swap;
mod txn;

pub use adapters::lock::{FileLock, LockGuard, LockManager};
pub use adapters::smoke::{CommandCheck, CommandSmoke, SmokeContext, SmokeOutcome, SmokeRunner};
pub use error::{Error, ErrorId, Result, TargetState};
pub use facts::{Fact, FactSink, JsonlSink, MemorySink};
pub use handle::{ApplyMode, Builder, ProgressFn, Switchyard};
#[cfg(feature = "manifest")]
pub use manifest::Manifest;
pub use node::NodeKind;
pub use path::{PathError, Root, SafePath};
pub use plan::{Action, ActionKind, LinkRequest, Plan, PlanInput, RestoreRequest, RESERVED_PREFIX};
pub use policy::{Policy, Preset, RunPolicy};
pub use preflight::{PreflightReport, PreflightRow, Verdict};
pub use query::{
    ActionEffect, Area, DriftState, Health, HealthVerdict, InEffect, LockState, LockStatus,
    PendingRun, Problem, RecoverStep, RunSummary, StateDirHealth, Status, TargetStatus,
};
pub use report::{
    ActionOutcome, ApplyReport, Outcome, RecoveryReport, RestoreResult, RestoredTarget,
    RollbackReport, RunSelector, SettledRun,
};
pub use state::{RunKind, RunStatus, StateLocation};
