//! The failpoint catalog (T1): every crash window of apply, rollback and recovery has
//! one name here, as a `const`.
//!
//! Contract: product code names failpoints only through these constants (a test
//! scans the sources for string literals). With the `failpoints` cargo feature the
//! `hit` calls are live `fail` crate failpoints, whose configuration the `fail` crate
//! keeps per process: tests configure them only in a process that runs one test
//! (the test kit's `in_own_process`, or the crash child), under `cargo test` and
//! nextest alike (T6). Without the feature `hit` compiles to nothing. No
//! environment variable is read by product code.

/// Apply: the journal is durable, nothing is mutated yet.
pub const APPLY_AFTER_JOURNAL: &str = "apply::after_journal";
/// Apply: the diversions of package-owned targets are written (M2); nothing swapped.
pub const APPLY_AFTER_DIVERT: &str = "apply::after_divert";
/// Apply: the new symlink exists under its staging name.
pub const APPLY_AFTER_STAGE: &str = "apply::after_stage";
/// Apply: the target is the new node; the original sits under the staging name
/// (or, with no original, the target simply appeared).
pub const APPLY_AFTER_SWAP: &str = "apply::after_swap";
/// Apply: the original sits under its backup name.
pub const APPLY_AFTER_BACKUP: &str = "apply::after_backup";
/// Apply: every action swapped, directories not yet fsynced.
pub const APPLY_BEFORE_SYNC: &str = "apply::before_sync";
/// Apply: directories durable and smoke passed; the run record is not yet written.
pub const APPLY_BEFORE_COMMIT: &str = "apply::before_commit";
/// Apply: the run record (commit point) is durable; the journal still exists.
pub const APPLY_AFTER_COMMIT: &str = "apply::after_commit";
/// Rollback: its journal is durable, nothing undone yet.
pub const ROLLBACK_AFTER_JOURNAL: &str = "rollback::after_journal";
/// Undo of one action (rollback, recovery, automatic undo): the original is back at
/// the target; the displaced node is not yet disposed of.
pub const UNDO_AFTER_SWAP: &str = "undo::after_swap";
/// Undo of one action: the displaced node is disposed of.
pub const UNDO_AFTER_DISPOSE: &str = "undo::after_dispose";
/// Undo (rollback, recovery, automatic undo): every action is undone and synced; the
/// diversions of the undone actions are not yet removed (M2).
pub const UNDO_BEFORE_UNDIVERT: &str = "undo::before_undivert";
/// Rollback: every action undone and synced; its record not yet written.
pub const ROLLBACK_BEFORE_COMMIT: &str = "rollback::before_commit";
/// Recovery: every action of the interrupted run is settled; journal not yet removed.
pub const RECOVERY_BEFORE_CLEAR: &str = "recovery::before_clear";

/// Every failpoint, for tests that must cover the whole catalog.
pub const ALL: &[&str] = &[
    APPLY_AFTER_JOURNAL,
    APPLY_AFTER_DIVERT,
    APPLY_AFTER_STAGE,
    APPLY_AFTER_SWAP,
    APPLY_AFTER_BACKUP,
    APPLY_BEFORE_SYNC,
    APPLY_BEFORE_COMMIT,
    APPLY_AFTER_COMMIT,
    ROLLBACK_AFTER_JOURNAL,
    UNDO_AFTER_SWAP,
    UNDO_AFTER_DISPOSE,
    UNDO_BEFORE_UNDIVERT,
    ROLLBACK_BEFORE_COMMIT,
    RECOVERY_BEFORE_CLEAR,
];

/// The failpoints reached only on a root with a package database (around the dpkg
/// diversions, M2): their crash tests run over a real dpkg root
/// (`testkit/tests/packages.rs`), the others' over the plain fixture.
pub const PACKAGE: &[&str] = &[APPLY_AFTER_DIVERT, UNDO_BEFORE_UNDIVERT];

/// Passes failpoint `name`. Configured to `return`, it fails with `EIO`.
#[inline]
pub(crate) fn hit(name: &'static str) -> std::io::Result<()> {
    #[cfg(feature = "failpoints")]
    fail::fail_point!(name, |_| Err(std::io::Error::from_raw_os_error(
        rustix::io::Errno::IO.raw_os_error()
    )));
    let _ = name;
    Ok(())
}
