//! The package manager's part of a transaction (M2, M3, M5): dpkg diversions as
//! journaled steps, dpkg's locks around them, and what rollback restores when dpkg
//! has written since.
//!
//! Contract:
//! - A package-owned target whose prior node is kept gets a diversion of its database
//!   path (as its package spells it) to its backup's path, holder `switchyard`, no
//!   rename; a restore that puts such a backup back removes its diversion. Apply
//!   writes the journal first (it records each diversion), then the diversions, then
//!   swaps; every undo (automatic, rollback, recovery) swaps back first and then
//!   reverses the diversions of the actions it undid. Both directions ([`settle`]) are
//!   idempotent and re-read the diversions file under dpkg's lock, so a crash on
//!   either side is settled by running the same step again.
//! - A diversion is written only if the record's database path names the action's own
//!   target (through the root's merged-/usr aliases) and points into that target's
//!   backup store: a crafted record cannot divert or undivert any other path (S9).
//! - dpkg's locks are held from before the journal until the run is settled whenever a
//!   run touches a package-owned target.

use crate::adapters::dpkg::{self, Diversion, DpkgDb, DpkgLock};
use crate::error::{Error, ErrorId, Result};
use crate::plan::ActionKind;
use crate::state::ActionRecord;
use crate::store::STORE_DIR;
use std::time::Duration;

/// The absolute path, as dpkg sees it, of the store entry `entry` beside `target`.
pub(crate) fn store_path(target: &crate::path::SafePath, entry: &str) -> String {
    match target.parent() {
        "" => format!("/{STORE_DIR}/{entry}"),
        p => format!("/{p}/{STORE_DIR}/{entry}"),
    }
}

/// The diversion action `a` concerns, if it recorded one and it is well-formed for its
/// target (see the module docs): a link action registers it (to its new backup); a
/// restore action removes it (it puts back the backup it pointed to, its stage).
fn diversion_of(db: &DpkgDb, a: &ActionRecord) -> Option<Diversion> {
    let p = a.package.as_ref()?;
    let to = p.diverted_to.as_deref()?;
    let entry = match a.kind {
        ActionKind::Link => a.backup.as_deref()?,
        ActionKind::Restore => a.stage.as_str(),
    };
    let well_formed = db.canonical(&p.db_path) == a.target.as_str()
        && p.db_path.starts_with('/')
        && to == store_path(&a.target, entry);
    well_formed.then(|| Diversion::ours(&p.db_path, to))
}

fn divert_err(what: &str, e: impl Into<std::io::Error>) -> Error {
    Error::io(
        ErrorId::Generic,
        format!("{what} var/lib/dpkg/diversions"),
        e.into(),
    )
}

/// Brings the diversions file in step with `actions` (M2): `forward` (apply) registers
/// the diversions of link actions and removes those of restore actions; backward (every
/// undo) does the opposite. Every other entry is kept as it is; nothing is written when
/// the file already says so.
///
/// # Errors
///
/// The diversions file cannot be read or written, or dpkg would refuse the result.
pub(crate) fn settle(db: &DpkgDb, actions: &[&ActionRecord], forward: bool) -> Result<()> {
    let mut all = dpkg::read_diversions(db.admin())?;
    let before = all.clone();
    for a in actions.iter().filter(|a| !a.noop) {
        let Some(d) = diversion_of(db, a) else {
            continue;
        };
        if (a.kind == ActionKind::Link) == forward {
            if !all.contains(&d) {
                // A re-applied target (M4): our older diversion of the same path is
                // superseded by this one, which points at this run's backup.
                all.retain(|x| !(x.is_ours() && x.from == d.from));
                all.push(d);
            }
        } else {
            all.retain(|x| x != &d);
        }
    }
    if all != before {
        dpkg::write_diversions(db.admin(), &all).map_err(|e| divert_err("writing", e))?;
    }
    Ok(())
}

/// Takes dpkg's locks when the root has a package database and any of `actions`
/// changes something (M3): even a target no package owned when the database was read
/// may be shipped by a package dpkg is installing right now.
///
/// # Errors
///
/// `E_LOCKING` naming the holder, when not acquired within `timeout_ms`.
pub(crate) fn lock_if_needed(
    db: Option<&DpkgDb>,
    actions: &[ActionRecord],
    timeout_ms: u64,
) -> Result<Option<DpkgLock>> {
    match db {
        Some(db) if actions.iter().any(|a| !a.noop) => Some(DpkgLock::acquire(
            db.admin(),
            Duration::from_millis(timeout_ms),
        ))
        .transpose(),
        _ => Ok(None),
    }
}

/// [`lock_if_needed`], then, once dpkg's locks are held, the database read again for
/// `targets`: what was read before waiting for the locks may be stale (dpkg ran
/// meanwhile, M3, M5). Returns the locks and the database to act on.
///
/// # Errors
///
/// `E_LOCKING` as [`lock_if_needed`]; the database cannot be read again.
pub(crate) fn lock_and_reload(
    root: &crate::path::Root,
    db: Option<DpkgDb>,
    actions: &[ActionRecord],
    targets: &[&crate::path::SafePath],
    timeout_ms: u64,
) -> Result<(Option<DpkgLock>, Option<DpkgDb>)> {
    let lock = lock_if_needed(db.as_ref(), actions, timeout_ms)?;
    if lock.is_none() {
        return Ok((None, db));
    }
    Ok((lock, DpkgDb::load(root, targets)?))
}

/// Whether `a` and `b` (two reads of a database) say the same about `targets`: their
/// owners, the diversions of those owners' paths, and the packages dpkg left unsettled.
pub(crate) fn same_view(a: &DpkgDb, b: &DpkgDb, targets: &[&crate::path::SafePath]) -> bool {
    a.unsettled() == b.unsettled()
        && targets.iter().all(|t| {
            a.owners(t) == b.owners(t)
                && a.owners(t)
                    .iter()
                    .all(|o| a.diversion_of(&o.db_path) == b.diversion_of(&o.db_path))
        })
}
