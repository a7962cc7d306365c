//! Switchyard: swap files on a live Linux system for alternatives, atomically,
//! reversibly and crash-safely. See `ARCHITECTURE.md` for the codemap and
//! `docs/GUARANTEES.md` for the requirement IDs cited throughout: what each one
//! promises and which tests prove it.
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
