//! Error identifiers and exit codes (the exit-code table of `docs/GUARANTEES.md`, O8).
//!
//! Contract: every failure the library reports is an [`Error`] carrying exactly one
//! top-level [`ErrorId`]; its exit code comes from [`ErrorId::exit_code`], the single
//! mapping the CLI uses. `summary_error_ids` lists the specific causes first, then the
//! top-level class, without duplicates.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io;

/// Stable error identifiers: the class of an [`Error`], each with its exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[non_exhaustive]
pub enum ErrorId {
    /// Unexpected failure (exit 1).
    #[serde(rename = "E_GENERIC")]
    Generic,
    /// Bad arguments or manifest (exit 2).
    #[serde(rename = "E_USAGE")]
    Usage,
    /// Preflight stopped, or a policy was violated (exit 10).
    #[serde(rename = "E_POLICY")]
    Policy,
    /// An ownership or provenance check failed (exit 20).
    #[serde(rename = "E_OWNERSHIP")]
    Ownership,
    /// The lock was not acquired in time (exit 30).
    #[serde(rename = "E_LOCKING")]
    Locking,
    /// The swap itself failed (exit 40).
    #[serde(rename = "E_ATOMIC_SWAP")]
    AtomicSwap,
    /// A cross-device fallback was needed and not allowed, or failed (exit 50).
    #[serde(rename = "E_EXDEV")]
    Exdev,
    /// A restore asked for a backup that is not there (exit 60).
    #[serde(rename = "E_BACKUP_MISSING")]
    BackupMissing,
    /// A restore step failed (exit 70).
    #[serde(rename = "E_RESTORE_FAILED")]
    RestoreFailed,
    /// Health verification failed (exit 80).
    #[serde(rename = "E_SMOKE")]
    Smoke,
    /// An interrupted run could not be fully recovered (exit 90).
    #[serde(rename = "E_RECOVERY")]
    Recovery,
}

impl ErrorId {
    /// Every identifier, in the order of the exit-code table of `docs/GUARANTEES.md`.
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

    /// The process exit code for this error (the exit-code table of `docs/GUARANTEES.md`).
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
    /// `restored`, or `unknown` when its undo step failed (the remediation says
    /// what to inspect).
    pub state: String,
    /// What an operator should do about it.
    pub remediation: String,
}

/// A failure of a Switchyard operation.
///
/// Its class is an [`ErrorId`] ([`Error::id`]), from which the exit code follows
/// ([`Error::exit_code`]); more specific causes come first in
/// [`Error::summary_error_ids`] (O8). When an I/O error caused it, that error is kept
/// and returned by [`std::error::Error::source`]. The details are boxed so that
/// `Result<T, Error>` stays one pointer wide.
#[derive(Debug)]
pub struct Error(Box<Inner>);

#[derive(Debug)]
struct Inner {
    id: ErrorId,
    causes: Vec<ErrorId>,
    message: String,
    source: Option<io::Error>,
    remediation: Option<String>,
    targets: Vec<TargetState>,
    run_id: Option<uuid::Uuid>,
}

impl Error {
    /// A new error of class `id` with a one-line `message` naming the path and what
    /// went wrong.
    pub fn new(id: ErrorId, message: impl Into<String>) -> Error {
        Error(Box::new(Inner {
            id,
            causes: Vec::new(),
            message: message.into(),
            source: None,
            remediation: None,
            targets: Vec::new(),
            run_id: None,
        }))
    }

    /// An error of class `id` caused by the I/O error `err` while doing `what`. The
    /// message reads `what: err`; `err` itself is kept as the [`source`].
    ///
    /// [`source`]: std::error::Error::source
    pub fn io(id: ErrorId, what: impl fmt::Display, err: io::Error) -> Error {
        let mut e = Error::new(id, format!("{what}: {err}"));
        e.0.source = Some(err);
        e
    }

    /// Adds a remediation line: what an operator should do about it.
    pub fn with_remediation(mut self, r: impl Into<String>) -> Error {
        self.0.remediation = Some(r.into());
        self
    }

    /// Re-classifies this error under `class`, keeping the old class as a cause.
    pub fn within(mut self, class: ErrorId) -> Error {
        if self.0.id != class {
            let old = self.0.id;
            self.0.causes.insert(0, old);
            self.0.id = class;
        }
        self
    }

    /// Adds `causes` (most specific first) behind any causes already recorded.
    pub(crate) fn with_causes(mut self, causes: impl IntoIterator<Item = ErrorId>) -> Error {
        for c in causes {
            if c != self.0.id && !self.0.causes.contains(&c) {
                self.0.causes.push(c);
            }
        }
        self
    }

    /// Puts `cause` first among the causes (it is the most specific one).
    pub(crate) fn caused_by(mut self, cause: ErrorId) -> Error {
        if cause != self.0.id {
            self.0.causes.retain(|c| *c != cause);
            self.0.causes.insert(0, cause);
        }
        self
    }

    /// Replaces the message, keeping the class, causes, source and everything else
    /// (e.g. to prefix the name of the file the error is about).
    pub fn with_message(mut self, message: impl Into<String>) -> Error {
        self.0.message = message.into();
        self
    }

    /// Records the state of every target of a failed rollback or recovery (R5).
    pub(crate) fn with_targets(mut self, targets: Vec<TargetState>) -> Error {
        self.0.targets = targets;
        self
    }

    /// Records the run that failed.
    pub(crate) fn with_run_id(mut self, run_id: uuid::Uuid) -> Error {
        self.0.run_id = Some(run_id);
        self
    }

    /// Keeps `err` as the source, unless one is already recorded.
    pub(crate) fn with_source(mut self, err: Option<io::Error>) -> Error {
        if self.0.source.is_none() {
            self.0.source = err;
        }
        self
    }

    /// Takes the I/O source out of this error (to move it to another one).
    pub(crate) fn take_source(&mut self) -> Option<io::Error> {
        self.0.source.take()
    }

    /// The top-level class; decides the exit code.
    pub fn id(&self) -> ErrorId {
        self.0.id
    }

    /// More specific causes, most specific first (may be empty).
    pub fn causes(&self) -> &[ErrorId] {
        &self.0.causes
    }

    /// One line, naming the path and what went wrong.
    pub fn message(&self) -> &str {
        &self.0.message
    }

    /// The OS error number behind the failure, when an I/O error caused it.
    pub fn errno(&self) -> Option<i32> {
        self.0.source.as_ref().and_then(io::Error::raw_os_error)
    }

    /// What to do about it, when there is advice to give.
    pub fn remediation(&self) -> Option<&str> {
        self.0.remediation.as_deref()
    }

    /// For a failed rollback or recovery: every target's state (R5). Empty otherwise.
    pub fn targets(&self) -> &[TargetState] {
        &self.0.targets
    }

    /// The run that failed, when one had started (its facts are in the state
    /// directory under `runs/<run_id>/`).
    pub fn run_id(&self) -> Option<uuid::Uuid> {
        self.0.run_id
    }

    /// Process exit code of the class (see the exit-code table in
    /// `docs/GUARANTEES.md`).
    pub fn exit_code(&self) -> i32 {
        self.0.id.exit_code()
    }

    /// Specific causes first, then the top-level class, each once (O8).
    pub fn summary_error_ids(&self) -> Vec<ErrorId> {
        let mut ids = Vec::with_capacity(self.0.causes.len() + 1);
        for id in self.0.causes.iter().copied().chain([self.0.id]) {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        ids
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.0.id, self.0.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0
            .source
            .as_ref()
            .map(|e| e as &(dyn std::error::Error + 'static))
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

    #[test]
    fn io_error_is_kept_as_source() {
        use std::error::Error as _;
        let io = io::Error::from_raw_os_error(5);
        let e = Error::io(ErrorId::AtomicSwap, "renameat2 usr/bin/ls", io);
        assert_eq!(e.errno(), Some(5));
        let src = e.source().and_then(|s| s.downcast_ref::<io::Error>());
        assert_eq!(src.and_then(io::Error::raw_os_error), Some(5));
        assert!(e.message().starts_with("renameat2 usr/bin/ls: "));
        assert!(Error::new(ErrorId::Policy, "x").source().is_none());
    }
}
