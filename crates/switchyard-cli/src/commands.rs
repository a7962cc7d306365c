//! One function per command: build the engine, call the library, print the result.
//! No behaviour lives here beyond choosing what to call and how to show it.

use crate::doc::{self, Done, RunFailed, TargetResult};
use crate::output::{or_dash, painted, shown, table, Cell, Out, Paint};
use std::path::{Path, PathBuf};
use switchyard::{
    ApplyMode, CommandCheck, CommandSmoke, DriftState, Error, ErrorId, FileLock, JsonlSink,
    Manifest, NodeKind, Outcome, Plan, Policy, RestoreResult, RunSelector, StateLocation,
    Switchyard, Verdict,
};
use uuid::Uuid;

/// Global settings every command runs with.
pub struct Ctx {
    /// The root, absolute and canonical.
    pub root: PathBuf,
    /// `--state-dir`, absolute; `None` = the library default inside the root.
    pub state: Option<PathBuf>,
    /// `--facts-out`, absolute: every fact of the command also goes there (O10).
    pub facts_out: Option<PathBuf>,
    pub out: Out,
}

/// A command's failure: the error, and whether its JSON document was printed.
pub struct Failure {
    pub error: Error,
    pub json_printed: bool,
}

impl From<Error> for Failure {
    fn from(error: Error) -> Failure {
        Failure {
            error,
            json_printed: false,
        }
    }
}

/// What a command returns: its exit code on success (0, or 10 for a stopped
/// preflight, or doctor's verdict), or the failure.
pub type CmdResult = Result<i32, Failure>;

impl Ctx {
    /// Where the state directory is.
    pub fn state_location(&self) -> StateLocation {
        match &self.state {
            Some(p) => StateLocation::Host(p.clone()),
            None => StateLocation::default(),
        }
    }

    /// An engine over the root with `policy`, a file lock and, when there are checks,
    /// a command smoke runner.
    pub fn engine(&self, policy: Policy, checks: Vec<CommandCheck>) -> Result<Switchyard, Error> {
        let mut b = Switchyard::builder(policy)
            .root(&self.root)
            .state_dir(self.state_location())
            .with_lock_manager(FileLock::new());
        if let Some(bar) = crate::output::ProgressBar::for_stderr(&self.out) {
            b = b.with_progress(move |op, done, total| bar.step(op, done, total));
        }
        if !checks.is_empty() {
            b = b.with_smoke_runner(CommandSmoke { checks });
        }
        if let Some(p) = &self.facts_out {
            let sink = JsonlSink::create(p).map_err(|e| {
                Error::new(ErrorId::Usage, format!("--facts-out {}: {e}", p.display()))
            })?;
            b = b.with_facts_sink(sink);
        }
        b.build()
    }

    /// The facts file of a dry-run: `--facts-out`, when given (O10).
    fn dry_run_facts(&self, dry_run: bool, facts: &mut Option<PathBuf>) {
        if dry_run && facts.is_none() {
            facts.clone_from(&self.facts_out);
        }
    }
}

/// A failed run: prints its JSON document and returns the failure, marked as printed.
fn run_failure(ctx: &Ctx, sy: &Switchyard, e: Error, doc: RunFailed) -> Failure {
    ctx.out.json(&RunFailed {
        run_id: e.run_id(),
        facts: e.run_id().and_then(|r| sy.facts_of(r)),
        ..doc
    });
    Failure {
        error: e,
        json_printed: true,
    }
}

/// The document of a run that failed before it could report anything itself.
fn failed_run(e: &Error, dry_run: bool) -> RunFailed {
    RunFailed {
        run_id: None,
        plan_id: None,
        target_run_id: None,
        run_ids: None,
        dry_run,
        changed: false,
        idempotent_noop: None,
        facts: None,
        actions: Vec::new(),
        targets: e.targets().to_vec(),
        error: doc::Failed::of(e),
    }
}

/// Loads the manifest, builds the engine and plans (all the library's work).
fn load(ctx: &Ctx, manifest: &Path) -> Result<(Switchyard, Plan), Error> {
    let m = Manifest::load(manifest)?;
    let sy = ctx.engine(m.policy().clone(), m.smoke_checks().to_vec())?;
    let plan = m.plan(&sy)?;
    Ok((sy, plan))
}

fn short(id: &Uuid) -> String {
    id.simple().to_string().chars().take(8).collect()
}

/// `plan MANIFEST`.
pub fn plan(ctx: &Ctx, manifest: &Path) -> CmdResult {
    let (_, plan) = load(ctx, manifest)?;
    let out = &ctx.out;
    out.json(&plan);
    let rows = plan
        .actions
        .iter()
        .map(|a| {
            vec![
                Cell::from(short(&a.action_id)),
                Cell::from(a.kind.as_str()),
                Cell::from(a.target.to_string()),
                Cell::from(or_dash(a.source.as_ref().map(|s| s.as_str()))),
            ]
        })
        .collect();
    out.say(&format!(
        "plan {} ({} action{})\n{}",
        plan.plan_id,
        plan.actions.len(),
        plural(plan.actions.len()),
        table(out, &["ID", "ACTION", "TARGET", "SOURCE"], rows)
    ));
    Ok(0)
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// `preflight MANIFEST`: exits with the stopped preflight's code (10, or 60 when
/// only backups are missing), as `apply` would.
pub fn preflight(ctx: &Ctx, manifest: &Path) -> CmdResult {
    let (sy, plan) = load(ctx, manifest)?;
    let rep = sy.preflight(&plan)?;
    let out = &ctx.out;
    let stops = rep.stops().count();
    let warns = rep
        .rows
        .iter()
        .filter(|r| r.verdict == Verdict::Warn)
        .count();
    // The library's verdict: the same error (and exit code) apply would fail with.
    let err = rep.error();
    out.json(&doc::Preflight {
        plan_id: plan.plan_id,
        ok: stops == 0,
        exit_code: err.as_ref().map_or(0, Error::exit_code),
        error_id: err.as_ref().map(Error::id),
        rows: &rep.rows,
    });
    let rows = rep
        .rows
        .iter()
        .map(|r| {
            let verdict = match r.verdict {
                Verdict::Ok => painted("ok", Paint::Green),
                Verdict::Warn => painted("WARN", Paint::Yellow),
                Verdict::Stop => painted("STOP", Paint::Red),
            };
            vec![
                verdict,
                Cell::from(r.kind.as_str()),
                Cell::from(r.path.to_string()),
                Cell::from(r.current_kind.as_str()),
                Cell::from(r.planned_kind.as_str()),
                Cell::from(r.notes.join("; ")),
            ]
        })
        .collect();
    out.say(&format!(
        "preflight of plan {}: {} ok, {warns} warn, {stops} stop\n{}",
        plan.plan_id,
        rep.rows.len() - stops - warns,
        table(
            out,
            &["VERDICT", "ACTION", "TARGET", "NOW", "AFTER", "REASON"],
            rows
        )
    ));
    match err {
        Some(e) => {
            out.error(&e);
            Ok(e.exit_code())
        }
        None => Ok(0),
    }
}

/// `apply MANIFEST [--commit]`.
pub fn apply(ctx: &Ctx, manifest: &Path, commit: bool) -> CmdResult {
    let (sy, plan) = load(ctx, manifest)?;
    let out = &ctx.out;
    let mode = if commit {
        ApplyMode::Commit
    } else {
        ApplyMode::DryRun
    };
    let fail = |e: Error| {
        let doc = RunFailed {
            plan_id: Some(plan.plan_id),
            ..failed_run(&e, !commit)
        };
        run_failure(ctx, &sy, e, doc)
    };
    // A first commit preflights before creating the state directory, so a stopped
    // plan leaves no trace (the library guarantees it).
    let mut rep = sy.apply(&plan, mode).map_err(fail)?;
    ctx.dry_run_facts(rep.dry_run, &mut rep.facts_path);
    out.json(&Done::of(&rep));
    out.warnings(&rep.warnings);
    if !out.human() {
        return Ok(0);
    }
    let n_changed = rep.actions.iter().filter(|a| !a.noop).count();
    let rows = rep
        .actions
        .iter()
        .map(|a| {
            let what = if a.noop {
                painted("unchanged", Paint::Dim)
            } else if rep.dry_run {
                painted("would change", Paint::Yellow)
            } else {
                painted("changed", Paint::Green)
            };
            vec![
                what,
                Cell::from(a.kind.as_str()),
                Cell::from(a.target.clone()),
                Cell::from(a.before_kind.as_str()),
                Cell::from(a.after_kind.as_str()),
                Cell::from(or_dash(a.backup.as_deref())),
            ]
        })
        .collect();
    let head = match (rep.dry_run, rep.changed) {
        (true, true) => format!(
            "dry-run of plan {}: {n_changed} of {} targets would change; nothing was modified",
            rep.plan_id,
            rep.actions.len()
        ),
        (true, false) => format!(
            "dry-run of plan {}: already in effect; nothing would change",
            rep.plan_id
        ),
        (false, true) => format!(
            "applied plan {} as run {}: {n_changed} of {} targets changed",
            rep.plan_id,
            rep.run_id,
            rep.actions.len()
        ),
        (false, false) => format!(
            "plan {} is already in effect: nothing changed (run {})",
            rep.plan_id, rep.run_id
        ),
    };
    let mut s = format!(
        "{head}\n{}",
        table(
            out,
            &["RESULT", "ACTION", "TARGET", "BEFORE", "AFTER", "BACKUP"],
            rows
        )
    );
    if let Some(f) = &rep.facts_path {
        s.push_str(&format!("facts: {}\n", shown(&f.display().to_string())));
    }
    if rep.dry_run && rep.changed {
        s.push_str("re-run with --commit to apply\n");
    } else if !rep.dry_run && rep.changed {
        s.push_str(&format!(
            "undo with: switchyard rollback {} --commit\n",
            rep.run_id
        ));
    }
    out.say(&s);
    Ok(0)
}

/// The plan of a recorded run (for a failed `rollback --json`).
fn plan_id_of(sy: &Switchyard, run: &uuid::Uuid) -> Option<uuid::Uuid> {
    sy.runs()
        .ok()?
        .into_iter()
        .find(|r| &r.run_id == run)?
        .plan_id
}

/// `rollback [RUN_ID | --last] [--commit]`.
pub fn rollback(ctx: &Ctx, run: Option<Uuid>, commit: bool) -> CmdResult {
    // The run is undone under the policy it recorded; the handle's is the default.
    let sy = ctx.engine(Policy::default(), Vec::new())?;
    let out = &ctx.out;
    let which = run.map_or(RunSelector::Last, RunSelector::Id);
    let mode = if commit {
        ApplyMode::Commit
    } else {
        ApplyMode::DryRun
    };
    let mut rep = sy.rollback(which, mode).map_err(|e| {
        let actions = e
            .targets()
            .iter()
            .map(|t| TargetResult {
                target: t.path.clone(),
                result: t.state.clone(),
            })
            .collect();
        let doc = RunFailed {
            plan_id: run.as_ref().and_then(|r| plan_id_of(&sy, r)),
            target_run_id: Some(run),
            idempotent_noop: Some(false),
            actions,
            ..failed_run(&e, !commit)
        };
        run_failure(ctx, &sy, e, doc)
    })?;
    ctx.dry_run_facts(rep.dry_run, &mut rep.facts_path);
    out.json(&Done::of(&rep));
    out.warnings(&rep.warnings);
    if !out.human() {
        return Ok(0);
    }
    let mut s = if rep.idempotent_noop {
        format!(
            "run {} has nothing left to undo: no change (idempotent_noop)\n",
            rep.target_run_id
        )
    } else {
        // Counted by result: a target left as a package or someone else put it, or
        // one the commit would refuse, is not "restored" (R5, R8).
        let restored = rep
            .actions
            .iter()
            .filter(|t| {
                matches!(
                    t.result,
                    RestoreResult::Restored
                        | RestoreResult::WouldRestore
                        | RestoreResult::RestoredPackageUpdate
                        | RestoreResult::WouldRestorePackageUpdate
                )
            })
            .count();
        let n = rep.actions.len();
        let count = if restored == n {
            format!("{n} target{}", plural(n))
        } else {
            format!("{restored} of {n} target{}", plural(n))
        };
        if rep.dry_run {
            format!(
                "dry-run rollback of run {}: {count} would be restored; nothing was modified\n",
                rep.target_run_id
            )
        } else {
            format!(
                "rolled back run {} as run {}: {count} restored\n",
                rep.target_run_id, rep.run_id
            )
        }
    };
    if !rep.actions.is_empty() {
        let rows = rep
            .actions
            .iter()
            .map(|t| {
                let what = t.result.as_str().replace('_', " ");
                vec![
                    if rep.dry_run {
                        painted(what, Paint::Yellow)
                    } else {
                        painted(what, Paint::Green)
                    },
                    Cell::from(t.target.clone()),
                ]
            })
            .collect();
        s.push_str(&table(out, &["RESULT", "TARGET"], rows));
    }
    if let Some(f) = &rep.facts_path {
        s.push_str(&format!("facts: {}\n", shown(&f.display().to_string())));
    }
    if rep.dry_run && !rep.idempotent_noop {
        s.push_str("re-run with --commit to roll back\n");
    }
    out.say(&s);
    Ok(0)
}

/// `recover [--commit]`.
pub fn recover(ctx: &Ctx, commit: bool) -> CmdResult {
    // Each interrupted run is settled under the policy it recorded.
    let sy = ctx.engine(Policy::default(), Vec::new())?;
    let out = &ctx.out;
    let mode = if commit {
        ApplyMode::Commit
    } else {
        ApplyMode::DryRun
    };
    let rep = sy.recover(mode).map_err(|e| {
        let doc = RunFailed {
            run_ids: Some(e.run_id().into_iter().collect()),
            ..failed_run(&e, !commit)
        };
        run_failure(ctx, &sy, e, doc)
    })?;
    out.json(&Done::of(&rep));
    if !out.human() {
        return Ok(0);
    }
    if rep.actions.is_empty() {
        out.say("no interrupted runs: nothing to recover\n");
        return Ok(0);
    }
    let rows = rep
        .actions
        .iter()
        .map(|a| {
            let what = match (rep.dry_run, a.outcome) {
                (true, Outcome::Completed) => "would complete (it had committed)",
                (true, Outcome::Undone) => "would undo",
                (false, Outcome::Completed) => "completed (it had committed)",
                (false, Outcome::Undone) => "undone",
            };
            vec![
                Cell::from(a.run_id.to_string()),
                painted(what, Paint::Yellow),
            ]
        })
        .collect();
    let mut s = format!(
        "{}\n{}",
        if rep.dry_run {
            "dry-run recovery: nothing was modified"
        } else {
            "recovered interrupted runs"
        },
        table(out, &["INTERRUPTED RUN", "OUTCOME"], rows)
    );
    for r in &rep.run_ids {
        if let Some(f) = sy.facts_of(*r) {
            s.push_str(&format!("facts: {}\n", shown(&f.display().to_string())));
        }
    }
    if rep.dry_run {
        s.push_str("re-run with --commit to recover\n");
    }
    out.say(&s);
    Ok(0)
}

/// `status`: the library's [`switchyard::Status`], as a table (plus a line per target
/// that is no longer what its run installed, M4) or as JSON.
pub fn status(ctx: &Ctx) -> CmdResult {
    let sy = ctx.engine(Policy::default(), Vec::new())?;
    let st = sy.status()?;
    let out = &ctx.out;
    out.json(&st);
    if !out.human() {
        return Ok(0);
    }
    let mut s = String::new();
    if st.targets.is_empty() {
        s.push_str("no managed targets\n");
    } else {
        let rows = st
            .targets
            .iter()
            .map(|t| {
                let kind = match t.kind {
                    NodeKind::Symlink => Cell::from(t.kind.as_str()),
                    _ => painted(t.kind.as_str(), Paint::Yellow),
                };
                vec![
                    Cell::from(t.path.clone()),
                    kind,
                    Cell::from(or_dash(t.link_dest.as_deref())),
                    Cell::from(t.run_id.to_string()),
                    Cell::from(or_dash(t.backup.as_deref())),
                ]
            })
            .collect();
        s.push_str(&table(
            out,
            &["TARGET", "KIND", "LINK DEST", "RUN", "BACKUP"],
            rows,
        ));
    }
    for t in &st.targets {
        if let Some(rb) = t.rolling_back {
            s.push_str(&format!(
                "{}: {} — rollback {rb} of run {} could not finish; fix what it reported, then run `switchyard recover --commit`\n",
                shown(&t.path),
                out.paint(Paint::Yellow, "partly rolled back"),
                t.run_id
            ));
        }
    }
    for t in st
        .targets
        .iter()
        .filter(|t| t.state != DriftState::InEffect && t.rolling_back.is_none())
    {
        let by = match (&t.package, &t.version) {
            (Some(p), Some(v)) if t.state == DriftState::Drifted => {
                format!(" (package {} {v} owns it now)", shown(p))
            }
            _ => String::new(),
        };
        s.push_str(&format!(
            "{}: {}{by} — no longer what run {} installed; apply its manifest again or roll the run back\n",
            shown(&t.path),
            out.paint(Paint::Yellow, t.state.as_str()),
            t.run_id
        ));
    }
    for t in st
        .targets
        .iter()
        .filter(|t| t.backup_current == Some(false))
    {
        s.push_str(&format!(
            "{}: its backup is not the file the package database says is installed (an upgrade did not go through the diversion)\n",
            shown(&t.path)
        ));
    }
    s.push_str(&format!(
        "pending journal: {}\n",
        if st.pending_journal {
            out.paint(Paint::Red, "yes — run `switchyard recover --commit`")
        } else {
            "no".into()
        }
    ));
    out.say(&s);
    Ok(0)
}
