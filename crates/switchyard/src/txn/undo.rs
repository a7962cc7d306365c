//! The shared undo loop: used by automatic undo inside apply (R4), by rollback (R7)
//! and by recovery (A3).
//!
//! Contract: [`undo_actions`] undoes actions in reverse order, continues past
//! failures, fsyncs each touched directory once, and on failure reports every
//! target's true state with a remediation line (R5). Each step is
//! `swap::undo`, which is idempotent, so running the loop again after a crash or an
//! error repeats only no-op steps.
//!
//! With the root's package database (M5), a package-owned action is first looked at
//! by [`judge`], which the rollback dry-run uses too, so it predicts the commit:
//! - the backup is no longer the original inode but a file with the package's current
//!   MD5: dpkg upgraded it through the diversion, so that file is what goes back;
//! - the target is no longer ours but a file with the package's current MD5: the
//!   package replaced it since the run, so it stays as the package put it, and the
//!   superseded backup goes;
//! - the package no longer lists the path (an upgrade dropped it, or the package was
//!   removed) and dpkg removed the original from our backup: our link goes too, and
//!   the target ends absent, as the package left it;
//! - a package-owned symlink (dpkg records no MD5 for one) that dpkg rewrote at the
//!   backup name is what goes back when it is the same link or the package's version
//!   changed since the run;
//! - anything else is the ordinary undo (which refuses a foreign node, R5).

use crate::adapters::dpkg::{md5_of, DpkgDb, Owner};
use crate::durability::DirSync;
use crate::error::{Error, ErrorId, Result, TargetState};
use crate::facts::{Emitter, Event, Fact, HashAlg, Stage, UndoFact};
use crate::failpoints::{self as fp, hit};
use crate::node::{Node, NodeKind};
use crate::path::Root;
use crate::plan::ActionKind;
use crate::report::RestoreResult;
use crate::state::ActionRecord;
use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::sync::Arc;

/// How one package-owned action is undone (M5); see the module docs.
pub(crate) enum Judgement {
    /// The ordinary undo.
    Undo,
    /// dpkg upgraded the backup through the diversion: this node (at the backup name,
    /// hashed) is what goes back, checked against the package's MD5.
    UpdatedBackup(Node),
    /// The package replaced the target since the run: it stays; the backup goes.
    KeepPackaged,
    /// The package no longer ships the path (an upgrade dropped it, or the package
    /// was removed) and dpkg removed the original where it diverted it, our backup:
    /// our link goes too, leaving the target absent as the package left it.
    RemovedWithPackage,
    /// Something else replaced the target: the undo refuses to overwrite it (R5), and
    /// a rollback stays pending (R8).
    Refuse,
    /// Something else replaced the target and the original is kept nowhere (not at
    /// the stage or backup name): nothing to put back, the target stays (R5).
    KeepReplaced,
}

impl Judgement {
    /// The per-target result this judgement leads to.
    pub(crate) fn result(&self, commit: bool) -> RestoreResult {
        match (self, commit) {
            (Judgement::Undo, true) => RestoreResult::Restored,
            (Judgement::Undo, false) => RestoreResult::WouldRestore,
            (Judgement::UpdatedBackup(_), true) => RestoreResult::RestoredPackageUpdate,
            (Judgement::UpdatedBackup(_), false) => RestoreResult::WouldRestorePackageUpdate,
            (Judgement::KeepPackaged, true) => RestoreResult::KeptPackaged,
            (Judgement::KeepPackaged, false) => RestoreResult::WouldKeepPackaged,
            (Judgement::RemovedWithPackage, true) => RestoreResult::RemovedWithPackage,
            (Judgement::RemovedWithPackage, false) => RestoreResult::WouldRemoveWithPackage,
            (Judgement::Refuse, true) => RestoreResult::Refused,
            (Judgement::Refuse, false) => RestoreResult::WouldRefuse,
            (Judgement::KeepReplaced, true) => RestoreResult::KeptReplaced,
            (Judgement::KeepReplaced, false) => RestoreResult::WouldKeepReplaced,
        }
    }
}

/// What the package database says now about the path action `a` recorded.
enum Packaged<'a> {
    /// The run recorded no package, or the root has no database.
    Unknown,
    /// The package still lists the path.
    Listed(&'a Owner),
    /// No installed package lists the path any more: its package dropped it in an
    /// upgrade, or was removed or purged.
    Dropped,
}

fn packaged<'a>(db: Option<&'a DpkgDb>, a: &ActionRecord) -> Packaged<'a> {
    let (Some(p), Some(db)) = (a.package.as_ref(), db) else {
        return Packaged::Unknown;
    };
    match db.owners(&a.target).iter().find(|o| o.db_path == p.db_path) {
        Some(o) => Packaged::Listed(o),
        None => Packaged::Dropped,
    }
}

/// Looks at action `a` in `dir` (and its backup store) against the package database
/// (M5). Reads only.
///
/// # Errors
///
/// A node cannot be observed or hashed.
pub(crate) fn judge(
    dir: &OwnedFd,
    store: Option<&OwnedFd>,
    a: &ActionRecord,
    db: Option<&DpkgDb>,
) -> std::io::Result<Judgement> {
    if a.noop {
        return Ok(Judgement::Undo);
    }
    let t = a.target.file_name();
    let now = Node::observe(dir, t, false)?;
    let foreign =
        now.kind != NodeKind::Absent && !crate::swap::is_new(a, &now) && !now.same_inode(&a.prior);
    // What the undo will refuse: a foreign node where the original is still kept.
    let kept = |b: Option<&str>| -> std::io::Result<bool> {
        Ok(match (store, b) {
            (Some(st), Some(b)) => Node::observe(st, b, false)?.same_inode(&a.prior),
            _ => false,
        })
    };
    // A foreign node is refused where the original is kept, and left where it is not.
    let foreign_judgement = || -> std::io::Result<Judgement> {
        Ok(if !foreign {
            Judgement::Undo
        } else if kept(a.backup.as_deref())? || kept(Some(&a.stage))? {
            Judgement::Refuse
        } else {
            Judgement::KeepReplaced
        })
    };
    let at_backup = match (store, a.backup.as_deref()) {
        (Some(st), Some(b)) => Some((st, b, Node::observe(st, b, false)?)),
        _ => None,
    };
    let owner = match packaged(db, a) {
        Packaged::Unknown => return foreign_judgement(),
        Packaged::Dropped => {
            // dpkg removed the diverted file where it diverted it — our backup — and
            // nothing of the original is left: the target goes as the package left it.
            let gone = at_backup
                .as_ref()
                .is_none_or(|(_, _, n)| n.kind == NodeKind::Absent);
            let linked = a.kind == ActionKind::Link && a.prior.kind != NodeKind::Absent;
            return if linked && !foreign && gone && !kept(Some(&a.stage))? {
                Ok(Judgement::RemovedWithPackage)
            } else {
                foreign_judgement()
            };
        }
        Packaged::Listed(o) => o,
    };
    let Some(md5) = owner.md5.as_deref() else {
        // dpkg records no MD5 for a symlink: a symlink dpkg wrote at the backup name
        // is the package's when it is the same link, or the package was upgraded.
        if let Some((st, b, at)) = &at_backup {
            let upgraded = a
                .package
                .as_ref()
                .is_some_and(|p| p.version != owner.version);
            if at.kind == NodeKind::Symlink
                && a.prior.kind == NodeKind::Symlink
                && !at.same_inode(&a.prior)
                && (upgraded || at.link_dest == a.prior.link_dest)
            {
                let at = Node::observe(st, b, true)?;
                return Ok(if foreign {
                    Judgement::Refuse
                } else {
                    Judgement::UpdatedBackup(at)
                });
            }
        }
        return foreign_judgement();
    };
    if foreign && md5_of(dir, t)?.as_deref() == Some(md5) {
        return Ok(Judgement::KeepPackaged);
    }
    if let Some((st, b, at)) = &at_backup {
        if at.kind == NodeKind::File
            && !at.same_inode(&a.prior)
            && md5_of(st, b)?.as_deref() == Some(md5)
        {
            // Hashed only now: it becomes the sidecar of what goes back.
            let at = Node::observe(st, b, true)?;
            return Ok(if foreign {
                Judgement::Refuse
            } else {
                Judgement::UpdatedBackup(at)
            });
        }
    }
    foreign_judgement()
}

/// Before an [`Judgement::UpdatedBackup`] of an action whose target still holds the
/// original (a crash before its swap, or after its undo, and dpkg ran since: it wrote
/// the upgrade at the diverted name, the backup): the update replaces the stale
/// original at the target, in one rename, as dpkg would have replaced it. Returns
/// whether it moved anything.
fn update_unswapped(dir: &OwnedFd, store: Option<&OwnedFd>, a: &ActionRecord) -> Result<bool> {
    let (Some(store), Some(b)) = (store, a.backup.as_deref()) else {
        return Ok(false);
    };
    let t = a.target.file_name();
    let err = |what: &str, e: std::io::Error| {
        Error::io(ErrorId::RestoreFailed, format!("{}: {what}", a.target), e)
    };
    if !Node::observe(dir, t, false)
        .map_err(|e| err("inspecting", e))?
        .same_inode(&a.prior)
    {
        return Ok(false);
    }
    rustix::fs::renameat(store, b, dir, t).map_err(|e| {
        err(
            "moving the package's update over the stale original",
            e.into(),
        )
    })?;
    hit(fp::UNDO_AFTER_SWAP).map_err(|e| err("swapped back", e))?;
    Ok(true)
}

/// After a [`Judgement::UpdatedBackup`]: the original a crash left at a link action's
/// stage name (swapped out, not yet moved to the backup name, where dpkg then wrote
/// its update) is superseded by the update now at the target, and goes. Returns
/// whether it removed anything.
fn drop_superseded_stage(store: Option<&OwnedFd>, a: &ActionRecord) -> Result<bool> {
    let Some(store) = store else {
        return Ok(false);
    };
    let err = |e: std::io::Error| {
        Error::io(
            ErrorId::RestoreFailed,
            format!("{}: removing the superseded original", a.target),
            e,
        )
    };
    if a.kind != ActionKind::Link
        || !Node::observe(store, &a.stage, false)
            .map_err(err)?
            .same_inode(&a.prior)
    {
        return Ok(false);
    }
    rustix::fs::unlinkat(store, &a.stage, rustix::fs::AtFlags::empty())
        .map_err(|e| err(e.into()))?;
    Ok(true)
}

/// Carries out a [`Judgement::KeepPackaged`]: the target stays; what is left of the
/// action in the store (the superseded backup, a stage) goes. Returns whether anything
/// changed.
fn keep_packaged(store: Option<&OwnedFd>, a: &ActionRecord) -> std::io::Result<bool> {
    let Some(store) = store else {
        return Ok(false);
    };
    let mut changed = false;
    for name in [Some(a.stage.as_str()), a.backup.as_deref()]
        .into_iter()
        .flatten()
    {
        if a.kind == crate::plan::ActionKind::Restore && name == a.stage {
            continue;
        }
        match rustix::fs::unlinkat(store, name, rustix::fs::AtFlags::empty()) {
            Ok(()) => changed = true,
            Err(rustix::io::Errno::NOENT) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(changed)
}

/// What [`undo_actions`] did.
pub(crate) struct Undone {
    /// Anything on disk changed.
    pub(crate) changed: bool,
    /// Per action undone, in undo order: its target and result.
    pub(crate) results: Vec<(String, RestoreResult)>,
}

/// After a successful undo: reverses the diversions of `actions` (M2). Does nothing
/// without a package database. A restore's diversion is registered again only when
/// its backup is back in the store: when the package replaced the restored file since
/// (kept as packaged), there is nothing to divert to, and a diversion to a missing
/// backup would send the next upgrade into the store instead of the target.
///
/// # Errors
///
/// The diversions file cannot be rewritten, or a store cannot be read (the caller's
/// journal stays, so recovery does it again).
pub(crate) fn undivert(root: &Root, db: Option<&DpkgDb>, actions: &[ActionRecord]) -> Result<()> {
    let Some(db) = db else {
        return Ok(());
    };
    hit(fp::UNDO_BEFORE_UNDIVERT)
        .map_err(|e| Error::io(ErrorId::RestoreFailed, "before removing diversions", e))?;
    let mut undone: Vec<&ActionRecord> = Vec::new();
    for a in actions.iter().filter(|a| !a.noop) {
        if a.kind == ActionKind::Restore && a.package.is_some() && !backup_is_back(root, a)? {
            continue;
        }
        undone.push(a);
    }
    crate::txn::package::settle(db, &undone, false)
}

/// Whether the backup restore action `a` put back (its stage) is in the store again.
fn backup_is_back(root: &Root, a: &ActionRecord) -> Result<bool> {
    let err = |e| {
        Error::io(
            ErrorId::RestoreFailed,
            format!("{}: inspecting the backup store", a.target),
            e,
        )
    };
    let dir = root.open_parent(&a.target).map_err(err)?;
    Ok(match crate::store::open(&dir, false).map_err(err)? {
        Some(st) => crate::node::lstat(&st, &a.stage).map_err(err)?.is_some(),
        None => false,
    })
}

/// Undoes `actions` in reverse, continuing past failures; once every step succeeded,
/// reverses the diversions of `divert` ([`undivert`], M2); then removes the stores
/// left empty and fsyncs the touched directories. A store is not removed while a
/// diversion into it may remain (a step or the undivert failed): dpkg would fail to
/// unpack into it. Emits a fact per action through `em` when given (`stage`). With the
/// package database, package-owned actions are judged first (M5, module docs).
/// Returns what changed and each target's result, or an error listing every target's
/// state (R5).
#[allow(clippy::too_many_arguments)]
pub(crate) fn undo_actions(
    root: &Root,
    mech: crate::swap::Mechanics,
    actions: &[ActionRecord],
    divert: &[ActionRecord],
    verify: bool,
    db: Option<&DpkgDb>,
    mut em: Option<(&mut Emitter, Stage)>,
    on_step: &dyn Fn(usize, usize),
) -> Result<Undone> {
    let mut results = Vec::new();
    let mut sync = DirSync::default();
    let mut changed = false;
    let mut failures: Vec<Error> = Vec::new();
    let mut states = Vec::new();
    // The directories whose stores may have lost their last entry (R6).
    let mut emptied: BTreeMap<String, Arc<OwnedFd>> = BTreeMap::new();
    let total = actions.iter().filter(|a| !a.noop).count();
    for (done, a) in actions.iter().rev().filter(|a| !a.noop).enumerate() {
        on_step(done + 1, total);
        let mut refusing = false;
        let r = root
            .open_parent(&a.target)
            .map_err(|e| {
                Error::io(
                    ErrorId::RestoreFailed,
                    format!("{}: opening directory", a.target),
                    e,
                )
            })
            .and_then(|dir| {
                // Shared with `sync` and `emptied`: one descriptor per directory.
                let dir = Arc::new(dir);
                let store_err = |e| {
                    Error::io(
                        ErrorId::RestoreFailed,
                        format!("{}: opening the backup store", a.target),
                        e,
                    )
                };
                // A `.switchyard` someone else made (planted after the journal, before
                // the first swap here) holds nothing of ours: the action is undone as
                // if there were no store, which succeeds exactly when the target needs
                // nothing from it (S8, A3); otherwise the refusal is the error.
                let (store, refusal) = match crate::store::open(&dir, false) {
                    Ok(st) => (st.map(Arc::new), None),
                    Err(e) if crate::store::is_refusal(&e) => (None, Some(e)),
                    Err(e) => return Err(store_err(e)),
                };
                let parent = a.target.parent();
                sync.touch(parent, &dir);
                if let Some(st) = &store {
                    sync.touch(&format!("{parent}/{}", crate::store::STORE_DIR), st);
                }
                let judged = judge(&dir, store.as_deref(), a, db).map_err(|e| {
                    Error::io(
                        ErrorId::RestoreFailed,
                        format!("{}: comparing with the package database", a.target),
                        e,
                    )
                });
                let r = judged
                    .and_then(|j| {
                        let result = j.result(true);
                        refusing = matches!(j, Judgement::Refuse);
                        match j {
                            Judgement::Undo | Judgement::Refuse | Judgement::KeepReplaced => {
                                crate::swap::undo(&dir, store.as_deref(), a, verify, mech)
                            }
                            Judgement::UpdatedBackup(node) => {
                                // The package's file replaces the original in the sidecar:
                                // its MD5 was checked against the database (M5).
                                let updated = ActionRecord {
                                    prior: node,
                                    ..a.clone()
                                };
                                update_unswapped(&dir, store.as_deref(), a).and_then(|moved| {
                                    let c = crate::swap::undo(
                                        &dir,
                                        store.as_deref(),
                                        &updated,
                                        false,
                                        mech,
                                    )?;
                                    Ok(drop_superseded_stage(store.as_deref(), a)? || c || moved)
                                })
                            }
                            Judgement::RemovedWithPackage => {
                                // Undone as if the target had been absent: our link goes.
                                let removed = ActionRecord {
                                    prior: Node::absent(),
                                    ..a.clone()
                                };
                                crate::swap::undo(&dir, store.as_deref(), &removed, false, mech)
                            }
                            Judgement::KeepPackaged => {
                                keep_packaged(store.as_deref(), a).map_err(|e| {
                                    Error::io(
                                        ErrorId::RestoreFailed,
                                        format!("{}: removing the superseded backup", a.target),
                                        e,
                                    )
                                })
                            }
                        }
                        .map(|c| (c, result))
                    })
                    .map_err(|e| refusal.map_or(e, store_err));
                emptied.entry(parent.to_owned()).or_insert(dir);
                r
            });
        // R5, R8: a refused target is reported as refused, as the dry-run predicted.
        let failed_as = refusing.then_some(RestoreResult::Refused);
        let (state, remediation) = match &r {
            Ok((_, result)) => (result.as_str(), "none needed".to_owned()),
            Err(e) => (
                failed_as.map_or("unknown", RestoreResult::as_str),
                e.remediation()
                    .map(str::to_owned)
                    .unwrap_or_else(|| format!("inspect {} and its backup by hand", a.target)),
            ),
        };
        states.push(TargetState {
            path: a.target.to_string(),
            state: state.into(),
            remediation,
        });
        if let Some((em, stage)) = em.as_mut() {
            let result = r.as_ref().ok().map(|(_, result)| *result).or(failed_as);
            let mut f = undo_fact(*stage, a, result);
            if let Err(e) = &r {
                f = f.failed(e);
            }
            em.emit(f);
        }
        match r {
            Ok((c, result)) => {
                changed |= c;
                results.push((a.target.to_string(), result));
            }
            Err(e) => failures.push(e),
        }
    }
    // M2: the diversions go once the swaps are back, and before the stores they point
    // into (apply creates those stores before it diverts).
    let diverts = db.is_some()
        && divert
            .iter()
            .any(|a| !a.noop && a.package.as_ref().is_some_and(|p| p.diverted_to.is_some()));
    let undiverted = !diverts
        || (failures.is_empty()
            && undivert(root, db, divert)
                .map_err(|e| failures.push(e))
                .is_ok());
    if undiverted && diverts {
        // The stores apply created before diverting, for actions it never swapped.
        let pre_created = divert
            .iter()
            .filter(|a| !a.noop && a.package.as_ref().is_some_and(|p| p.diverted_to.is_some()));
        for a in pre_created {
            let parent = a.target.parent();
            if emptied.contains_key(parent) {
                continue;
            }
            match root.open_parent(&a.target) {
                Ok(dir) => {
                    let dir = Arc::new(dir);
                    sync.touch(parent, &dir);
                    emptied.insert(parent.to_owned(), dir);
                }
                Err(e) => failures.push(Error::io(
                    ErrorId::RestoreFailed,
                    format!("{}: opening directory", a.target),
                    e,
                )),
            }
        }
    } else if !undiverted {
        emptied.clear();
    }
    // A store goes with its last entry, before the directories are synced (R6).
    for (parent, dir) in &emptied {
        if let Err(e) = crate::store::remove_if_empty(dir) {
            failures.push(Error::io(
                ErrorId::RestoreFailed,
                format!("{parent}: removing the empty backup store"),
                e,
            ));
        }
    }
    if let Err(e) = sync.sync() {
        failures.push(Error::io(ErrorId::RestoreFailed, "syncing directories", e));
    }
    match failures.len() {
        0 => Ok(Undone { changed, results }),
        k => {
            let source = failures.iter_mut().find_map(Error::take_source);
            let e = Error::new(
                ErrorId::RestoreFailed,
                format!(
                    "{k} of {} undo steps failed: {}",
                    states.len(),
                    failures
                        .iter()
                        .map(Error::message)
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            );
            Err(e
                .with_source(source)
                .with_remediation("see each target's state; fix the cause and run the same rollback again (it is idempotent)")
                .with_targets(states))
        }
    }
}

/// The fact of one undone action: `rollback` or `recovery` (`stage` says which).
pub(crate) fn undo_fact(stage: Stage, a: &ActionRecord, result: Option<RestoreResult>) -> Fact {
    let f = UndoFact {
        action_id: a.action_id,
        path: a.target.to_string(),
        kind: a.kind,
        after_kind: a.prior.kind,
        after_hash: a.before_hash.clone(),
        hash_alg: HashAlg::Sha256,
        provenance: crate::facts::Provenance::of(a),
        result,
        failure: None,
    };
    Fact::new(if stage == Stage::Recovery {
        Event::Recovery(f)
    } else {
        Event::Rollback(f)
    })
}
