//! Apply (A1–A4, R4, D2, D3): journal, swap, sync, smoke, commit — or undo it all.
//!
//! The transaction, in order:
//! 1. lock; settle pending journals (recovery, A3);
//! 2. inspect and preflight; any stop fails with nothing changed;
//! 3. choose staging and backup names; a dry-run reports here (O2);
//! 4. write the journal durably (every prior snapshot = the sidecars, S6);
//! 5. swap each action (`swap::apply`); on any failure undo every touched action,
//!    the failing one included, in reverse order (R4);
//! 6. fsync each touched directory once (A4);
//! 7. smoke (H3): a failure undoes the run unless `disable_auto_rollback`;
//! 8. write the run record — the commit point — then remove the journal.
//!
//! Invariant: until step 8's record is durable, recovery undoes the run; after it,
//! recovery completes it (removes the journal). Nothing before step 4 mutates.

use crate::adapters::dpkg::DpkgDb;
use crate::adapters::smoke::SmokeContext;
use crate::error::{Error, ErrorId, Result};
use crate::facts::{
    ApplyActionFact, ApplyResultFact, ApplySummaryFact, Emitter, Event, Fact, HashAlg, PackageDb,
    Perf, Provenance, SmokeFact, Stage,
};
use crate::failpoints::{self as fp, hit};
use crate::handle::{ApplyMode, Switchyard};
use crate::node::{lstat, NodeKind};
use crate::plan::{ActionKind, Plan};
use crate::policy::RunPolicy;
use crate::report::{ActionOutcome, ApplyReport};
use crate::state::{ActionRecord, RunKind, RunRecord, RunStatus, StateDir, RECORD_FORMAT};
use crate::store;
use crate::txn::package;
use crate::txn::undo::undo_actions;
use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Instant;

pub(crate) fn ms(t: Instant) -> u64 {
    t.elapsed().as_millis() as u64
}

/// The first free backup name for `name` in `store` (deterministic for a given tree;
/// the first one when there is no store yet).
fn backup_name(store: Option<&OwnedFd>, name: &str) -> Result<String> {
    for n in 1u32.. {
        let cand = store::entry_name(name, &format!("{n}.bak"));
        let Some(store) = store else {
            return Ok(cand);
        };
        match lstat(store, &cand) {
            Ok(None) => return Ok(cand),
            Ok(Some(_)) => continue,
            Err(e) => {
                return Err(Error::io(
                    ErrorId::Generic,
                    format!("probing backup name {cand}"),
                    e,
                ))
            }
        }
    }
    Err(Error::new(ErrorId::Generic, "no free backup name"))
}

/// Where each action happens: its target's directory (by action) and the stores.
struct Places {
    dirs: Vec<Option<Arc<OwnedFd>>>,
    stores: Stores,
    packages: Option<DpkgDb>,
}

/// The stores of the directories a plan touches, opened once per directory.
#[derive(Default)]
struct Stores(BTreeMap<String, Option<Arc<OwnedFd>>>);

impl Stores {
    /// The store of `dir` (root-relative `parent`), created when `create`. A store
    /// someone else made (not ours, or open to others) is refused (S8, S9).
    fn get(&mut self, parent: &str, dir: &OwnedFd, create: bool) -> Result<Option<&Arc<OwnedFd>>> {
        let known = self.0.get(parent).is_some_and(|s| s.is_some() || !create);
        if !known {
            let fd = store::open(dir, create).map_err(|e| {
                if !store::is_refusal(&e) {
                    // An I/O error (e.g. EMFILE), not a store someone else made.
                    return Error::io(
                        ErrorId::Generic,
                        format!("{parent}: opening the backup store {}", store::STORE_DIR),
                        e,
                    );
                }
                // F2: a store on another mount cannot take originals by rename.
                let id = if e.kind() == std::io::ErrorKind::CrossesDevices {
                    ErrorId::Exdev
                } else {
                    ErrorId::Policy
                };
                Error::io(
                    id,
                    format!("{parent}: backup store {}", store::STORE_DIR),
                    e,
                )
                .with_remediation(format!(
                    "remove or fix {parent}/{} (it must be a directory owned by this user, mode 0700)",
                    store::STORE_DIR
                ))
            })?;
            self.0.insert(parent.to_owned(), fd.map(Arc::new));
        }
        Ok(self.0.get(parent).and_then(Option::as_ref))
    }
}

fn outcome(r: &ActionRecord, after_kind: NodeKind) -> ActionOutcome {
    ActionOutcome {
        action_id: r.action_id,
        kind: r.kind,
        target: r.target.to_string(),
        before_kind: r.prior.kind,
        after_kind,
        before_hash: r.before_hash.clone(),
        after_hash: r.after_hash.clone(),
        backup: r.backup.as_deref().filter(|_| !r.noop).map(store::shown),
        noop: r.noop,
        provenance: Provenance::of(r),
    }
}

fn result_fact(o: &ActionOutcome, duration_ms: u64, link_fallback: bool) -> Fact {
    Fact::new(Event::ApplyResult(ApplyResultFact::Action(
        ApplyActionFact {
            action_id: o.action_id,
            path: o.target.clone(),
            kind: o.kind,
            before_kind: o.before_kind,
            after_kind: o.after_kind,
            before_hash: o.before_hash.clone(),
            after_hash: o.after_hash.clone(),
            hash_alg: HashAlg::Sha256,
            backup: o.backup.clone(),
            backup_durable: o.backup.is_some(),
            degraded: false,
            degraded_reason: None,
            noop: o.noop,
            duration_ms,
            link_fallback,
            provenance: o.provenance.clone(),
        },
    )))
}

/// Fails the run: emits the summary failure fact and attaches the run ID.
fn fail(em: &mut Emitter, e: Error, action_count: usize) -> Error {
    let f = Fact::new(Event::ApplyResult(ApplyResultFact::Summary(
        ApplySummaryFact {
            action_count: action_count as u64,
            changed: false,
            perf: None,
            fsync_count: None,
            package_db: None,
            failure: None,
        },
    )));
    em.emit(f.failed(&e));
    em.flush();
    e.with_run_id(em.run_id)
}

impl Switchyard {
    /// Applies `plan`: a dry-run reports what would happen; a commit makes it so,
    /// all or nothing (see the module docs).
    ///
    /// # Errors
    ///
    /// A commit that fails has left nothing in effect (every touched action undone,
    /// R4), unless the error says otherwise: `E_POLICY` (preflight stopped, or a
    /// policy requirement such as a lock manager is missing), `E_BACKUP_MISSING`,
    /// `E_LOCKING` (lock not acquired in time), `E_ATOMIC_SWAP` (a swap failed),
    /// `E_SMOKE` (a smoke check failed: the run was rolled back), `E_RECOVERY` (an
    /// earlier interrupted run could not be settled first), `E_GENERIC` otherwise.
    /// [`Error::run_id`](crate::Error::run_id) names the run whose facts tell the
    /// details.
    pub fn apply(&self, plan: &Plan, mode: ApplyMode) -> Result<ApplyReport> {
        let commit = mode == ApplyMode::Commit;
        let n = plan.actions.len();
        if commit && self.smoke.is_none() && self.policy.require_smoke_runner {
            return Err(Error::new(
                ErrorId::Policy,
                format!(
                    "the {} preset refuses to commit without a smoke runner (H6)",
                    self.policy.preset.as_str()
                ),
            ));
        }
        // A first commit (no state directory yet) is preflighted before the state
        // directory and lock file are created, so a stopped plan changes nothing.
        let existing = self.open_state(false)?;
        let mut first = None;
        if commit && existing.is_none() {
            let inspected = self.inspect(plan, &[]).map_err(|e| {
                let mut em = self.emitter(Some(plan.plan_id), false);
                fail(&mut em, e, n)
            })?;
            if let Some(e) = crate::handle::preflight_error(&inspected.1) {
                let mut em = self.emitter(Some(plan.plan_id), false);
                em.emit(self.lock_fact(None));
                return Err(fail(&mut em, e, n));
            }
            first = Some(inspected);
        }
        let state = if commit {
            self.open_state(true)?
        } else {
            existing
        };
        let guard = match &state {
            Some(s) if commit => Some(self.lock(s, &RunPolicy::of(&self.policy))?),
            _ => None,
        };
        let mut em = self.emitter(Some(plan.plan_id), !commit);
        em.emit(self.lock_fact(guard.as_ref()));
        if let (Some(s), true) = (&state, commit) {
            self.recover_locked(s).map_err(|e| fail(&mut em, e, n))?;
        }
        let t_hash = Instant::now();
        // History is read only when a restore needs it (no O(history) per apply).
        let needs_history = plan.actions.iter().any(|a| a.kind == ActionKind::Restore);
        let records = if needs_history {
            self.records(state.as_ref())
        } else {
            Ok(Vec::new())
        }
        .map_err(|e| fail(&mut em, e, n))?;
        // The first commit's inspection still holds if no run has happened since it
        // (none recorded, none pending, under the lock): the plan is inspected once.
        let untouched = match (&first, &state) {
            (Some(_), Some(s)) => s
                .run_ids()
                .and_then(|ids| Ok(ids.is_empty() && s.pending()?.is_empty()))
                .map_err(|e| fail(&mut em, e, n))?,
            _ => false,
        };
        let (items, report, packages) = match first {
            Some(inspected) if untouched => inspected,
            _ => self
                .inspect(plan, &records)
                .map_err(|e| fail(&mut em, e, n))?,
        };
        let hash_ms = ms(t_hash);
        if let Some(e) = crate::handle::preflight_error(&report) {
            return Err(fail(&mut em, e, n));
        }
        let mut stores = Stores::default();
        let mut recs = Vec::with_capacity(n);
        for i in &items {
            if i.noop {
                recs.push(i.record(String::new(), None));
                continue;
            }
            let name = i.action.target.file_name();
            let st = match i.dir.as_deref() {
                Some(d) => stores
                    .get(i.action.target.parent(), d, false)
                    .map_err(|e| fail(&mut em, e, n))?,
                None => None,
            };
            let stage = match &i.restore_from {
                Some((b, _, _)) => b.clone(),
                None => store::entry_name(name, &format!("{}.stage", em.run_id.simple())),
            };
            let backup = match i.current.kind {
                NodeKind::Absent => None,
                _ => Some(backup_name(st.map(|s| &**s), name).map_err(|e| fail(&mut em, e, n))?),
            };
            recs.push(i.record(stage, backup));
        }
        let changed = recs.iter().any(|r| !r.noop);
        // Each touched directory and its backup store are fsynced once (A4).
        let dir_count = 2 * recs
            .iter()
            .filter(|r| !r.noop)
            .map(|r| r.target.parent())
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        if !commit {
            let outcomes: Vec<ActionOutcome> =
                recs.iter().map(|r| outcome(r, planned_kind(r))).collect();
            for o in &outcomes {
                em.emit(result_fact(o, 0, false));
            }
            em.emit(summary(
                n,
                changed,
                Perf {
                    hash_ms,
                    ..Perf::default()
                },
                dir_count as u64,
                packages.as_ref(),
            ));
            em.flush();
            return Ok(ApplyReport {
                run_id: em.run_id,
                plan_id: plan.plan_id,
                dry_run: true,
                changed,
                actions: outcomes,
                facts_path: None,
                warnings: Vec::new(),
            });
        }
        let state = state.ok_or_else(|| Error::new(ErrorId::Generic, "state directory missing"))?;
        let places = Places {
            dirs: items.iter().map(|i| i.dir.clone()).collect(),
            stores,
            packages,
        };
        // The run holds its directories through `places` only: an abort can release
        // them all (R4).
        drop(items);
        self.commit(plan, &state, &mut em, recs, places, hash_ms)
    }

    fn commit(
        &self,
        plan: &Plan,
        state: &StateDir,
        em: &mut Emitter,
        recs: Vec<ActionRecord>,
        places: Places,
        hash_ms: u64,
    ) -> Result<ApplyReport> {
        let n = recs.len();
        let Places {
            dirs,
            mut stores,
            packages,
        } = places;
        let mut record = RunRecord {
            format: RECORD_FORMAT,
            run_id: em.run_id,
            kind: RunKind::Apply,
            plan_id: Some(plan.plan_id),
            status: RunStatus::Pending,
            target_run_id: None,
            actions: recs,
            changed: false,
            error: None,
            policy: Some(RunPolicy::of(&self.policy)),
            undone: false,
        };
        let changed = record.actions.iter().any(|r| !r.noop);
        let mut perf = Perf {
            hash_ms,
            ..Perf::default()
        };
        // M3: dpkg's locks, before the journal, while package-owned targets change.
        let _dpkg = if changed {
            package::lock_if_needed(
                packages.as_ref(),
                &record.actions,
                self.policy.lock_timeout_ms,
            )
            .map_err(|e| fail(em, e, n))?
        } else {
            None
        };
        // What preflight read before the locks must still hold under them: dpkg may
        // have run while this apply waited (M3).
        if let (Some(_), Some(db)) = (&_dpkg, &packages) {
            let targets: Vec<&crate::path::SafePath> =
                record.actions.iter().map(|a| &a.target).collect();
            let now = DpkgDb::load(&self.root, &targets).map_err(|e| fail(em, e, n))?;
            if !now
                .as_ref()
                .is_some_and(|now| package::same_view(db, now, &targets))
            {
                let e = Error::new(
                    ErrorId::Locking,
                    "the package database changed while this apply waited for dpkg's lock; nothing was changed",
                )
                .with_remediation("run the same command again");
                return Err(fail(em, e, n));
            }
        }
        if changed {
            let t = Instant::now();
            state.write_journal(&record).map_err(|e| fail(em, e, n))?;
            perf.backup_ms = ms(t);
            if let Err(e) = hit(fp::APPLY_AFTER_JOURNAL) {
                let e = Error::io(ErrorId::Generic, "journal written", e);
                return Err(self.abort(state, em, record, packages.as_ref(), 0, e));
            }
            // M2: the diversions, journaled above, before any swap; the stores they
            // point into first, so dpkg can unpack into them whatever happens next.
            if let Some(db) = &packages {
                let owned: Vec<&ActionRecord> = record.actions.iter().filter(|a| !a.noop).collect();
                let stored = record.actions.iter().zip(&dirs).try_for_each(|(a, dir)| {
                    match (a.package.as_ref().and_then(|p| p.diverted_to.as_ref()), dir) {
                        (Some(_), Some(dir)) if !a.noop && a.kind == ActionKind::Link => {
                            stores.get(a.target.parent(), dir, true).map(|_| ())
                        }
                        _ => Ok(()),
                    }
                });
                let diverted = stored
                    .and_then(|()| package::settle(db, &owned, true))
                    .and_then(|()| {
                        hit(fp::APPLY_AFTER_DIVERT)
                            .map_err(|e| Error::io(ErrorId::Generic, "diversions written", e))
                    });
                if let Err(e) = diverted {
                    return Err(self.abort(state, em, record, packages.as_ref(), 0, e));
                }
            }
        }
        let mut sync = crate::durability::DirSync::default();
        let t_swap = Instant::now();
        let mut outcomes = Vec::with_capacity(n);
        let mut t_sync = Instant::now();
        // Swap, then sync; a failure names how many actions to undo.
        let swapped: std::result::Result<usize, (usize, Error)> = 'swap: {
            for (idx, (r, dir)) in record.actions.iter().zip(&dirs).enumerate() {
                let t = Instant::now();
                let mut fallback = false;
                if !r.noop {
                    let Some(dir) = dir else {
                        let e = Error::new(
                            ErrorId::AtomicSwap,
                            format!("{}: directory not open", r.target),
                        );
                        break 'swap Err((idx + 1, e));
                    };
                    let parent = r.target.parent();
                    let swapped = stores.get(parent, dir, true).and_then(|st| {
                        let st =
                            st.ok_or_else(|| Error::new(ErrorId::Generic, "store not created"))?;
                        sync.touch(parent, dir);
                        sync.touch(&format!("{parent}/{}", store::STORE_DIR), st);
                        crate::swap::apply(dir, st, r, self.mechanics)
                    });
                    match swapped {
                        Ok(fb) => fallback = fb,
                        Err(e) => break 'swap Err((idx + 1, e)),
                    }
                }
                outcomes.push((outcome(r, planned_kind(r)), ms(t), fallback));
                self.progress("apply", idx + 1, n);
            }
            // A restore over an absent target may have moved the last entry out of its
            // store: the store goes with its last backup (R6).
            for (r, dir) in record.actions.iter().zip(&dirs) {
                if let (false, ActionKind::Restore, None, Some(dir)) =
                    (r.noop, r.kind, r.backup.as_ref(), dir)
                {
                    if let Err(e) = store::remove_if_empty(&**dir) {
                        let e = Error::io(ErrorId::AtomicSwap, "removing an empty backup store", e);
                        break 'swap Err((n, e));
                    }
                }
            }
            perf.swap_ms = ms(t_swap);
            t_sync = Instant::now();
            match hit(fp::APPLY_BEFORE_SYNC).and_then(|()| sync.sync()) {
                Ok(k) => Ok(k),
                Err(e) => Err((n, Error::io(ErrorId::AtomicSwap, "syncing directories", e))),
            }
        };
        // The descriptors of the touched directories and their stores go before
        // anything else: an undo must not run out of them where the run did (R4, O9).
        drop((sync, stores, dirs));
        let fsyncs = match swapped {
            Ok(k) => k as u64,
            Err((upto, e)) => {
                return Err(self.abort(state, em, record, packages.as_ref(), upto, e));
            }
        };
        perf.fsync_ms = ms(t_sync);
        // Per-action results only now: `backup_durable` is true once the fsyncs are done.
        for (o, duration, fallback) in &outcomes {
            em.emit(result_fact(o, *duration, *fallback));
        }
        let outcomes: Vec<ActionOutcome> = outcomes.into_iter().map(|(o, _, _)| o).collect();
        let smoke_failure = self.smoke_check(&record);
        let smoke_facts = smoke_failure.1;
        if let Some(e) = smoke_failure.0 {
            if !self.policy.disable_auto_rollback {
                // The failed checks are evidence even though the run is undone (H4).
                smoke_facts.into_iter().for_each(|f| em.emit(f));
                let e = self.abort(state, em, record, packages.as_ref(), n, e);
                return Err(e);
            }
            record.status = RunStatus::Committed;
            record.changed = changed;
            record.error = Some(e.message().to_owned());
            em.emit(summary(n, changed, perf, fsyncs, packages.as_ref()).failed(&e));
            smoke_facts.into_iter().for_each(|f| em.emit(f));
            state.write_record(&record, &em.jsonl())?;
            state.clear_journal(&record.run_id)?;
            em.flush();
            return Err(e.with_run_id(em.run_id));
        }
        if let Err(e) = hit(fp::APPLY_BEFORE_COMMIT) {
            return Err(self.abort(
                state,
                em,
                record,
                packages.as_ref(),
                n,
                Error::io(ErrorId::Generic, "before commit", e),
            ));
        }
        em.emit(summary(n, changed, perf, fsyncs, packages.as_ref()));
        smoke_facts.into_iter().for_each(|f| em.emit(f));
        record.status = RunStatus::Committed;
        record.changed = changed;
        if let Err(e) = state.write_record(&record, &em.jsonl()) {
            return Err(self.abort(state, em, record, packages.as_ref(), n, e));
        }
        // Past the commit point: failures from here on do not undo the run.
        let cleared = hit(fp::APPLY_AFTER_COMMIT)
            .map_err(|e| Error::io(ErrorId::Generic, "removing the journal", e))
            .and_then(|()| {
                if changed {
                    state.clear_journal(&record.run_id)
                } else {
                    Ok(())
                }
            });
        // O9: past the commit point the run is in effect, whatever the bookkeeping.
        let mut warnings = match cleared {
            Ok(()) => Vec::new(),
            Err(e) => vec![format!(
                "run {} committed and is in effect, but {}; the next run or `recover` completes it",
                record.run_id,
                e.message()
            )],
        };
        if let Err(e) = self.retire_superseded(state, &record, packages.as_ref()) {
            warnings.push(format!(
                "run {} committed and is in effect, but superseded backups were not all removed: {}",
                record.run_id,
                e.message()
            ));
        }
        em.flush();
        Ok(ApplyReport {
            run_id: em.run_id,
            plan_id: plan.plan_id,
            dry_run: false,
            changed,
            actions: outcomes,
            facts_path: Some(state.facts_path(&em.run_id)),
            warnings,
        })
    }

    /// M4: after re-applying a target that drifted because its package replaced it,
    /// the new backup is the package's current file (its MD5 matches the database);
    /// older live runs' backups of that target are superseded and removed, so a
    /// target keeps one backup. Without a package database nothing is proven
    /// superseded, and nothing is removed. Returns how many were removed.
    fn retire_superseded(
        &self,
        state: &StateDir,
        record: &RunRecord,
        db: Option<&DpkgDb>,
    ) -> Result<usize> {
        let Some(db) = db else {
            return Ok(0);
        };
        // Only a backup that is not its target's first can have older siblings.
        let candidates: Vec<&ActionRecord> = record
            .actions
            .iter()
            // Only a backup this run diverted to is the package's file from now on.
            .filter(|a| {
                !a.noop
                    && a.kind == ActionKind::Link
                    && a.package.as_ref().is_some_and(|p| p.diverted_to.is_some())
            })
            .filter(|a| a.backup.as_deref().is_some_and(|b| !b.ends_with(".1.bak")))
            .collect();
        if candidates.is_empty() {
            return Ok(0);
        }
        let records = self.records(Some(state))?;
        let io = |what: &str, e: std::io::Error| Error::io(ErrorId::Generic, what.to_owned(), e);
        let mut removed = 0;
        for a in candidates {
            let (Some(p), Some(b)) = (&a.package, a.backup.as_deref()) else {
                continue;
            };
            let Some(md5) = db
                .owners(&a.target)
                .iter()
                .find(|o| o.db_path == p.db_path)
                .and_then(|o| o.md5.clone())
            else {
                continue;
            };
            let dir = self
                .root
                .open_parent(&a.target)
                .map_err(|e| io("opening directory", e))?;
            let Some(st) = store::open(&dir, false).map_err(|e| io("opening the store", e))? else {
                continue;
            };
            if crate::adapters::dpkg::md5_of(&st, b).map_err(|e| io("hashing", e))? != Some(md5) {
                continue;
            }
            let older = records
                .iter()
                .filter(|r| r.is_live_apply() && r.run_id != record.run_id)
                .flat_map(|r| r.actions.iter())
                .filter(|o| !o.noop && o.target == a.target)
                .filter_map(|o| o.backup.as_deref())
                .filter(|old| *old != b);
            for old in older {
                match rustix::fs::unlinkat(&st, old, rustix::fs::AtFlags::empty()) {
                    Ok(()) => removed += 1,
                    Err(rustix::io::Errno::NOENT) => {}
                    Err(e) => return Err(io("removing a superseded backup", e.into())),
                }
            }
            rustix::fs::fsync(&st).map_err(|e| io("syncing the store", e.into()))?;
        }
        Ok(removed)
    }

    /// Runs the smoke runner; returns the failure (if any) and the `smoke` facts.
    fn smoke_check(&self, record: &RunRecord) -> (Option<Error>, Vec<Fact>) {
        let Some(runner) = &self.smoke else {
            return (None, Vec::new());
        };
        let targets: Vec<_> = record.actions.iter().map(|a| a.target.clone()).collect();
        let outcomes = runner.run(&SmokeContext {
            root: &self.root,
            targets: &targets,
        });
        let mut facts = Vec::new();
        let mut failed = Vec::new();
        for o in &outcomes {
            let mut f = Fact::new(Event::Smoke(SmokeFact {
                check: o.check.clone(),
                failure: None,
            }));
            if !o.ok {
                // H4: a check that failed, or could not run, records its cause.
                let cause = o
                    .cause
                    .clone()
                    .unwrap_or_else(|| "failed without a stated cause".to_owned());
                f = f.failed(&Error::new(ErrorId::Smoke, format!("{}: {cause}", o.check)));
                failed.push(format!("{}: {cause}", o.check));
            }
            facts.push(f);
        }
        let err = (!failed.is_empty()).then(|| {
            let verb = if self.policy.disable_auto_rollback {
                "kept (disable_auto_rollback)"
            } else {
                "rolled back"
            };
            Error::new(
                ErrorId::Smoke,
                format!("smoke failed ({}); changes {verb}", failed.join("; ")),
            )
            .with_remediation("fix the failing check or the alternative, then apply again")
        });
        (err, facts)
    }

    /// Undoes the first `upto` actions of `record` (in reverse), records the run as
    /// undone and clears its journal; returns `e` (or the undo failure, R5).
    fn abort(
        &self,
        state: &StateDir,
        em: &mut Emitter,
        mut record: RunRecord,
        packages: Option<&DpkgDb>,
        upto: usize,
        e: Error,
    ) -> Error {
        let n = record.actions.len();
        // A failed commit-point write may have left a `committed` record; it must be
        // gone before undoing, or recovery would "complete" an undone run. If it cannot
        // be removed, the run is left applied, which is what the record says.
        if let Err(d) = state.discard_record(&record.run_id) {
            let message = format!(
                "{}; its record could not be discarded, so nothing was undone: the next run's recovery settles it from the journal ({})",
                e.message(),
                d.message()
            );
            return fail(em, e.with_message(message), n);
        }
        let undo = undo_actions(
            &self.root,
            self.mechanics,
            &record.actions[..upto],
            // Every diversion was written before the first swap: all go (M2).
            &record.actions,
            false,
            packages,
            Some((&mut *em, Stage::Rollback)),
            &|_, _| {},
        );
        let e = match undo {
            Ok(_) => e,
            Err(u) => {
                let message = format!("{}; undoing it failed: {}", e.message(), u.message());
                u.caused_by(e.id()).with_message(message)
            }
        };
        record.status = RunStatus::Undone;
        record.error = Some(e.message().to_owned());
        let e = fail(em, e, n);
        if e.targets().is_empty() {
            // Fully undone: the record closes the run and the journal can go. If that
            // fails the journal stays, and the next run's recovery settles it again.
            if let Err(w) = state
                .write_record(&record, &em.jsonl())
                .and_then(|()| state.clear_journal(&record.run_id))
            {
                let message = format!(
                    "{} (its journal stays for recovery: {})",
                    e.message(),
                    w.message()
                );
                return e.with_message(message);
            }
        }
        e
    }
}

fn planned_kind(r: &ActionRecord) -> NodeKind {
    match (r.kind, &r.new_node) {
        _ if r.noop => r.prior.kind,
        (ActionKind::Link, _) => NodeKind::Symlink,
        (ActionKind::Restore, Some(n)) => n.kind,
        (ActionKind::Restore, None) => r.prior.kind,
    }
}

fn summary(n: usize, changed: bool, perf: Perf, fsyncs: u64, db: Option<&DpkgDb>) -> Fact {
    Fact::new(Event::ApplyResult(ApplyResultFact::Summary(
        ApplySummaryFact {
            action_count: n as u64,
            changed,
            perf: Some(perf),
            fsync_count: Some(fsyncs),
            package_db: Some(if db.is_some() {
                PackageDb::Dpkg
            } else {
                PackageDb::None
            }),
            failure: None,
        },
    )))
}
