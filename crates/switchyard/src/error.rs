//! Error identifiers and exit codes (SPEC §4, O8).
//!
//! Contract: every failure the library reports is an [`Error`] carrying exactly one
//! top-level [`ErrorId`]; its exit code comes from [`ErrorId::exit_code`], the single
//! mapping the CLI uses. `summary_error_ids` lists the specific causes first, then the
//! top-level class, without duplicates.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io;

/// Stable error identifiers of SPEC §4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ErrorId {
    #[serde(rename = "E_GENERIC")]
    Generic,
    #[serde(rename = "E_USAGE")]
    Usage,
    #[serde(rename = "E_POLICY")]
    Policy,
    #[serde(rename = "E_OWNERSHIP")]
    Ownership,
    #[serde(rename = "E_LOCKING")]
    Locking,
    #[serde(rename = "E_ATOMIC_SWAP")]
    AtomicSwap,
    #[serde(rename = "E_EXDEV")]
    Exdev,
    #[serde(rename = "E_BACKUP_MISSING")]
    BackupMissing,
    #[serde(rename = "E_RESTORE_FAILED")]
    RestoreFailed,
    #[serde(rename = "E_SMOKE")]
    Smoke,
    #[serde(rename = "E_RECOVERY")]
    Recovery,
}

impl ErrorId {
    /// Every identifier, in the order of SPEC §4.
    pub const ALL: [ErrorId; 11] = [
        ErrorId::Generic,
        ErrorId::Usage,
        ErrorId::Policy,
        ErrorId::Ownership,
        ErrorId::Locking,
        ErrorId::AtomicSwap,
        ErrorId::Exdev,
        ErrorId::BackupMissing,
        ErrorId::RestoreFailed,
        ErrorId::Smoke,
        ErrorId::Recovery,
    ];

    /// The process exit code for this error (SPEC §4).
    pub const fn exit_code(self) -> i32 {
        match self {
            ErrorId::Generic => 1,
            ErrorId::Usage => 2,
            ErrorId::Policy => 10,
            ErrorId::Ownership => 20,
            ErrorId::Locking => 30,
            ErrorId::AtomicSwap => 40,
            ErrorId::Exdev => 50,
            ErrorId::BackupMissing => 60,
            ErrorId::RestoreFailed => 70,
            ErrorId::Smoke => 80,
            ErrorId::Recovery => 90,
        }
    }

    /// The identifier as written in facts and JSON output, e.g. `"E_POLICY"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorId::Generic => "E_GENERIC",
            ErrorId::Usage => "E_USAGE",
            ErrorId::Policy => "E_POLICY",
            ErrorId::Ownership => "E_OWNERSHIP",
            ErrorId::Locking => "E_LOCKING",
            ErrorId::AtomicSwap => "E_ATOMIC_SWAP",
            ErrorId::Exdev => "E_EXDEV",
            ErrorId::BackupMissing => "E_BACKUP_MISSING",
            ErrorId::RestoreFailed => "E_RESTORE_FAILED",
            ErrorId::Smoke => "E_SMOKE",
            ErrorId::Recovery => "E_RECOVERY",
        }
    }
}

impl fmt::Display for ErrorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The state one target was left in by a failed rollback or recovery (R5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TargetState {
    /// Root-relative target path.
    pub path: String,
    /// `restored`, `applied`, `untouched` or `unknown`.
    pub state: String,
    /// What an operator should do about it.
    pub remediation: String,
}

/// A failure of a Switchyard operation (details boxed: `Result<T, Error>` stays small;
/// fields are reached through `Deref`).
#[derive(Debug)]
pub struct Error(Box<ErrorData>);

/// The details of an [`Error`].
#[derive(Debug)]
pub struct ErrorData {
    /// Top-level class; decides the exit code.
    pub id: ErrorId,
    /// More specific causes, most specific first (may be empty).
    pub causes: Vec<ErrorId>,
    /// One line, naming the path and what went wrong.
    pub message: String,
    /// The OS error number behind the failure, when there is one.
    pub errno: Option<i32>,
    /// What to do about it.
    pub remediation: Option<String>,
    /// For failed rollbacks/recoveries: every target's state (R5).
    pub targets: Vec<TargetState>,
    /// The run that failed, when one had started (its facts are in the state dir).
    pub run_id: Option<uuid::Uuid>,
}

impl Error {
    /// A new error of class `id`.
    pub fn new(id: ErrorId, message: impl Into<String>) -> Error {
        Error(Box::new(ErrorData {
            id,
            causes: Vec::new(),
            message: message.into(),
            errno: None,
            remediation: None,
            targets: Vec::new(),
            run_id: None,
        }))
    }

    /// An error of class `id` caused by an I/O error while doing `what`.
    pub fn io(id: ErrorId, what: impl fmt::Display, err: io::Error) -> Error {
        let mut e = Error::new(id, format!("{what}: {err}"));
        e.errno = err.raw_os_error();
        e
    }

    /// Adds a remediation line.
    pub fn with_remediation(mut self, r: impl Into<String>) -> Error {
        self.remediation = Some(r.into());
        self
    }

    /// Re-classifies this error under `class`, keeping the old class as a cause.
    pub fn within(mut self, class: ErrorId) -> Error {
        if self.id != class {
            let old = self.id;
            self.causes.insert(0, old);
            self.id = class;
        }
        self
    }

    /// Process exit code (SPEC §4).
    pub fn exit_code(&self) -> i32 {
        self.id.exit_code()
    }

    /// Specific causes first, then the top-level class (O8).
    pub fn summary_error_ids(&self) -> Vec<ErrorId> {
        let mut ids = Vec::with_capacity(self.causes.len() + 1);
        for id in self.causes.iter().copied().chain([self.id]) {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        ids
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.id, self.message)
    }
}

impl std::error::Error for Error {}

impl std::ops::Deref for Error {
    type Target = ErrorData;
    fn deref(&self) -> &ErrorData {
        &self.0
    }
}

impl std::ops::DerefMut for Error {
    fn deref_mut(&mut self) -> &mut ErrorData {
        &mut self.0
    }
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_match_spec_table() {
        let codes: Vec<i32> = ErrorId::ALL.iter().map(|e| e.exit_code()).collect();
        assert_eq!(codes, [1, 2, 10, 20, 30, 40, 50, 60, 70, 80, 90]);
        for id in ErrorId::ALL {
            let json = serde_json::to_string(&id).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", id.as_str()));
        }
    }

    #[test]
    fn summary_lists_causes_then_class_once() {
        let e = Error::new(ErrorId::Smoke, "x").within(ErrorId::Policy);
        assert_eq!(e.summary_error_ids(), [ErrorId::Smoke, ErrorId::Policy]);
        let e = Error::new(ErrorId::Smoke, "x").within(ErrorId::Smoke);
        assert_eq!(e.summary_error_ids(), [ErrorId::Smoke]);
    }
}
