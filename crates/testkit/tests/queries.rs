//! The library's read-only queries (`docs/GUARANTEES.md`): `status` classifies each managed
//! target (M4), `runs` lists the history, `in_effect` answers "is this plan in
//! effect?" and `doctor` reports health (L1, A3, S9) — none of them writes, creates
//! the state directory or emits a fact. And the policy a run recorded is the one its
//! rollback and recovery obey (S6, L2), in a record format that is checked (S9).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};
use switchyard::failpoints as fp;
use switchyard::{ApplyMode, Switchyard};
use switchyard::{
    Area, DriftState, ErrorId, HealthVerdict, LockState, Outcome, PlanInput, Policy, RunSelector,
};
use switchyard::{RunKind, RunStatus};
use switchyard_testkit::{
    engine_for, run_child, sp, standard_input, standard_links, ChildEnd, Fixture, Scenario, STATE,
};

const EXE: &str = env!("CARGO_BIN_EXE_crashchild");

/// Kills a crash child at `failpoint`'s `nth` hit while it applies the standard plan.
fn crash_apply(f: &Fixture, failpoint: &str, nth: u32) {
    let end = run_child(
        EXE.as_ref(),
        &Scenario {
            root: f.path().to_path_buf(),
            op: "apply".into(),
            failpoint: failpoint.into(),
            mode: "kill".into(),
            nth,
            run: None,
            links: standard_links(),
            fallback: false,
        },
    );
    assert_eq!(end, ChildEnd::Killed, "the child must die at {failpoint}");
}

/// Replaces `rel` the way a package manager does: a new file renamed over it.
fn replace_with_file(f: &Fixture, rel: &str, body: &[u8]) {
    let tmp = format!("{rel}.dpkg-new");
    f.write(&tmp, body, 0o755);
    std::fs::rename(f.host(&tmp), f.host(rel)).unwrap();
}

fn state_of(st: &switchyard::Status, path: &str) -> DriftState {
    st.targets
        .iter()
        .find(|t| t.path == path)
        .unwrap_or_else(|| panic!("{path} not in status: {st:?}"))
        .state
}

#[test]
fn status_classifies_targets_in_effect_drifted_missing_m4() {
    let f = Fixture::new();
    let (sy, sink) = f.engine();
    let run = sy
        .apply(&sy.plan(&standard_input()).unwrap(), ApplyMode::Commit)
        .unwrap();
    let st = sy.status().unwrap();
    assert_eq!(st.targets.len(), 3);
    for t in &st.targets {
        assert_eq!(t.state, DriftState::InEffect, "{t:?}");
        assert_eq!(t.run_id, run.run_id);
    }

    // The package manager replaces ls, someone deletes new, cat is untouched.
    replace_with_file(&f, "usr/bin/ls", b"#!/bin/sh\necho gnu-ls 2\n");
    std::fs::remove_file(f.host("usr/bin/new")).unwrap();
    let st = sy.status().unwrap();
    assert_eq!(state_of(&st, "usr/bin/ls"), DriftState::Drifted);
    assert_eq!(state_of(&st, "usr/bin/new"), DriftState::Missing);
    assert_eq!(state_of(&st, "usr/bin/cat"), DriftState::InEffect);
    let ls = st.targets.iter().find(|t| t.path == "usr/bin/ls").unwrap();
    assert_eq!(ls.kind, switchyard::NodeKind::File);
    assert_eq!(ls.link_dest, None);
    assert!(ls.backup.is_some(), "the backup is still beside it");
    let new = st.targets.iter().find(|t| t.path == "usr/bin/new").unwrap();
    assert_eq!(new.kind, switchyard::NodeKind::Absent);

    // A symlink with other text than the run installed is drifted too.
    std::fs::remove_file(f.host("usr/bin/cat")).unwrap();
    std::os::unix::fs::symlink("gnu-cat", f.host("usr/bin/cat")).unwrap();
    let st = sy.status().unwrap();
    assert_eq!(state_of(&st, "usr/bin/cat"), DriftState::Drifted);

    // The --json document: `state` per target, snake_case.
    let j = serde_json::to_value(&st).unwrap();
    let states: Vec<&str> = j["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["drifted", "drifted", "missing"]);
    assert_eq!(j["pending_journal"], false);

    // M4: doctor fails on drift, one line per target that is not in effect.
    let h = sy.doctor();
    assert_eq!(h.verdict, HealthVerdict::NeedsAttention);
    assert_ne!(h.exit_code, 0);
    let lines: Vec<&str> = h
        .problems_in(Area::Targets)
        .map(|p| p.message.as_str())
        .collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(lines
        .iter()
        .any(|l| l.starts_with("usr/bin/new is missing")));

    // Re-applying the manifest puts every target back in effect (M4).
    sy.apply(&sy.plan(&standard_input()).unwrap(), ApplyMode::Commit)
        .unwrap();
    sink.clear();
    let st = sy.status().unwrap();
    assert!(st.targets.iter().all(|t| t.state == DriftState::InEffect));
    assert!(sink.facts().is_empty(), "status emits no facts");
    let h = sy.doctor();
    assert_eq!(
        (h.verdict, h.managed_targets),
        (HealthVerdict::Ok, Some(3)),
        "{:?}",
        h.problems
    );
}

#[test]
fn queries_emit_no_facts_and_write_nothing() {
    let f = Fixture::new();
    let (sy, sink) = f.engine();
    let plan = sy.plan(&standard_input()).unwrap();
    sy.apply(&plan, ApplyMode::Commit).unwrap();
    replace_with_file(&f, "usr/bin/ls", b"drifted\n");
    sink.clear();
    let tree = f.tree();
    let state = switchyard_testkit::Tree::capture(&f.host(STATE), &[]);
    sy.status().unwrap();
    sy.runs().unwrap();
    sy.in_effect(&plan).unwrap();
    sy.doctor();
    assert!(sink.facts().is_empty(), "queries emit no facts");
    assert_eq!(f.tree(), tree, "queries change nothing in the root");
    assert_eq!(
        switchyard_testkit::Tree::capture(&f.host(STATE), &[]),
        state,
        "queries write nothing to the state directory"
    );
}

#[test]
fn runs_are_listed_newest_first_and_never_create_the_state_dir() {
    let f = Fixture::new();
    let (sy, sink) = f.engine();
    assert!(sy.runs().unwrap().is_empty());
    assert!(
        !f.host(STATE).exists(),
        "runs() never creates the state dir"
    );

    let plan = sy.plan(&standard_input()).unwrap();
    let a = sy.apply(&plan, ApplyMode::Commit).unwrap();
    let r = sy
        .rollback(RunSelector::Id(a.run_id), ApplyMode::Commit)
        .unwrap();
    let b = sy.apply(&plan, ApplyMode::Commit).unwrap();
    sink.clear();
    let runs = sy.runs().unwrap();
    assert!(sink.facts().is_empty(), "runs() emits no facts");
    let ids: Vec<_> = runs.iter().map(|s| s.run_id).collect();
    assert_eq!(ids, [b.run_id, r.run_id, a.run_id], "newest first");
    let kinds: Vec<_> = runs.iter().map(|s| s.kind).collect();
    assert_eq!(kinds, [RunKind::Apply, RunKind::Rollback, RunKind::Apply]);

    let (newest, rb, oldest) = (&runs[0], &runs[1], &runs[2]);
    assert!(newest.live && !newest.undone && newest.changed);
    assert_eq!(newest.plan_id, Some(plan.plan_id));
    assert_eq!(newest.action_count, 3);
    assert_eq!(rb.target_run_id, Some(a.run_id));
    assert!(!rb.live, "a rollback is never a live apply");
    assert!(
        oldest.undone && !oldest.live,
        "the rolled-back apply is undone"
    );
    assert_eq!(oldest.status, RunStatus::Committed);
    // Times come from the UUIDv7 run IDs: present, RFC 3339 UTC (fixed width, so
    // they sort as text), and in the same order.
    let times: Vec<&str> = runs.iter().map(|s| s.time.as_deref().unwrap()).collect();
    assert!(
        times.iter().all(|t| t.len() == 24 && t.ends_with('Z')),
        "{times:?}"
    );
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");

    let j = serde_json::to_value(&runs).unwrap();
    assert_eq!(j[1]["kind"], "rollback");
    assert_eq!(j[2]["undone"], true);
}

#[test]
fn in_effect_reads_only_no_fact_no_run_no_state_dir() {
    let f = Fixture::new();
    let (sy, sink) = f.engine();
    let plan = sy.plan(&standard_input()).unwrap();
    sink.clear();
    let before = f.tree();

    let q = sy.in_effect(&plan).unwrap();
    assert!(!q.in_effect);
    assert_eq!(q.plan_id, plan.plan_id);
    assert_eq!(q.actions.len(), 3);
    assert!(q.actions.iter().all(|a| !a.in_effect), "{q:?}");
    assert_eq!(
        q.actions[1].planned_link.as_deref(),
        Some("../lib/alt/ls"),
        "actions in plan order, with the planned link text"
    );
    assert!(sink.facts().is_empty(), "in_effect emits no facts");
    assert!(
        !f.host(STATE).exists(),
        "in_effect never creates the state dir"
    );
    assert_eq!(f.tree(), before);

    // Links made by hand with the planned text are in effect, with no run at all.
    for n in ["ls", "cat", "new"] {
        let t = f.host(&format!("usr/bin/{n}"));
        let _ = std::fs::remove_file(&t);
        std::os::unix::fs::symlink(format!("../lib/alt/{n}"), &t).unwrap();
    }
    let q = sy.in_effect(&plan).unwrap();
    assert!(q.in_effect, "{q:?}");
    assert!(q.actions.iter().all(|a| a.in_effect));
    assert!(sink.facts().is_empty());
    assert!(!f.host(STATE).exists());

    // One link with other text: that action, and the plan, are not in effect.
    std::fs::remove_file(f.host("usr/bin/cat")).unwrap();
    std::os::unix::fs::symlink("../lib/alt/ls", f.host("usr/bin/cat")).unwrap();
    let q = sy.in_effect(&plan).unwrap();
    assert!(!q.in_effect);
    let cat = q
        .actions
        .iter()
        .find(|a| a.target == "usr/bin/cat")
        .unwrap();
    assert!(!cat.in_effect);
    assert_eq!(cat.link_dest.as_deref(), Some("../lib/alt/ls"));
    assert!(q
        .actions
        .iter()
        .filter(|a| a.target != "usr/bin/cat")
        .all(|a| a.in_effect));
    assert!(sink.facts().is_empty());
}

#[test]
fn in_effect_after_commit_and_for_restores_creates_no_run() {
    let f = Fixture::new();
    let (sy, sink) = f.engine();
    let plan = sy.plan(&standard_input()).unwrap();
    sy.apply(&plan, ApplyMode::Commit).unwrap();
    let restore = sy
        .plan(&PlanInput::default().restore(sp("usr/bin/ls")))
        .unwrap();
    sink.clear();
    let runs = sy.runs().unwrap().len();
    assert!(sy.in_effect(&plan).unwrap().in_effect);
    let q = sy.in_effect(&restore).unwrap();
    assert!(!q.in_effect, "ls is still the link: {q:?}");
    assert_eq!(sy.runs().unwrap().len(), runs, "in_effect creates no run");
    assert!(sink.facts().is_empty());

    sy.apply(&restore, ApplyMode::Commit).unwrap();
    sink.clear();
    let q = sy.in_effect(&restore).unwrap();
    assert!(q.in_effect, "the restore is done: {q:?}");
    assert!(
        !sy.in_effect(&plan).unwrap().in_effect,
        "ls is a file again"
    );
    assert!(sink.facts().is_empty());
}

#[test]
fn in_effect_reports_an_interrupted_run_instead_of_ignoring_it_a3() {
    let f = Fixture::new();
    let before = f.tree();
    // Every swap done, killed before the commit point: the disk shows the plan, but
    // recovery will undo it.
    crash_apply(&f, fp::APPLY_BEFORE_COMMIT, 1);
    let (sy, sink) = f.engine();
    let plan = sy.plan(&standard_input()).unwrap();
    sink.clear();
    let q = sy.in_effect(&plan).unwrap();
    assert!(
        q.actions.iter().all(|a| a.in_effect),
        "the targets are the links: {q:?}"
    );
    assert!(!q.in_effect, "a pending journal means not (yet) in effect");
    assert_eq!(q.pending_journals.len(), 1);
    assert_eq!(q.pending_journals[0].kind, RunKind::Apply);
    assert!(sink.facts().is_empty());
    assert!(
        sy.status().unwrap().pending_journal,
        "the journal is untouched"
    );
    sy.recover(ApplyMode::Commit).unwrap();
    assert_eq!(f.tree(), before);
    assert!(!sy.in_effect(&plan).unwrap().in_effect);
}

#[test]
fn doctor_is_ok_on_a_fresh_root_and_never_creates_the_state_dir() {
    let f = Fixture::new();
    let (sy, _) = f.engine();
    let h = sy.doctor();
    assert_eq!(h.verdict, HealthVerdict::Ok);
    assert_eq!(h.exit_code, 0);
    assert!(h.error().is_none());
    assert!(!h.state_dir.exists);
    assert_eq!(h.lock.state, LockState::Absent);
    assert!(h.problems.is_empty());
    assert!(
        !f.host(STATE).exists(),
        "doctor never creates the state dir"
    );
    sy.apply(&sy.plan(&standard_input()).unwrap(), ApplyMode::Commit)
        .unwrap();
    let h = sy.doctor();
    assert_eq!(h.verdict, HealthVerdict::Ok, "{h:?}");
    assert_eq!(h.lock.state, LockState::Free);
    assert_eq!(h.state_dir.records, Some(1));
}

#[test]
fn a_state_dir_others_can_write_is_refused_by_every_command_s9() {
    let f = Fixture::new();
    let (sy, _) = f.engine();
    let plan = sy.plan(&standard_input()).unwrap();
    sy.apply(&plan, ApplyMode::Commit).unwrap();
    let chmod = |rel: &str, mode: u32| {
        std::fs::set_permissions(f.host(rel), std::fs::Permissions::from_mode(mode)).unwrap()
    };
    let refused = |what: &str| {
        let tree = f.tree();
        for e in [
            sy.status().unwrap_err(),
            sy.runs().unwrap_err(),
            sy.apply(&plan, ApplyMode::Commit).unwrap_err(),
            sy.rollback(RunSelector::Last, ApplyMode::Commit)
                .unwrap_err(),
            sy.recover(ApplyMode::Commit).unwrap_err(),
        ] {
            assert_eq!(e.id(), ErrorId::Policy, "{e}");
            assert!(e.message().contains(what), "{e}");
            assert!(e.remediation().unwrap().contains("chmod go-w"), "{e:?}");
        }
        assert_eq!(f.tree(), tree, "nothing moved");
        let h = sy.doctor();
        assert_eq!(h.verdict, HealthVerdict::NeedsAttention);
        assert_eq!(h.exit_code, 1);
        assert!(
            h.problems
                .iter()
                .any(|p| p.area == Area::StateDir && p.message.contains(what)),
            "{:?}",
            h.problems
        );
    };
    chmod(STATE, 0o777);
    refused("it is writable by group or others (mode 0777)");
    chmod(STATE, 0o700);
    // An ancestor others can write is as bad: they could swap the directory out.
    chmod("var/lib", 0o777);
    refused("an ancestor");
    // A sticky ancestor (like /tmp) is fine when root owns it: nobody else can
    // rename or remove our entry in it. Owned by anyone else, it is not.
    chmod("var/lib", 0o1777);
    if switchyard_testkit::is_root() {
        assert!(
            sy.status().is_ok(),
            "a root-owned sticky ancestor is trusted"
        );
    } else {
        refused("an ancestor");
    }
    chmod("var/lib", 0o755);
    assert_eq!(sy.doctor().verdict, HealthVerdict::Ok);
}

/// Alone in its own process: a sibling test's child spawned (under `cargo test`)
/// while the lock is held keeps a copy of its open file description until it
/// execs, so the lock could still look held right after `drop(lock)` (T2, T6).
#[test]
fn doctor_names_the_lock_holder_l1() {
    switchyard_testkit::in_own_process(|_| {
        let f = Fixture::new();
        let (sy, _) = f.engine();
        sy.apply(&sy.plan(&standard_input()).unwrap(), ApplyMode::Commit)
            .unwrap();
        let lock = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(f.host(STATE).join("lock"))
            .unwrap();
        lock.lock().unwrap();
        std::fs::write(
            f.host(STATE).join("lock"),
            format!("{}\n", std::process::id()),
        )
        .unwrap();
        let h = sy.doctor();
        assert_eq!(h.lock.state, LockState::Held);
        assert_eq!(h.lock.pid, Some(std::process::id()));
        assert_eq!(h.verdict, HealthVerdict::Ok, "a held lock is not a problem");
        drop(lock);
        assert_eq!(sy.doctor().lock.state, LockState::Free);
    });
}

#[test]
fn doctor_reports_the_journal_a_crashed_child_left_a3() {
    let f = Fixture::new();
    let before = f.tree();
    crash_apply(&f, fp::APPLY_AFTER_SWAP, 2);
    let (sy, sink) = f.engine();
    let tree = f.tree();
    let h = sy.doctor();
    assert_eq!(h.verdict, HealthVerdict::PendingRecovery);
    assert_eq!(h.exit_code, 90);
    assert_eq!(h.error_id, Some(ErrorId::Recovery));
    assert_eq!(h.pending_journals.len(), 1);
    let run = h.pending_journals[0].run_id;
    assert_eq!(h.pending_journals[0].kind, RunKind::Apply);
    assert_eq!(h.recover.len(), 1);
    assert_eq!(h.recover[0].run_id, run);
    assert_eq!(h.recover[0].outcome, Outcome::Undone);
    assert!(h
        .problems
        .iter()
        .any(|p| p.area == Area::PendingJournal && p.message.contains(&run.to_string())));
    assert_eq!(h.lock.state, LockState::Free, "a dead child holds no lock");
    let e = h.error().unwrap();
    assert_eq!(e.id(), ErrorId::Recovery);
    assert_eq!(e.exit_code(), 90);
    let j = serde_json::to_value(&h).unwrap();
    assert_eq!(j["pending_journals"][0]["run_id"], run.to_string());
    assert_eq!(j["recover"][0]["outcome"], "undone");
    assert_eq!(j["verdict"], "pending_recovery");
    assert!(sink.facts().is_empty(), "doctor emits no facts");
    assert_eq!(f.tree(), tree, "doctor changes nothing");

    sy.recover(ApplyMode::Commit).unwrap();
    assert_eq!(f.tree(), before);
    assert_eq!(sy.doctor().verdict, HealthVerdict::Ok);
}

fn engine(f: &Fixture, edit: impl FnOnce(&mut Policy)) -> Switchyard {
    let mut p = Policy::dev();
    edit(&mut p);
    engine_for(f.path(), p).0
}

fn tamper_backup_of_ls(f: &Fixture) {
    let bak = f.host("usr/bin/.switchyard/ls.1.bak");
    let mut body = std::fs::read(&bak).unwrap();
    body.extend_from_slice(b"echo tampered\n");
    // In place: same inode, other bytes.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&bak)
        .and_then(|mut fh| std::io::Write::write_all(&mut fh, &body))
        .unwrap();
}

#[test]
fn rollback_verifies_backups_when_the_run_recorded_integrity_s6() {
    let f = Fixture::new();
    let strict = engine(&f, |p| p.require_sidecar_integrity = true);
    let run = strict
        .apply(&strict.plan(&standard_input()).unwrap(), ApplyMode::Commit)
        .unwrap();
    tamper_backup_of_ls(&f);
    let tampered = f.tree();
    // A handle that would not verify still does: the run recorded that it must.
    let lax = engine(&f, |p| p.require_sidecar_integrity = false);
    let e = lax
        .rollback(RunSelector::Id(run.run_id), ApplyMode::Commit)
        .unwrap_err();
    assert_eq!(e.id(), ErrorId::RestoreFailed, "{e}");
    assert!(e.message().contains("does not match its sidecar"), "{e}");
    assert_eq!(f.tree(), tampered, "nothing moved");
    // The dry-run predicts the same refusal.
    assert!(lax
        .rollback(RunSelector::Id(run.run_id), ApplyMode::DryRun)
        .is_err());
}

#[test]
fn rollback_waits_for_the_lock_as_long_as_the_run_recorded_l2() {
    let f = Fixture::new();
    let quick = engine(&f, |p| p.lock_timeout_ms = 100);
    let run = quick
        .apply(&quick.plan(&standard_input()).unwrap(), ApplyMode::Commit)
        .unwrap();
    let held = std::fs::OpenOptions::new()
        .read(true)
        .open(f.host(STATE).join("lock"))
        .unwrap();
    held.lock().unwrap();
    let patient = engine(&f, |p| p.lock_timeout_ms = 20_000);
    let t = Instant::now();
    let e = patient
        .rollback(RunSelector::Id(run.run_id), ApplyMode::Commit)
        .unwrap_err();
    assert_eq!(e.id(), ErrorId::Locking);
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "waited {:?}: the handle's timeout, not the run's 100 ms",
        t.elapsed()
    );
    assert!(e.message().contains("within 100 ms"), "{e}");
}

#[test]
fn recovery_verifies_backups_when_the_journal_recorded_integrity_s6() {
    let f = Fixture::new();
    // The crash child runs the dev preset: require_sidecar_integrity = true.
    crash_apply(&f, fp::APPLY_AFTER_BACKUP, 2);
    tamper_backup_of_ls(&f);
    let lax = engine(&f, |p| p.require_sidecar_integrity = false);
    let e = lax.recover(ApplyMode::Commit).unwrap_err();
    assert_eq!(e.id(), ErrorId::Recovery, "{e}");
    assert!(e.message().contains("does not match its sidecar"), "{e}");
    assert!(
        f.host("usr/bin/.switchyard/ls.1.bak").exists(),
        "the tampered backup was not put back"
    );
    assert!(
        lax.status().unwrap().pending_journal,
        "the run stays pending"
    );
}

fn record_path(f: &Fixture, run: &impl ToString) -> std::path::PathBuf {
    f.host(STATE)
        .join("runs")
        .join(run.to_string())
        .join("record.json")
}

/// The one journal a crashed child left.
fn only_journal(f: &Fixture) -> std::path::PathBuf {
    let mut js: Vec<_> = std::fs::read_dir(f.host(STATE).join("journal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(js.len(), 1, "{js:?}");
    js.pop().unwrap()
}

fn edit_json(p: &std::path::Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(p, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

#[test]
fn record_format_is_checked_on_read_s9() {
    let f = Fixture::new();
    let (sy, _) = f.engine();
    let run = sy
        .apply(&sy.plan(&standard_input()).unwrap(), ApplyMode::Commit)
        .unwrap();
    let rec = record_path(&f, &run.run_id);
    let written: serde_json::Value = serde_json::from_slice(&std::fs::read(&rec).unwrap()).unwrap();
    assert_eq!(written["format"], 3);
    assert_eq!(written["policy"]["preset"], "dev");
    assert_eq!(written["policy"]["require_sidecar_integrity"], true);

    // An unknown version is a clear error everywhere, never a misread record.
    edit_json(&rec, |v| v["format"] = 99.into());
    let applied = f.tree();
    for e in [
        sy.status().unwrap_err(),
        sy.runs().unwrap_err(),
        sy.rollback(RunSelector::Id(run.run_id), ApplyMode::Commit)
            .unwrap_err(),
    ] {
        assert!(e.message().contains("format version 99"), "{e}");
    }
    assert_eq!(f.tree(), applied, "nothing moved");
    let h = sy.doctor();
    assert_eq!(h.verdict, HealthVerdict::NeedsAttention);
    assert!(h.problems.iter().any(|p| p.area == Area::RunRecords));

    // Format 3 without its policy is refused; unknown fields are refused.
    edit_json(&rec, |v| {
        v["format"] = 3.into();
        v.as_object_mut().unwrap().remove("policy");
    });
    assert!(sy.status().unwrap_err().message().contains("policy"));
    edit_json(&rec, |v| {
        v["policy"] = written["policy"].clone();
        v["surprise"] = true.into();
    });
    assert!(sy.status().unwrap_err().message().contains("surprise"));

    // Formats 1 and 2 kept backups beside their targets: refused with a message that
    // says so (S8 migration), never read as a store name; nothing moves.
    for old in [1, 2] {
        edit_json(&rec, |v| {
            v["format"] = old.into();
            v.as_object_mut().unwrap().remove("surprise");
        });
        for e in [
            sy.status().unwrap_err(),
            sy.rollback(RunSelector::Id(run.run_id), ApplyMode::Commit)
                .unwrap_err(),
        ] {
            assert!(
                e.message().contains(&format!("format version {old}"))
                    && e.message().contains("earlier switchyard"),
                "{e}"
            );
        }
        assert_eq!(f.tree(), applied, "nothing moved");
    }
}

#[test]
fn an_unknown_journal_format_is_a_pending_problem_not_a_guess_s9() {
    let f = Fixture::new();
    crash_apply(&f, fp::APPLY_AFTER_SWAP, 1);
    let (sy, _) = f.engine();
    let j = only_journal(&f);
    edit_json(&j, |v| v["format"] = 7.into());
    let tree = f.tree();
    let h = sy.doctor();
    assert_eq!(h.verdict, HealthVerdict::PendingRecovery);
    assert!(
        h.problems
            .iter()
            .any(|p| p.area == Area::PendingJournal && p.message.contains("format version 7")),
        "{:?}",
        h.problems
    );
    let e = sy.recover(ApplyMode::Commit).unwrap_err();
    assert!(e.message().contains("format version 7"), "{e}");
    assert_eq!(f.tree(), tree, "nothing moved");
}

/// `rollback --last` obeys the policy of the run it undoes even when recovery, under
/// the lock, changes which run that is (L3): an interrupted rollback of the newest run
/// is finished first, so the run undone is an older one, recorded under a policy that
/// requires a lock manager. A handle without one must refuse it, as it refuses
/// `rollback <that run>`.
#[test]
fn rollback_last_obeys_the_run_selected_after_recovery_l3() {
    let f = Fixture::new();
    let guarded = engine(&f, |p| p.require_lock_manager = true);
    let older = guarded
        .apply(
            &guarded
                .plan(&PlanInput::default().link(sp("usr/bin/ls"), sp("usr/lib/alt/ls")))
                .unwrap(),
            ApplyMode::Commit,
        )
        .unwrap();
    let (dev, _) = f.engine();
    let newer = dev
        .apply(
            &dev.plan(&PlanInput::default().link(sp("usr/bin/cat"), sp("usr/lib/alt/cat")))
                .unwrap(),
            ApplyMode::Commit,
        )
        .unwrap();
    // A rollback of the newer run is killed right after its journal is durable.
    let end = run_child(
        EXE.as_ref(),
        &Scenario::kill(
            f.path(),
            "rollback",
            fp::ROLLBACK_AFTER_JOURNAL,
            Some(newer.run_id.to_string()),
            Vec::new(),
        ),
    );
    assert_eq!(end, ChildEnd::Killed);
    let mut p = Policy::dev();
    p.allow_roots = vec![sp("usr/bin")];
    let unlocked = Switchyard::builder(p).root(f.path()).build().unwrap();
    // By ID, the older run's recorded policy refuses a handle without a lock manager.
    let by_id = unlocked
        .rollback(RunSelector::Id(older.run_id), ApplyMode::Commit)
        .unwrap_err();
    assert_eq!(by_id.id(), ErrorId::Policy, "{by_id}");
    // --last selects the newer run before the lock, but the older one after recovery.
    let last = unlocked.rollback(RunSelector::Last, ApplyMode::Commit);
    let e = last.expect_err("the older run requires a lock manager (L3)");
    assert_eq!(e.id(), ErrorId::Policy, "{e}");
    assert!(e.message().contains("lock manager"), "{e}");
    assert!(
        f.host("usr/bin/ls").is_symlink(),
        "the older run is still in effect"
    );
}

/// L1, L4, M4: the read-only queries take no lock, so a run may settle (remove its
/// journal) between their listing the journal directory and reading the journal.
/// That run is not pending any more: `status`, `doctor` and a dry-run `recover` must
/// neither fail nor report it unreadable while other runs commit and roll back.
#[test]
fn queries_never_fail_while_runs_settle_concurrently_l1_m4() {
    let f = Fixture::new();
    let (sy, _) = f.engine();
    let plan = sy.plan(&standard_input()).unwrap();
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let (w, _) = f.engine();
            for _ in 0..300 {
                w.apply(&plan, ApplyMode::Commit).unwrap();
                w.rollback(RunSelector::Last, ApplyMode::Commit).unwrap();
            }
            done.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        let mut rounds = 0u32;
        while !done.load(std::sync::atomic::Ordering::SeqCst) {
            rounds += 1;
            if let Err(e) = sy.status() {
                panic!("status failed while a run settled (round {rounds}): {e}");
            }
            if let Err(e) = sy.recover(ApplyMode::DryRun) {
                panic!("recover dry-run failed while a run settled (round {rounds}): {e}");
            }
            let h = sy.doctor();
            let unreadable: Vec<_> = h
                .problems
                .iter()
                .filter(|p| p.message.contains("unreadable"))
                .collect();
            assert!(
                unreadable.is_empty(),
                "doctor (round {rounds}) reports a settled run's journal unreadable: {unreadable:?}"
            );
        }
        assert!(rounds > 0);
    });
}

/// S9 (issue 8, item 1): a journal someone planted or edited names its staging and
/// backup entries as absolute paths or with `..`. Every name read back is validated:
/// recovery (run by `recover` and first by every mutating run) refuses the journal,
/// and nothing inside or outside the root moves.
#[test]
fn planted_journal_names_are_refused_never_followed_s9() {
    let f = Fixture::new();
    crash_apply(&f, fp::APPLY_AFTER_SWAP, 1);
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("secret");
    std::fs::write(&secret, b"root-only").unwrap();
    let j = only_journal(&f);
    let tree = f.tree();
    for (field, name) in [
        ("backup", secret.display().to_string()),
        ("stage", secret.display().to_string()),
        ("backup", "../../../etc/shadow".to_owned()),
        ("stage", ".switchyard.ls/../../x".to_owned()),
        ("backup", "ls".to_owned()),
        ("stage", "..".to_owned()),
    ] {
        let original = std::fs::read(&j).unwrap();
        edit_json(&j, |v| {
            for a in v["actions"].as_array_mut().unwrap() {
                a[field] = name.clone().into();
            }
        });
        let (sy, _) = f.engine();
        let e = sy.recover(ApplyMode::Commit).unwrap_err();
        assert_eq!(e.id(), ErrorId::Recovery, "{field}={name}: {e}");
        assert!(
            e.message().contains("not a name switchyard creates"),
            "{field}={name}: {e}"
        );
        let e = sy
            .apply(&sy.plan(&standard_input()).unwrap(), ApplyMode::Commit)
            .unwrap_err();
        assert_eq!(e.id(), ErrorId::Recovery, "{field}={name}: {e}");
        assert_eq!(sy.doctor().verdict, HealthVerdict::PendingRecovery);
        assert_eq!(f.tree(), tree, "{field}={name}: nothing in the root moved");
        assert_eq!(std::fs::read(&secret).unwrap(), b"root-only");
        std::fs::write(&j, original).unwrap();
    }
    // The untouched journal still recovers.
    let (sy, _) = f.engine();
    sy.recover(ApplyMode::Commit).unwrap();
}

/// S9: a FIFO planted where a journal, a run record, `runs/LATEST` or the lock file
/// belongs made every read of it block for ever: `doctor` and `status` hung, and a
/// mutating run hung in recovery while holding the lock. Each one is now a failure
/// or a problem in the report, never a hang.
#[test]
fn planted_fifos_in_the_state_dir_fail_never_hang_s9() {
    let f = Fixture::new();
    let (sy, _) = f.engine();
    let rep = sy
        .apply(&sy.plan(&standard_input()).unwrap(), ApplyMode::Commit)
        .unwrap();
    let state = f.host(STATE);
    let record = state.join(format!("runs/{}/record.json", rep.run_id));
    let journal = state.join("journal/01900000-0000-7000-8000-000000000000.json");
    let fifo = |p: &std::path::Path| {
        let out = std::process::Command::new("mkfifo")
            .arg(p)
            .output()
            .unwrap();
        assert!(out.status.success(), "mkfifo {}", p.display());
    };
    // Runs `what` on a fresh engine in a thread; it must return within the timeout.
    let finishes = |what: &'static str| {
        let root = f.path().to_path_buf();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let (sy, _) = engine_for(&root, Policy::dev());
            let r = match what {
                "doctor" => (sy.doctor().verdict != HealthVerdict::Ok, String::new()),
                "status" => match sy.status() {
                    Ok(s) => (false, format!("{} targets", s.targets.len())),
                    Err(e) => (true, e.to_string()),
                },
                _ => match sy.rollback(RunSelector::Last, ApplyMode::Commit) {
                    Ok(_) => (false, "rolled back".to_owned()),
                    Err(e) => (true, e.to_string()),
                },
            };
            let _ = tx.send(r);
        });
        rx.recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("{what} hung on a planted FIFO"))
    };
    // A FIFO journal: every command refuses it (unreadable), none waits on it.
    fifo(&journal);
    assert!(finishes("doctor").0, "doctor reports the FIFO journal");
    assert!(finishes("status").0, "status refuses the FIFO journal");
    assert!(finishes("rollback").0, "rollback refuses the FIFO journal");
    std::fs::remove_file(&journal).unwrap();
    // A FIFO record.
    let saved = std::fs::read(&record).unwrap();
    std::fs::remove_file(&record).unwrap();
    fifo(&record);
    assert!(finishes("doctor").0, "doctor reports the FIFO record");
    finishes("status");
    std::fs::remove_file(&record).unwrap();
    std::fs::write(&record, &saved).unwrap();
    // A FIFO lock file: doctor probes it without waiting for a writer.
    std::fs::remove_file(state.join("lock")).unwrap();
    fifo(&state.join("lock"));
    finishes("doctor");
    std::fs::remove_file(state.join("lock")).unwrap();
    // A FIFO runs/LATEST: refused by name.
    std::fs::remove_file(state.join("runs/LATEST")).unwrap();
    fifo(&state.join("runs/LATEST"));
    let (failed, what) = finishes("rollback");
    assert!(
        failed && what.contains("LATEST is not a regular file"),
        "{what}"
    );
}

/// Issue 8 #6: a kill between writing a journal's temporary file and renaming it
/// leaves `journal/.<run>.json.tmp`, a journal that never became durable (its run
/// changed nothing). `doctor` reports it; the next recovery (under the lock) removes
/// it and changes nothing else.
#[test]
fn stale_temporary_journals_are_reported_and_removed_by_recovery() {
    let f = Fixture::new();
    let (sy, _) = f.engine();
    sy.apply(&sy.plan(&standard_input()).unwrap(), ApplyMode::Commit)
        .unwrap();
    let tmp = f
        .host(STATE)
        .join("journal/.01a2191a-0274-7605-8772-66fed17b5c02.json.tmp");
    std::fs::write(&tmp, b"{\"format\": 3, \"run_id\": \"trunc").unwrap();
    let tree = f.tree();
    let h = sy.doctor();
    assert_eq!(h.verdict, HealthVerdict::NeedsAttention, "{:?}", h.problems);
    assert!(
        h.problems
            .iter()
            .any(|p| p.area == Area::PendingJournal && p.message.contains(".json.tmp")),
        "{:?}",
        h.problems
    );
    assert!(!sy.status().unwrap().pending_journal, "not a pending run");
    sy.recover(ApplyMode::Commit).unwrap();
    assert!(!tmp.exists(), "recovery removes it");
    assert_eq!(f.tree(), tree, "and changes nothing else");
    assert_eq!(sy.doctor().verdict, HealthVerdict::Ok);
}

/// Issue 8, S9: a journal whose file name and run ID disagree could never be cleared
/// (recovery removes `journal/<run_id>.json`); it is refused, nothing moves.
#[test]
fn a_journal_naming_another_run_is_refused_s9() {
    let f = Fixture::new();
    crash_apply(&f, fp::APPLY_AFTER_SWAP, 1);
    let (sy, _) = f.engine();
    let j = only_journal(&f);
    let renamed = j.with_file_name("01a21938-0000-7000-8000-000000000000.json");
    std::fs::rename(&j, &renamed).unwrap();
    let tree = f.tree();
    let e = sy.recover(ApplyMode::Commit).unwrap_err();
    assert_eq!(e.id(), ErrorId::Recovery, "{e}");
    assert!(e.message().contains("names run"), "{e}");
    assert_eq!(f.tree(), tree, "nothing moved");
    assert_eq!(sy.doctor().verdict, HealthVerdict::PendingRecovery);
}

/// Issue 8, S9: a crafted rollback journal that names a live run but carries none of
/// its actions would have marked the run undone while its swaps stay in effect; it is
/// refused, the run stays live.
#[test]
fn a_crafted_rollback_journal_cannot_mark_a_run_undone_s9() {
    let f = Fixture::new();
    let (sy, _) = f.engine();
    let run = sy
        .apply(&sy.plan(&standard_input()).unwrap(), ApplyMode::Commit)
        .unwrap();
    let mut v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(record_path(&f, &run.run_id)).unwrap()).unwrap();
    let forged = "01a2193f-1111-7222-8333-444455556666";
    v["run_id"] = forged.to_string().into();
    v["kind"] = "rollback".into();
    v["status"] = "pending".into();
    v["target_run_id"] = run.run_id.to_string().into();
    v["actions"] = serde_json::json!([]);
    let journal = f.host(STATE).join(format!("journal/{forged}.json"));
    std::fs::create_dir_all(journal.parent().unwrap()).unwrap();
    std::fs::write(&journal, serde_json::to_vec(&v).unwrap()).unwrap();
    let tree = f.tree();
    let e = sy.recover(ApplyMode::Commit).unwrap_err();
    assert_eq!(e.id(), ErrorId::Recovery, "{e}");
    assert!(e.message().contains("does not match"), "{e}");
    assert_eq!(f.tree(), tree, "nothing moved");
    std::fs::remove_file(&journal).unwrap();
    let st = sy.status().unwrap();
    assert_eq!(st.targets.len(), 3, "the run is still live: {st:?}");
}
