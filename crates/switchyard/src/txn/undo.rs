//! The shared undo loop: used by automatic undo inside apply (R4), by rollback (R7)
//! and by recovery (A3).
//!
//! Contract: [`undo_actions`] undoes actions in reverse order, continues past
//! failures, fsyncs each touched directory once, and on failure reports every
//! target's true state with a remediation line (R5). Each step is
//! `swap::undo`, which is idempotent, so running the loop again after a crash or an
//! error repeats only no-op steps.

use crate::durability::DirSync;
use crate::error::{Error, ErrorId, Result, TargetState};
use crate::facts::{Emitter, Event, Fact, HashAlg, Stage, UndoFact};
use crate::path::Root;
use crate::state::ActionRecord;
use std::collections::BTreeMap;
use std::os::fd::OwnedFd;

/// Undoes `actions` in reverse, continuing past failures, then fsyncs the touched
/// directories. Emits a fact per action through `em` when given (`stage`).
/// Returns whether anything changed, or an error listing every target's state (R5).
pub(crate) fn undo_actions(
    root: &Root,
    mech: crate::swap::Mechanics,
    actions: &[ActionRecord],
    verify: bool,
    mut em: Option<(&mut Emitter, Stage)>,
    on_step: &dyn Fn(usize, usize),
) -> Result<bool> {
    let mut sync = DirSync::default();
    let mut changed = false;
    let mut failures: Vec<Error> = Vec::new();
    let mut states = Vec::new();
    // The directories whose stores may have lost their last entry (R6).
    let mut emptied: BTreeMap<String, OwnedFd> = BTreeMap::new();
    let total = actions.iter().filter(|a| !a.noop).count();
    for (done, a) in actions.iter().rev().filter(|a| !a.noop).enumerate() {
        on_step(done + 1, total);
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
                let store = crate::store::open(&dir, false).map_err(|e| {
                    Error::io(
                        ErrorId::RestoreFailed,
                        format!("{}: opening the backup store", a.target),
                        e,
                    )
                })?;
                let parent = a.target.parent();
                sync.touch(parent, &dir)
                    .and_then(|()| match &store {
                        Some(st) => {
                            sync.touch(&format!("{parent}/{}", crate::store::STORE_DIR), st)
                        }
                        None => Ok(()),
                    })
                    .map_err(|e| Error::io(ErrorId::Generic, "dir handle", e))?;
                let r = crate::swap::undo(&dir, store.as_ref(), a, verify, mech);
                emptied.entry(parent.to_owned()).or_insert(dir);
                r
            });
        let (state, remediation) = match &r {
            Ok(_) => ("restored", "none needed".to_owned()),
            Err(e) => (
                "unknown",
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
            let mut f = undo_fact(*stage, a);
            if let Err(e) = &r {
                f = f.failed(e);
            }
            em.emit(f);
        }
        match r {
            Ok(c) => changed |= c,
            Err(e) => failures.push(e),
        }
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
        0 => Ok(changed),
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
pub(crate) fn undo_fact(stage: Stage, a: &ActionRecord) -> Fact {
    let f = UndoFact {
        action_id: a.action_id,
        path: a.target.to_string(),
        kind: a.kind,
        after_kind: a.prior.kind,
        after_hash: a.before_hash.clone(),
        hash_alg: HashAlg::Sha256,
        failure: None,
    };
    Fact::new(if stage == Stage::Recovery {
        Event::Recovery(f)
    } else {
        Event::Rollback(f)
    })
}
