//! The `--json` documents: the library's reports exactly as they serialize, inside
//! the exit status every document carries (`exit_code`, `error_id`). Failed runs
//! print what identifies the run and the error's fields. No key is built by hand.

use serde::Serialize;
use std::path::PathBuf;
use switchyard::{Error, ErrorId, PreflightRow, TargetState};
use uuid::Uuid;

/// A successful command: its report, then exit 0 and no error.
#[derive(Serialize)]
pub struct Done<'a, T: Serialize> {
    #[serde(flatten)]
    pub report: &'a T,
    pub exit_code: i32,
    pub error_id: Option<ErrorId>,
}

impl<'a, T: Serialize> Done<'a, T> {
    pub fn of(report: &'a T) -> Done<'a, T> {
        Done {
            report,
            exit_code: 0,
            error_id: None,
        }
    }
}

/// The fields of an error (O8).
#[derive(Serialize)]
pub struct Failed {
    pub exit_code: i32,
    pub error_id: ErrorId,
    pub summary_error_ids: Vec<ErrorId>,
    pub message: String,
    pub remediation: Option<String>,
}

impl Failed {
    pub fn of(e: &Error) -> Failed {
        Failed {
            exit_code: e.exit_code(),
            error_id: e.id(),
            summary_error_ids: e.summary_error_ids(),
            message: e.message().to_owned(),
            remediation: e.remediation().map(str::to_owned),
        }
    }
}

/// A run that failed: what identifies it, every target's state (R5), the error.
#[derive(Serialize)]
pub struct RunFailed {
    pub run_id: Option<Uuid>,
    pub plan_id: Option<Uuid>,
    /// Rollback only (`Some`), where it is `null` for `--last`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_run_id: Option<Option<Uuid>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_ids: Option<Vec<Uuid>>,
    pub dry_run: bool,
    pub changed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotent_noop: Option<bool>,
    pub facts: Option<PathBuf>,
    pub actions: Vec<TargetResult>,
    pub targets: Vec<TargetState>,
    #[serde(flatten)]
    pub error: Failed,
}

/// One target of a failed rollback, as `actions` lists it.
#[derive(Serialize)]
pub struct TargetResult {
    pub target: String,
    pub result: String,
}

/// `preflight --json`.
#[derive(Serialize)]
pub struct Preflight<'a> {
    pub plan_id: Uuid,
    pub ok: bool,
    pub exit_code: i32,
    pub error_id: Option<ErrorId>,
    pub rows: &'a [PreflightRow],
}
