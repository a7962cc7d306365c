//! The [`Switchyard`] handle: configuration, plan and preflight. Mutating operations
//! live in `apply`, `rollback` and `recovery`; each takes the lock and settles pending
//! journals first (A3, L1). The read-only queries (status, runs, in_effect, doctor)
//! live in `query`.
//!
//! Invariants: a `Switchyard` is `Send + Sync` (L4); it holds the root open as a
//! directory handle for its whole life, so a later rename of the root path cannot
//! redirect it; it never reads environment variables.

use crate::adapters::dpkg::DpkgDb;
use crate::adapters::lock::{LockGuard, LockManager};
use crate::adapters::smoke::SmokeRunner;
use crate::error::{Error, ErrorId, Result};
use crate::facts::{
    Decision, Emitter, Event, Fact, FactSink, LockFact, PlanFact, PreflightFact,
    PreflightSummaryFact,
};
use crate::path::{Root, SafePath};
use crate::plan::{self, Plan, PlanInput};
use crate::policy::{Policy, RunPolicy};
use crate::preflight::{self, Check, CheckContext, Inspection, PreflightReport};
use crate::state::{RunRecord, StateDir, StateLocation};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// Dry-run (the default, D2) or commit: the mode of every operation that can modify
/// the tree — [`Switchyard::apply`], [`Switchyard::rollback`] and
/// [`Switchyard::recover`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ApplyMode {
    /// Report what would change; modify nothing (the default, D2).
    #[default]
    DryRun,
    /// Make the change.
    Commit,
}

/// A progress callback: `(operation, done, total)` after each action of a commit.
pub type ProgressFn = dyn Fn(&str, usize, usize) + Send + Sync;

/// Builds a [`Switchyard`].
pub struct Builder {
    policy: Policy,
    root: PathBuf,
    state: StateLocation,
    lock: Option<Box<dyn LockManager>>,
    smoke: Option<Box<dyn SmokeRunner>>,
    sinks: Vec<Arc<dyn FactSink>>,
    checks: Vec<Box<dyn Check>>,
    progress: Option<Box<ProgressFn>>,
    mechanics: crate::swap::Mechanics,
}

impl Builder {
    /// The root every path is confined to (default `/`).
    pub fn root(mut self, root: impl Into<PathBuf>) -> Builder {
        self.root = root.into();
        self
    }

    /// Where journals, records and the lock live (default `var/lib/switchyard` in the root).
    pub fn state_dir(mut self, loc: StateLocation) -> Builder {
        self.state = loc;
        self
    }

    /// Serializes mutating runs (L1).
    pub fn with_lock_manager(mut self, l: impl LockManager + 'static) -> Builder {
        self.lock = Some(Box::new(l));
        self
    }

    /// Verifies health inside commit (H2, H3).
    pub fn with_smoke_runner(mut self, s: impl SmokeRunner + 'static) -> Builder {
        self.smoke = Some(Box::new(s));
        self
    }

    /// Adds a facts sink (O1).
    pub fn with_facts_sink(mut self, s: impl FactSink + 'static) -> Builder {
        self.sinks.push(Arc::new(s));
        self
    }

    /// Reports progress of long commits (e.g. to drive a progress bar).
    pub fn with_progress(
        mut self,
        f: impl Fn(&str, usize, usize) + Send + Sync + 'static,
    ) -> Builder {
        self.progress = Some(Box::new(f));
        self
    }

    /// Behaves as on a filesystem that rejects `RENAME_EXCHANGE`/`RENAME_NOREPLACE`
    /// (`EINVAL`), so every swap takes the `linkat` fallback (A1 in `docs/GUARANTEES.md`).
    /// For tests: instance-scoped fault injection, never process-global (T2).
    pub fn without_rename_flags(mut self) -> Builder {
        self.mechanics = crate::swap::Mechanics {
            rename_flags: false,
        };
        self
    }

    /// Opens the root and finishes the handle.
    ///
    /// # Errors
    ///
    /// `E_USAGE` when the root cannot be opened as a directory.
    pub fn build(self) -> Result<Switchyard> {
        let root = Root::open(&self.root).map_err(|e| {
            Error::io(
                ErrorId::Usage,
                format!("opening root {}", self.root.display()),
                e,
            )
        })?;
        Ok(Switchyard {
            policy: self.policy,
            root,
            state: self.state,
            lock: self.lock,
            smoke: self.smoke,
            sinks: self.sinks,
            checks: self.checks,
            progress: self.progress,
            mechanics: self.mechanics,
        })
    }
}

/// A configured Switchyard over one root.
pub struct Switchyard {
    pub(crate) policy: Policy,
    pub(crate) root: Root,
    pub(crate) state: StateLocation,
    pub(crate) lock: Option<Box<dyn LockManager>>,
    pub(crate) smoke: Option<Box<dyn SmokeRunner>>,
    pub(crate) sinks: Vec<Arc<dyn FactSink>>,
    pub(crate) checks: Vec<Box<dyn Check>>,
    pub(crate) progress: Option<Box<ProgressFn>>,
    pub(crate) mechanics: crate::swap::Mechanics,
}

impl Switchyard {
    /// Starts a builder with `policy`: what `plan`, `preflight` and `apply` obey.
    /// `rollback` and `recover` obey the policy each run recorded (the stricter of it
    /// and this one for integrity checks, see [`RunPolicy::for_undo`]), and the queries
    /// obey none; a handle used only for those can take [`Policy::default`]
    /// (production).
    pub fn builder(policy: Policy) -> Builder {
        let checks = preflight::builtin_checks();
        Builder {
            policy,
            root: PathBuf::from("/"),
            state: StateLocation::default(),
            lock: None,
            smoke: None,
            sinks: Vec::new(),
            checks,
            progress: None,
            mechanics: crate::swap::Mechanics::default(),
        }
    }

    /// The policy in force.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The root's host path.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// The state directory's host path.
    pub fn state_path(&self) -> PathBuf {
        match &self.state {
            StateLocation::InRoot(p) => self.root.host_path(p),
            StateLocation::Host(p) => p.clone(),
        }
    }

    /// The `facts.jsonl` a run wrote, if it wrote one (e.g. the run a failure names
    /// with [`Error::run_id`]).
    pub fn facts_of(&self, run_id: Uuid) -> Option<PathBuf> {
        let p = self
            .state_path()
            .join(crate::state::RUNS)
            .join(run_id.to_string())
            .join(crate::state::FACTS);
        p.is_file().then_some(p)
    }

    pub(crate) fn progress(&self, op: &str, done: usize, total: usize) {
        if let Some(f) = &self.progress {
            f(op, done, total);
        }
    }

    pub(crate) fn open_state(&self, create: bool) -> Result<Option<StateDir>> {
        StateDir::open(&self.state, &self.root, create)
    }

    pub(crate) fn emitter(&self, plan_id: Option<Uuid>, dry_run: bool) -> Emitter {
        Emitter::new(self.sinks.clone(), plan_id, dry_run)
    }

    /// Takes the lock for a mutating run (L1–L3), under `rules`: the handle's policy
    /// for an apply, the recorded one for rollback and recovery.
    pub(crate) fn lock(&self, state: &StateDir, rules: &RunPolicy) -> Result<LockGuard> {
        match &self.lock {
            Some(l) => l.acquire(
                std::os::fd::AsFd::as_fd(state.fd()),
                Duration::from_millis(rules.lock_timeout_ms),
            ),
            None if rules.require_lock_manager => Err(Error::new(
                ErrorId::Policy,
                format!(
                    "the {} preset refuses to commit without a lock manager (L3)",
                    rules.preset.as_str()
                ),
            )),
            None => Ok(LockGuard::none()),
        }
    }

    /// The `apply.attempt`-style lock fields; a WARN fact without a lock manager (L3).
    pub(crate) fn lock_fact(&self, guard: Option<&LockGuard>) -> Fact {
        let backend = self.lock.as_ref().map_or("none", |l| l.backend());
        let f = Fact::new(Event::ApplyAttempt(LockFact {
            lock_backend: backend.to_owned(),
            lock_wait_ms: guard.map_or(0, |g| g.wait_ms),
            lock_attempts: guard.map_or(0, |g| g.attempts),
            notes: self.lock.is_none().then(|| {
                vec!["no lock manager configured: concurrent runs are not serialized".into()]
            }),
        }));
        if self.lock.is_some() {
            f
        } else {
            f.decided(Decision::Warn)
        }
    }

    /// Plans `input` (D1). Emits one `plan` fact per action.
    ///
    /// # Errors
    ///
    /// `E_USAGE` when the input breaks a plan rule (two actions on one target, a
    /// target that is also a source, a link to itself, a reserved `.switchyard.`
    /// name, a path inside the state directory) or exceeds `max_plan_actions`.
    pub fn plan(&self, input: &PlanInput) -> Result<Plan> {
        let plan = plan::build(input, self.policy.max_plan_actions)?;
        // Nothing inside the state directory may be planned, wherever it was configured.
        let state = match &self.state {
            StateLocation::InRoot(p) => Some(p.clone()),
            StateLocation::Host(p) => SafePath::from_host(self.root.path(), p).ok(),
        };
        if let Some(state) = state {
            let inside = plan
                .actions
                .iter()
                .flat_map(|a| [Some(&a.target), a.source.as_ref()])
                .flatten();
            if let Some(p) = inside.into_iter().find(|p| p.starts_with(&state)) {
                return Err(Error::new(
                    ErrorId::Usage,
                    format!("{p} is inside the state directory {state}"),
                ));
            }
        }
        let mut em = self.emitter(Some(plan.plan_id), true);
        for a in &plan.actions {
            em.emit(Fact::new(Event::Plan(PlanFact {
                action_id: a.action_id,
                path: a.target.to_string(),
                kind: a.kind,
                source: a.source.as_ref().map(|s| s.to_string()),
            })));
        }
        em.flush();
        Ok(plan)
    }

    pub(crate) fn records(&self, state: Option<&StateDir>) -> Result<Vec<RunRecord>> {
        state.map_or(Ok(Vec::new()), StateDir::records)
    }

    pub(crate) fn inspect(
        &self,
        plan: &Plan,
        records: &[RunRecord],
    ) -> Result<(Vec<Inspection>, PreflightReport, Option<DpkgDb>)> {
        let mut items = preflight::inspect(&self.root, plan, records);
        // A resource the process ran out of is not a verdict on the plan: the run
        // fails as what it is (issue 8: EMFILE used to read as a policy stop).
        if let Some(e) = items.iter().find_map(preflight::Inspection::resource_error) {
            return Err(e);
        }
        let targets: Vec<&SafePath> = plan.actions.iter().map(|a| &a.target).collect();
        let db = DpkgDb::load(&self.root, &targets)?;
        let mut cx = CheckContext::new(&self.policy, &items);
        if let Some(db) = &db {
            for i in &mut items {
                let owners = db.owners(&i.action.target);
                i.owner = owners.first().cloned();
                i.other_spellings = owners
                    .iter()
                    .filter(|o| owners.first().is_some_and(|f| f.db_path != o.db_path))
                    .map(|o| (o.db_path.clone(), o.package.clone()))
                    .collect();
                i.foreign_diversion = i
                    .owner
                    .as_ref()
                    .and_then(|o| db.diversion_of(&o.db_path))
                    .filter(|d| !d.is_ours())
                    .map(|d| (d.holder.clone(), d.to.clone()));
                if let Some(found) = updated_backup(i, records) {
                    // M5: the backup dpkg upgraded through our diversion is what a
                    // restore puts back; its MD5 was checked against the database.
                    i.after_hash = found.1.sha256.clone();
                    i.noop = false;
                    i.restore_from = Some(found);
                }
                i.own_diversion = i
                    .owner
                    .as_ref()
                    .and_then(|o| db.diversion_of(&o.db_path))
                    .filter(|d| d.is_ours())
                    .filter(|d| diverted_to_kept(i, &d.to) && !holds_packaged_file(i))
                    .map(|d| d.to.clone());
            }
            cx.package_db = true;
            cx.unsettled = db.unsettled().to_vec();
        }
        let report = preflight::evaluate(&cx, &self.checks, &items);
        Ok((items, report, db))
    }

    /// Runs preflight (never mutates). Emits a `preflight` fact per row and a
    /// `preflight.summary`. A stopped row is a verdict in the report, not an error
    /// ([`PreflightReport::error`] names the error a commit would fail with).
    ///
    /// # Errors
    ///
    /// When the state directory or its records cannot be read.
    pub fn preflight(&self, plan: &Plan) -> Result<PreflightReport> {
        let state = self.open_state(false)?;
        let records = self.records(state.as_ref())?;
        let (_, report, _) = self.inspect(plan, &records)?;
        let mut em = self.emitter(Some(plan.plan_id), true);
        emit_preflight(&mut em, &report);
        em.flush();
        Ok(report)
    }
}

pub(crate) fn emit_preflight(em: &mut Emitter, report: &PreflightReport) {
    let (mut stops, mut warnings) = (0, 0);
    for row in &report.rows {
        let decision = match row.verdict {
            preflight::Verdict::Ok => Decision::Success,
            preflight::Verdict::Warn => {
                warnings += 1;
                Decision::Warn
            }
            preflight::Verdict::Stop => {
                stops += 1;
                Decision::Failure
            }
        };
        em.emit(
            Fact::new(Event::Preflight(PreflightFact {
                action_id: row.action_id,
                path: row.path.to_string(),
                kind: row.kind,
                current_kind: row.current_kind,
                planned_kind: row.planned_kind,
                verdict: row.verdict,
                notes: row.notes.clone(),
            }))
            .decided(decision),
        );
    }
    let mut s = Fact::new(Event::PreflightSummary(PreflightSummaryFact {
        action_count: report.rows.len() as u64,
        stops,
        warnings,
        failure: None,
    }));
    if let Some(e) = preflight_error(report) {
        s = s.failed(&e);
    }
    em.emit(s);
}

/// The error apply fails with when preflight stops (`None` if it did not): the
/// report's own [`PreflightReport::error`], the one `switchyard preflight` exits with
/// (D4, O8), plus where to see every reason.
pub(crate) fn preflight_error(report: &PreflightReport) -> Option<Error> {
    report.error().map(|e| {
        e.with_remediation("run `switchyard preflight` to see every stopped row and its reason")
    })
}

/// Whether `to` (a diversion's diverted-to path) names an entry present in the backup
/// store beside inspection `i`'s target (M2).
fn diverted_to_kept(i: &preflight::Inspection, to: &str) -> bool {
    let prefix = crate::txn::package::store_path(&i.action.target, "");
    let Some(name) = to.strip_prefix(&prefix) else {
        return false;
    };
    let Some(dir) = i.dir.as_deref() else {
        return false;
    };
    matches!(
        crate::store::open(dir, false),
        Ok(Some(st)) if crate::node::lstat(&st, name).ok().flatten().is_some()
    )
}

/// Whether inspection `i`'s target is a regular file with its package's MD5: a target
/// the package put back (M4), whose new backup becomes the diverted one.
fn holds_packaged_file(i: &preflight::Inspection) -> bool {
    let (Some(dir), Some(md5)) = (
        i.dir.as_deref(),
        i.owner.as_ref().and_then(|o| o.md5.as_deref()),
    ) else {
        return false;
    };
    i.current.kind == crate::node::NodeKind::File
        && crate::adapters::dpkg::md5_of(dir, i.action.target.file_name())
            .ok()
            .flatten()
            .as_deref()
            == Some(md5)
}

/// For a restore whose backup no longer holds the original (no `restore_from`): among
/// the live link actions' backups of the target, newest first, the one a run diverted
/// to that dpkg has since upgraded — a regular file with the owning package's MD5 (M5).
/// Its own snapshot stands for its sidecar: the database vouches for it.
fn updated_backup(
    i: &preflight::Inspection,
    records: &[RunRecord],
) -> Option<(String, crate::node::Node, crate::node::Node)> {
    if i.action.kind != plan::ActionKind::Restore || i.restore_from.is_some() {
        return None;
    }
    let md5 = i.owner.as_ref()?.md5.as_deref()?;
    let store = crate::store::open(i.dir.as_deref()?, false).ok()??;
    records
        .iter()
        .rev()
        .filter(|r| r.is_live_apply())
        .flat_map(|r| r.actions.iter())
        .filter(|a| a.target == i.action.target && a.kind == plan::ActionKind::Link && !a.noop)
        .find_map(|a| {
            let b = a.backup.as_deref()?;
            let diverted = a.package.as_ref()?.diverted_to.as_deref()?;
            (diverted == crate::txn::package::store_path(&a.target, b)
                && crate::adapters::dpkg::md5_of(&store, b).ok()??.as_str() == md5)
                .then_some(b)
        })
        .and_then(|b| {
            let node = crate::node::Node::observe(&store, b, true).ok()?;
            Some((b.to_owned(), node.clone(), node))
        })
}
