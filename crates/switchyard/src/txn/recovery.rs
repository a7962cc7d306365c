//! Recovery (A3): settle every run a crash left unsettled, before anything else.
//!
//! Contract: for each pending journal, oldest first —
//! - an apply whose record says `committed` reached its commit point: it is
//!   completed (its journal removed);
//! - any other apply is undone, action by action in reverse, from whatever state
//!   each action's three names are in (`swap::undo`);
//! - a rollback is rolled forward (undo again; every step is idempotent) and its
//!   record written as committed.
//!
//! Each journal is settled under the policy its run recorded (the stricter of it and
//! the handle's for integrity checks, `RunPolicy::for_undo`); the lock is awaited as
//! the pending runs' policies say.
//!
//! Then a `recovery` record is written and the journal removed. Temporary journal
//! files an interrupted write left (`journal/.<run>.json.tmp`) are removed first: such
//! a journal never became durable, so its run never mutated anything. Each step is
//! idempotent and the journal goes last, so a crash during recovery is repaired by
//! running it again. Every mutating entry point calls [`Switchyard::recover_locked`]
//! under the lock before its own work.

use crate::adapters::dpkg::DpkgDb;
use crate::error::{Error, ErrorId, Result};
use crate::facts::{Event, Fact, RecoverySummaryFact, Stage};
use crate::failpoints::{self as fp, hit};
use crate::handle::{ApplyMode, Switchyard};
use crate::policy::RunPolicy;
use crate::report::{Outcome, RecoveryReport, SettledRun};
use crate::state::{RunKind, RunRecord, RunStatus, StateDir, RECORD_FORMAT};
use crate::txn::package;
use crate::txn::undo::undo_actions;

impl Switchyard {
    /// Settles interrupted runs. A dry-run only reports what it would do.
    ///
    /// # Errors
    ///
    /// `E_LOCKING` when the lock is not acquired in time; `E_RECOVERY` when a run
    /// cannot be settled (the journal stays, and the error lists every target's
    /// state, R5); `E_GENERIC` when the state directory cannot be read or written.
    pub fn recover(&self, mode: ApplyMode) -> Result<RecoveryReport> {
        let Some(state) = self.open_state(false)? else {
            return Ok(RecoveryReport {
                dry_run: mode == ApplyMode::DryRun,
                ..Default::default()
            });
        };
        let pending = state.pending();
        if mode == ApplyMode::DryRun {
            let pending = pending?;
            let mut rep = RecoveryReport {
                dry_run: true,
                ..Default::default()
            };
            for j in &pending {
                rep.plan_id = rep.plan_id.or(j.plan_id);
                rep.actions.push(SettledRun {
                    run_id: j.run_id,
                    outcome: planned_outcome(&state, j)?,
                });
            }
            return Ok(rep);
        }
        // The journals were read before the lock only to know how to wait for it
        // (their recorded policies); `recover_locked` reads them again under it and
        // reports what cannot be read. A journal a concurrent run removed between
        // listing and reading is not an error here.
        let rules = pending
            .unwrap_or_default()
            .iter()
            .map(|j| RunPolicy::for_undo(&self.policy, j.policy.as_ref()))
            .reduce(RunPolicy::join)
            .unwrap_or_else(|| RunPolicy::of(&self.policy));
        let _guard = self.lock(&state, &rules)?;
        self.recover_locked(&state)
    }

    /// Settles every pending journal; the caller holds the lock.
    pub(crate) fn recover_locked(&self, state: &StateDir) -> Result<RecoveryReport> {
        let mut rep = RecoveryReport::default();
        // A journal that never became durable belongs to a run that changed nothing.
        state.remove_stale_journal_temporaries()?;
        for j in state.pending()? {
            if j.kind == RunKind::Rollback {
                check_rollback_journal(state, &j)?;
            }
            let outcome = planned_outcome(state, &j)?;
            let rules = RunPolicy::for_undo(&self.policy, j.policy.as_ref());
            let mut em = self.emitter(j.plan_id, false);
            let mut changed = false;
            // M2, M3: the run's diversions are settled with its swaps, under dpkg's lock.
            let targets: Vec<&crate::path::SafePath> =
                j.actions.iter().map(|a| &a.target).collect();
            let db = DpkgDb::load(&self.root, &targets)?;
            let (_dpkg, db) = package::lock_and_reload(
                &self.root,
                db,
                &j.actions,
                &targets,
                rules.lock_timeout_ms,
            )?;
            if outcome == Outcome::Completed {
                if let Some(db) = &db {
                    let applied: Vec<&crate::state::ActionRecord> =
                        j.actions.iter().filter(|a| !a.noop).collect();
                    package::settle(db, &applied, true)?;
                }
            }
            if outcome == Outcome::Undone {
                let verify = rules.require_sidecar_integrity;
                match undo_actions(
                    &self.root,
                    self.mechanics,
                    &j.actions,
                    &j.actions,
                    verify,
                    db.as_ref(),
                    Some((&mut em, Stage::Recovery)),
                    &|_, _| {},
                ) {
                    Ok(u) => changed = u.changed,
                    Err(e) => {
                        let message = format!(
                            "interrupted run {} could not be recovered: {}",
                            j.run_id,
                            e.message()
                        );
                        let e = e.within(ErrorId::Recovery).with_message(message);
                        let f = Fact::new(Event::RecoverySummary(RecoverySummaryFact {
                            target_run_id: j.run_id,
                            outcome: None,
                            changed: None,
                            action_count: None,
                            failure: None,
                        }));
                        em.emit(f.failed(&e));
                        em.flush();
                        return Err(e.with_run_id(em.run_id));
                    }
                }
                if j.kind == RunKind::Rollback {
                    let done = RunRecord {
                        status: RunStatus::Committed,
                        changed,
                        ..j.clone()
                    };
                    // Keep the rollback's own record and facts if it got that far
                    // (a rollback that failed saved its facts without a record, R8).
                    if state.record(&j.run_id)?.is_none() {
                        state.write_record(&done, &state.facts(&j.run_id)?)?;
                    }
                    if let Some(t) = j.target_run_id {
                        state.mark_undone(&t, &j.run_id)?;
                    }
                }
            }
            em.emit(Fact::new(Event::RecoverySummary(RecoverySummaryFact {
                target_run_id: j.run_id,
                outcome: Some(outcome),
                changed: Some(changed),
                action_count: Some(j.actions.iter().filter(|a| !a.noop).count() as u64),
                failure: None,
            })));
            let rec = RunRecord {
                format: RECORD_FORMAT,
                run_id: em.run_id,
                kind: RunKind::Recovery,
                plan_id: j.plan_id,
                status: RunStatus::Committed,
                target_run_id: (j.kind == RunKind::Apply && outcome == Outcome::Undone)
                    .then_some(j.run_id),
                actions: Vec::new(),
                changed,
                error: None,
                policy: Some(rules),
                undone: false,
            };
            state.write_record(&rec, &em.jsonl())?;
            hit(fp::RECOVERY_BEFORE_CLEAR)
                .map_err(|e| Error::io(ErrorId::Recovery, "before clearing journal", e))?;
            state.clear_journal(&j.run_id)?;
            em.flush();
            rep.plan_id = rep.plan_id.or(j.plan_id);
            if rep.run_id.is_none() {
                rep.run_id = Some(em.run_id);
                rep.facts_path = Some(state.facts_path(&em.run_id));
            }
            rep.actions.push(SettledRun {
                run_id: j.run_id,
                outcome,
            });
            rep.run_ids.push(em.run_id);
            rep.changed |= changed;
        }
        Ok(rep)
    }
}

/// S9: a rollback journal is acted on only if it is what `rollback` writes: it names a
/// recorded apply run and carries exactly that run's actions. Anything else (say, a
/// crafted journal that would mark a live run undone without undoing it) is refused,
/// with nothing moved.
fn check_rollback_journal(state: &StateDir, j: &RunRecord) -> Result<()> {
    let target = match j.target_run_id {
        Some(t) => state.record(&t)?.filter(|r| r.kind == RunKind::Apply),
        None => None,
    };
    match target {
        Some(t) if t.actions == j.actions => Ok(()),
        _ => Err(Error::new(
            ErrorId::Recovery,
            format!(
                "the journal of rollback {} does not match the run it names ({}); refusing to act on it",
                j.run_id,
                j.target_run_id.map_or("none".to_owned(), |t| t.to_string())
            ),
        )
        .with_remediation("inspect the journal file by hand; nothing was changed")),
    }
}

/// How recovery settles the pending journal `j`: completes it (an apply past its
/// commit point) or undoes it.
pub(crate) fn planned_outcome(state: &StateDir, j: &RunRecord) -> Result<Outcome> {
    if j.kind == RunKind::Apply {
        if let Some(r) = state.record(&j.run_id)? {
            if r.status == RunStatus::Committed {
                return Ok(Outcome::Completed);
            }
        }
    }
    Ok(Outcome::Undone)
}
