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

pub mod adapters;
mod apply;
mod durability;
mod engine;
pub mod error;
pub mod facts;
pub mod failpoints;
pub mod journal;
#[cfg(feature = "manifest")]
mod manifest;
pub mod node;
pub mod path;
pub mod plan;
pub mod policy;
pub mod preflight;
mod query;
mod recovery;
mod rollback;
mod swap;

pub use adapters::lock::{FileLock, LockManager};
pub use adapters::smoke::{CommandCheck, CommandSmoke, SmokeOutcome, SmokeRunner};
pub use apply::{ActionOutcome, ApplyReport};
pub use engine::{ApplyMode, Builder, ProgressFn, Switchyard};
pub use error::{Error, ErrorId, Result};
pub use facts::{Fact, FactSink, JsonlSink, MemorySink};
pub use journal::StateLocation;
#[cfg(feature = "manifest")]
pub use manifest::Manifest;
pub use path::{PathError, Root, SafePath};
pub use plan::{Plan, PlanInput};
pub use policy::{Policy, Preset, RunPolicy};
pub use query::{
    ActionEffect, Area, DriftState, Health, HealthVerdict, InEffect, LockState, LockStatus,
    PendingRun, Problem, RecoverStep, RunSummary, StateDirHealth, Status, TargetStatus,
};
pub use recovery::{Outcome, RecoveryReport};
pub use rollback::{RollbackReport, RunSelector};
