//! Rollback (R1–R7): undo one specific run from its on-disk record.
//!
//! Contract:
//! - `rollback(run)` reads that run's record — never "the newest backup" (R7) — and
//!   undoes its actions in reverse with [`crate::swap::undo`], journaled like an
//!   apply so a crash mid-rollback is finished by recovery (a rollback's journal is
//!   its own commit point: recovery always rolls it forward).
//! - The run is undone under the policy it recorded (`RunPolicy::for_undo`: its lock
//!   timeout; integrity checks and a lock manager if it or the handle requires them).
//! - With `require_sidecar_integrity`, every backup is verified against its sidecar
//!   before anything moves; one tampered backup refuses the whole rollback with
//!   nothing changed (S6).
//! - A run already undone, or one that changed nothing, is an `idempotent_noop` (R3).
//! - A failing step does not stop the others; the error lists every target's state
//!   with a remediation line (R5). Undoing leaves no staging or backup names (R6).

use crate::adapters::dpkg::DpkgDb;
use crate::error::{Error, ErrorId, Result};
use crate::facts::{Emitter, Event, Fact, RollbackSummaryFact, Stage};
use crate::failpoints::{self as fp, hit};
use crate::handle::{ApplyMode, Switchyard};
use crate::node::Node;
use crate::path::Root;
use crate::policy::RunPolicy;
use crate::report::{RestoredTarget, RollbackReport, RunSelector};
use crate::state::{ActionRecord, RunKind, RunRecord, RunStatus, RECORD_FORMAT};
use crate::txn::package;
use crate::txn::undo::{judge, Judgement};
use crate::txn::undo::{undo_actions, undo_fact};
use uuid::Uuid;

impl Switchyard {
    /// Undoes the run `which` (see the module docs).
    ///
    /// # Errors
    ///
    /// `E_BACKUP_MISSING` when no such run is recorded; `E_POLICY` when a newer live
    /// run changed the same targets (roll that back first); `E_RESTORE_FAILED` when
    /// a backup fails its integrity check (nothing moved) or an undo step fails (the
    /// error lists every target's state, R5); `E_LOCKING` when the lock is not
    /// acquired in time.
    pub fn rollback(&self, which: RunSelector, mode: ApplyMode) -> Result<RollbackReport> {
        let commit = mode == ApplyMode::Commit;
        let state = self.open_state(false)?.ok_or_else(|| {
            Error::new(
                ErrorId::BackupMissing,
                "no runs recorded: the state directory does not exist",
            )
        })?;
        // Held until the rollback returns (L1), and awaited as the run to undo
        // recorded (L2, L3): its record is read before the lock only for that, and
        // selected again under the lock, after recovery.
        let _guard = if commit {
            let rules = match select(&state, which) {
                Ok(r) => RunPolicy::for_undo(&self.policy, r.policy.as_ref()),
                Err(_) => RunPolicy::of(&self.policy),
            };
            Some(self.lock(&state, &rules)?)
        } else {
            None
        };
        if commit {
            self.recover_locked(&state)?;
        }
        let target = select(&state, which)?;
        let target = &target;
        // The run is undone under the policy it was committed under (S6).
        let rules = RunPolicy::for_undo(&self.policy, target.policy.as_ref());
        // Recovery may have changed which run `which` names (a finished rollback of
        // the newest): without a lock manager, that run's policy may refuse (L3).
        if commit && self.lock.is_none() {
            self.lock(&state, &rules)?;
        }
        let mut em = self.emitter(target.plan_id, !commit);
        let noop = !target.is_live_apply() || !target.changed;
        let actions: Vec<ActionRecord> = if noop {
            Vec::new()
        } else {
            target.actions.clone()
        };
        let finish = |em: &mut Emitter, changed: bool, idem: bool, err: Option<&Error>| {
            let mut f = Fact::new(Event::RollbackSummary(RollbackSummaryFact {
                target_run_id: target.run_id,
                action_count: actions.iter().filter(|a| !a.noop).count() as u64,
                changed,
                idempotent_noop: idem,
                failure: None,
            }));
            if let Some(e) = err {
                f = f.failed(e);
            }
            em.emit(f);
            em.flush();
        };
        // M5: what the package database says each target should hold now; the same
        // judgement makes the dry-run's prediction and the commit's undo.
        let paths: Vec<&crate::path::SafePath> = actions.iter().map(|a| &a.target).collect();
        let db = DpkgDb::load(&self.root, &paths)?;
        // M3: dpkg's locks while package-owned targets and the diversions change,
        // taken before anything is judged, and the database read again under them.
        let (_dpkg, db) = if commit {
            package::lock_and_reload(&self.root, db, &actions, &paths, rules.lock_timeout_ms)?
        } else {
            (None, db)
        };
        // Judged once: the prediction (dry-run report) and the backup checks (S6) read
        // the same judgements.
        let judgements: Vec<(&ActionRecord, Judgement)> = actions
            .iter()
            .filter(|a| !a.noop)
            .map(|a| (a, judged(&self.root, a, db.as_ref())))
            .collect();
        let targets: Vec<RestoredTarget> = judgements
            .iter()
            .rev()
            .map(|(a, j)| RestoredTarget {
                target: a.target.to_string(),
                result: j.result(commit),
            })
            .collect();
        let report =
            |em: &Emitter, changed, idem, facts, targets: &[RestoredTarget]| RollbackReport {
                run_id: em.run_id,
                plan_id: target.plan_id,
                target_run_id: target.run_id,
                dry_run: !commit,
                changed,
                idempotent_noop: idem,
                facts_path: facts,
                actions: targets.to_vec(),
                warnings: Vec::new(),
            };
        if noop {
            finish(&mut em, false, true, None);
            return Ok(report(&em, false, true, None, &targets));
        }
        // M3: nothing package-owned moves, nor do the diversions change, while dpkg has
        // left a package half-installed or half-configured (dry-run and commit alike).
        let owned = actions.iter().any(|a| !a.noop && a.package.is_some());
        if let Some(note) = db
            .as_ref()
            .filter(|_| owned)
            .and_then(|db| crate::preflight::checks::unsettled_note(db.unsettled()))
        {
            let e = Error::new(ErrorId::Policy, note).with_remediation(
                "run `dpkg --configure -a` (or `apt-get -f install`), then the same rollback again",
            );
            finish(&mut em, false, false, Some(&e));
            return Err(e.with_run_id(em.run_id));
        }
        // Undoing an older run under a newer one that changed the same targets would
        // strand the newer run's nodes: newest first.
        // A backup name can be reused and a newer run can install the very same link,
        // so the disk alone cannot tell; the records newer than this run can. They are
        // read only when this is not the newest apply (runs/LATEST).
        if !noop && state.latest_apply()? != Some(target.run_id) {
            if let Some((newer, path)) = newer_live_toucher(&state, target)? {
                let e = Error::new(
                    ErrorId::Policy,
                    format!(
                        "run {newer} (newer) also changed {path}; roll it back before run {}",
                        target.run_id
                    ),
                )
                .with_remediation(format!(
                    "switchyard rollback {newer} --commit, then roll back {} again",
                    target.run_id
                ));
                finish(&mut em, false, false, Some(&e));
                return Err(e.with_run_id(em.run_id));
            }
        }
        // S6: verify every backup before anything moves.
        if rules.require_sidecar_integrity {
            if let Err(e) = verify_backups(&self.root, &judgements) {
                finish(&mut em, false, false, Some(&e));
                return Err(e.with_run_id(em.run_id));
            }
        }
        if !commit {
            for (a, t) in actions.iter().rev().filter(|a| !a.noop).zip(&targets) {
                em.emit(undo_fact(Stage::Rollback, a, Some(t.result)));
            }
            finish(&mut em, true, false, None);
            return Ok(report(&em, true, false, None, &targets));
        }
        let mut record = RunRecord {
            format: RECORD_FORMAT,
            run_id: em.run_id,
            kind: RunKind::Rollback,
            plan_id: target.plan_id,
            status: RunStatus::Pending,
            target_run_id: Some(target.run_id),
            actions: actions.clone(),
            changed: false,
            error: None,
            policy: Some(rules),
            undone: false,
        };
        state.write_journal(&record)?;
        // Backups were verified above, before anything moved (S6); hashing them again
        // inside undo would double the rollback's reads.
        let verify = false;
        let undone = hit(fp::ROLLBACK_AFTER_JOURNAL)
            .map_err(|e| Error::io(ErrorId::RestoreFailed, "rollback journal written", e))
            .and_then(|()| {
                undo_actions(
                    &self.root,
                    self.mechanics,
                    &actions,
                    &actions,
                    verify,
                    db.as_ref(),
                    Some((&mut em, Stage::Rollback)),
                    &|d, t| self.progress("rollback", d, t),
                )
            });
        match undone {
            Ok(undone) => {
                let changed = undone.changed;
                let done: Vec<RestoredTarget> = undone
                    .results
                    .into_iter()
                    .map(|(target, result)| RestoredTarget { target, result })
                    .collect();
                record.status = RunStatus::Committed;
                record.changed = changed;
                finish(&mut em, changed, !changed, None);
                // O9: every target is restored; what fails from here on is
                // bookkeeping, which the journal (kept until the end) lets `recover`
                // or the next mutating run complete.
                let settled = hit(fp::ROLLBACK_BEFORE_COMMIT)
                    .map_err(|e| Error::io(ErrorId::RestoreFailed, "before rollback commit", e))
                    .and_then(|()| state.write_record(&record, &em.jsonl()))
                    .and_then(|()| state.mark_undone(&target.run_id, &record.run_id))
                    .and_then(|()| state.clear_journal(&record.run_id));
                let mut rep = report(
                    &em,
                    changed,
                    !changed,
                    Some(state.facts_path(&em.run_id)),
                    &done,
                );
                if let Err(w) = settled {
                    rep.warnings.push(format!(
                        "run {} is rolled back (every target restored), but {}; `switchyard recover --commit` or the next run completes it",
                        target.run_id,
                        w.message()
                    ));
                }
                Ok(rep)
            }
            Err(e) => {
                // R8: a rollback that cannot finish stays pending: its journal is
                // kept, so `status` and `doctor` show the run as partly rolled back
                // and the next mutating command or `recover` finishes it (R5: the
                // error names every target's state).
                finish(&mut em, true, false, Some(&e));
                // O1: the failed rollback's facts are its evidence; the record that
                // finishing it writes keeps them.
                let e = match state.write_facts(&em.run_id, &em.jsonl()) {
                    Ok(()) => e,
                    Err(w) => {
                        let message = format!(
                            "{} (its facts were not saved: {})",
                            e.message(),
                            w.message()
                        );
                        e.with_message(message)
                    }
                };
                let e = e.with_remediation(format!(
                    "the rollback of run {} is pending: fix the cause, then run `switchyard recover --commit` (or any mutating command) to finish it",
                    target.run_id
                ));
                Err(e.with_run_id(em.run_id))
            }
        }
    }
}

/// The apply run `which` names.
fn select(state: &crate::state::StateDir, which: RunSelector) -> Result<RunRecord> {
    match which {
        RunSelector::Id(id) => state
            .record(&id)?
            .filter(|r| r.kind == RunKind::Apply)
            .ok_or_else(|| {
                Error::new(
                    ErrorId::BackupMissing,
                    format!("no apply run {id} is recorded"),
                )
            }),
        RunSelector::Last => last_live_apply(state)?
            .ok_or_else(|| Error::new(ErrorId::BackupMissing, "no applied run left to roll back")),
    }
}

/// The newest apply run that changed something and is not undone, reading records
/// newest first and stopping at the first match.
fn last_live_apply(state: &crate::state::StateDir) -> Result<Option<RunRecord>> {
    for id in state.run_ids()?.into_iter().rev() {
        if let Some(r) = state.record(&id)? {
            if r.is_live_apply() && r.changed {
                return Ok(Some(r));
            }
        }
    }
    Ok(None)
}

/// The first run newer than `target` that is still in effect and changed one of
/// its targets, with that target.
fn newer_live_toucher(
    state: &crate::state::StateDir,
    target: &RunRecord,
) -> Result<Option<(Uuid, String)>> {
    let mine: Vec<&crate::path::SafePath> = target
        .actions
        .iter()
        .filter(|a| !a.noop)
        .map(|a| &a.target)
        .collect();
    for id in state
        .run_ids()?
        .into_iter()
        .filter(|id| *id > target.run_id)
    {
        let Some(r) = state.record(&id)? else {
            continue;
        };
        if !r.is_live_apply() {
            continue;
        }
        if let Some(a) = r
            .actions
            .iter()
            .find(|a| !a.noop && mine.contains(&&a.target))
        {
            return Ok(Some((id, a.target.to_string())));
        }
    }
    Ok(None)
}

/// How action `a` will be undone (M5); the ordinary undo when it cannot be told.
fn judged(root: &Root, a: &ActionRecord, db: Option<&DpkgDb>) -> Judgement {
    root.open_parent(&a.target)
        .and_then(|dir| {
            let store = crate::store::open(&dir, false)?;
            judge(&dir, store.as_ref(), a, db)
        })
        .unwrap_or(Judgement::Undo)
}

/// Checks every backup of `actions` against its sidecar hash (S6). A backup dpkg
/// updated through the diversion is checked against the package's MD5 instead, when
/// it is undone (M5); a target the package replaced keeps no backup to check.
fn verify_backups(root: &Root, judgements: &[(&ActionRecord, Judgement)]) -> Result<()> {
    for (a, j) in judgements {
        // A target whose original is gone is checked too: its backup is missing.
        if !matches!(j, Judgement::Undo | Judgement::KeepReplaced) {
            continue;
        }
        let Some(b) = a.backup.as_deref() else {
            continue;
        };
        let dir = root.open_parent(&a.target).map_err(|e| {
            Error::io(
                ErrorId::RestoreFailed,
                format!("{}: opening directory", a.target),
                e,
            )
        })?;
        let inspect = |e| {
            Error::io(
                ErrorId::RestoreFailed,
                format!("{}: inspecting backup", a.target),
                e,
            )
        };
        let store = crate::store::open(&dir, false).map_err(inspect)?;
        let at = match &store {
            Some(st) => Node::observe(st, b, false).map_err(inspect)?,
            None => Node::absent(),
        };
        if let (true, Some(st)) = (at.same_inode(&a.prior), &store) {
            crate::swap::verify_sidecar(st, a, b)?;
        } else if !Node::observe(&dir, a.target.file_name(), false)
            .is_ok_and(|t| t.same_inode(&a.prior))
        {
            return Err(Error::new(
                ErrorId::BackupMissing,
                format!("{}: backup {b} is missing", a.target),
            )
            .with_remediation(format!(
                "restore {} by hand; its sidecar is in the run record",
                a.target
            )));
        }
    }
    Ok(())
}
