//! Policy: the knobs preflight and apply obey, and their presets (S3, S7, L3, D4).
//!
//! Contract: everything not explicitly allowed is denied. `allow_roots` is
//! default-deny and `forbid_paths` always wins over it. The `production` preset is
//! strict (root-owned sources, lock manager required, sidecar integrity verified);
//! `dev` relaxes only what unprivileged tests and the demo need.

use crate::path::SafePath;
use serde::{Deserialize, Serialize};

/// A named starting point for a [`Policy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Preset {
    /// Fail closed: lock manager, smoke runner, sidecar integrity and root-owned sources required.
    Production,
    /// For unprivileged tests and the demo: relaxes source ownership, lock and smoke requirements.
    Dev,
}

impl Preset {
    /// Lower-case name, as in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            Preset::Production => "production",
            Preset::Dev => "dev",
        }
    }
}

/// What a run may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The preset these settings started from.
    pub preset: Preset,
    /// Targets must lie under one of these (S7). Empty allows nothing.
    pub allow_roots: Vec<SafePath>,
    /// Targets under any of these are refused, whatever `allow_roots` says (S7).
    pub forbid_paths: Vec<SafePath>,
    /// Sources must be owned by root and not group/world-writable (S3).
    pub strict_source_ownership: bool,
    /// Every target must be owned by a package per the root's package database (S4,
    /// M1): an unowned target, or a root without a database, stops preflight. Off in
    /// both presets, so roots without a package manager work as they are.
    pub strict_ownership: bool,
    /// Refuse to commit without a lock manager (L3).
    pub require_lock_manager: bool,
    /// Refuse to commit without a smoke runner (H6).
    pub require_smoke_runner: bool,
    /// Verify a backup's SHA-256 before restoring it (S6).
    pub require_sidecar_integrity: bool,
    /// Keep the swaps when smoke fails (H3); the run still fails with `E_SMOKE`.
    pub disable_auto_rollback: bool,
    /// Swap a target managed by update-alternatives — one whose symlink chain passes
    /// through `etc/alternatives` (M6) — instead of stopping preflight. Off in both
    /// presets: such a target is normally changed with `update-alternatives --set`,
    /// and update-alternatives rewrites the link when that alternative's packages
    /// change. Rollback puts the alternatives symlink back exactly.
    pub allow_alternatives_takeover: bool,
    /// Longest wait for the lock before `E_LOCKING` (L2).
    pub lock_timeout_ms: u64,
    /// Largest plan accepted.
    pub max_plan_actions: usize,
}

fn paths(list: &[&str]) -> Vec<SafePath> {
    list.iter().filter_map(|p| SafePath::new(p).ok()).collect()
}

impl Policy {
    /// Strict defaults for production hosts.
    pub fn production() -> Policy {
        Policy {
            preset: Preset::Production,
            allow_roots: paths(&["usr/bin", "usr/sbin", "usr/local/bin", "usr/local/sbin"]),
            forbid_paths: paths(&["usr/bin/switchyard", "usr/local/bin/switchyard"]),
            strict_source_ownership: true,
            strict_ownership: false,
            require_lock_manager: true,
            require_smoke_runner: true,
            require_sidecar_integrity: true,
            disable_auto_rollback: false,
            allow_alternatives_takeover: false,
            lock_timeout_ms: 10_000,
            max_plan_actions: 10_000,
        }
    }

    /// Relaxed defaults for unprivileged tests and the demo: sources need not be
    /// root-owned, and lock manager and smoke runner are optional (a WARN fact is
    /// emitted without a lock manager).
    pub fn dev() -> Policy {
        Policy {
            preset: Preset::Dev,
            strict_source_ownership: false,
            require_lock_manager: false,
            require_smoke_runner: false,
            ..Policy::production()
        }
    }

    /// The preset's policy.
    pub fn preset(p: Preset) -> Policy {
        match p {
            Preset::Production => Policy::production(),
            Preset::Dev => Policy::dev(),
        }
    }

    /// Why `target` is not allowed, if it is not (S7).
    pub fn deny_reason(&self, target: &SafePath) -> Option<String> {
        if let Some(f) = self.forbid_paths.iter().find(|f| target.starts_with(f)) {
            return Some(format!("{target} is under forbid_paths entry {f}"));
        }
        if !self.allow_roots.iter().any(|a| target.starts_with(a)) {
            return Some(format!("{target} is not under any allow_roots entry"));
        }
        None
    }
}

/// The default policy is [`Policy::production`]: the strict one. A handle built only
/// to query (`status`, `doctor`, `runs`, `in_effect`) or to undo recorded runs
/// (`rollback`, `recover`, which obey the policy each run recorded, see [`RunPolicy`])
/// needs no other.
impl Default for Policy {
    fn default() -> Policy {
        Policy::production()
    }
}

/// The part of a [`Policy`] that undoing a run depends on. It is recorded in every
/// journal and run record (format 2), so `rollback` and `recover` act under the policy
/// the run was committed under, not under whatever policy the caller's handle was
/// built with (S6, L2, L3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunPolicy {
    /// The preset the run's policy started from (named in error messages).
    pub preset: Preset,
    /// Verify a backup's SHA-256 before restoring it (S6).
    pub require_sidecar_integrity: bool,
    /// Refuse to run without a lock manager (L3).
    pub require_lock_manager: bool,
    /// Longest wait for the lock before `E_LOCKING` (L2).
    pub lock_timeout_ms: u64,
}

impl RunPolicy {
    /// The fields of `p`.
    pub fn of(p: &Policy) -> RunPolicy {
        RunPolicy {
            preset: p.preset,
            require_sidecar_integrity: p.require_sidecar_integrity,
            require_lock_manager: p.require_lock_manager,
            lock_timeout_ms: p.lock_timeout_ms,
        }
    }

    /// What undoing a run recorded under `recorded` obeys, through a handle built with
    /// `handle`: the record's lock timeout, and integrity checks and a lock manager
    /// required when either of the two requires them (the stricter wins). A record
    /// without a policy (format 1) is undone under the handle's.
    pub fn for_undo(handle: &Policy, recorded: Option<&RunPolicy>) -> RunPolicy {
        let mine = RunPolicy::of(handle);
        match recorded {
            Some(r) => RunPolicy {
                lock_timeout_ms: r.lock_timeout_ms,
                ..r.join(mine)
            },
            None => mine,
        }
    }

    /// Both at once, for one lock taken on behalf of several runs: every requirement
    /// of either, and the longer lock timeout.
    pub fn join(self, other: RunPolicy) -> RunPolicy {
        RunPolicy {
            preset: if self.require_lock_manager || !other.require_lock_manager {
                self.preset
            } else {
                other.preset
            },
            require_sidecar_integrity: self.require_sidecar_integrity
                || other.require_sidecar_integrity,
            require_lock_manager: self.require_lock_manager || other.require_lock_manager,
            lock_timeout_ms: self.lock_timeout_ms.max(other.lock_timeout_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_roots_default_deny_and_forbid_wins() {
        let p = |s: &str| SafePath::new(s).unwrap();
        let mut pol = Policy::dev();
        pol.allow_roots = vec![p("usr/bin")];
        pol.forbid_paths = vec![p("usr/bin/sudo")];
        assert_eq!(pol.deny_reason(&p("usr/bin/ls")), None);
        assert!(pol
            .deny_reason(&p("usr/bin/sudo"))
            .unwrap()
            .contains("forbid_paths"));
        assert!(pol
            .deny_reason(&p("etc/passwd"))
            .unwrap()
            .contains("allow_roots"));
        pol.allow_roots.clear();
        assert!(pol.deny_reason(&p("usr/bin/ls")).is_some());
    }

    #[test]
    fn alternatives_takeover_is_off_in_both_presets_m6() {
        assert!(!Policy::production().allow_alternatives_takeover);
        assert!(!Policy::dev().allow_alternatives_takeover);
    }

    #[test]
    fn undo_obeys_the_record_and_the_stricter_integrity_s6() {
        let mut handle = Policy::dev();
        handle.require_sidecar_integrity = false;
        handle.lock_timeout_ms = 5;
        let recorded = RunPolicy::of(&Policy::production());
        let eff = RunPolicy::for_undo(&handle, Some(&recorded));
        assert!(eff.require_sidecar_integrity, "the record's integrity wins");
        assert!(eff.require_lock_manager);
        assert_eq!(eff.lock_timeout_ms, recorded.lock_timeout_ms);
        assert_eq!(eff.preset, Preset::Production);
        // A strict handle is not relaxed by a lax record.
        let mut lax = RunPolicy::of(&Policy::dev());
        lax.require_sidecar_integrity = false;
        let eff = RunPolicy::for_undo(&Policy::production(), Some(&lax));
        assert!(eff.require_sidecar_integrity && eff.require_lock_manager);
        assert_eq!(eff.preset, Preset::Production);
        // No record (format 1): the handle's.
        assert_eq!(RunPolicy::for_undo(&handle, None), RunPolicy::of(&handle));
        let joined = lax.join(RunPolicy::of(&handle));
        assert_eq!(joined.lock_timeout_ms, lax.lock_timeout_ms.max(5));
        assert_eq!(Policy::default(), Policy::production());
    }
}
