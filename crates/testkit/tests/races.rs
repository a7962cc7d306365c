//! Races and hostile inputs found in review: another process changing targets
//! mid-run, sources that loop back, reserved names, FIFOs, out-of-order rollback.
//! In-process failpoint callbacks play the other process (nextest: process per test).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use switchyard::failpoints as fp;
use switchyard::{ApplyMode, ErrorId, PlanInput, RunSelector};
use switchyard_testkit::{
    run_child, sp, standard_input, standard_links, ChildEnd, Fixture, Scenario,
};

const EXE: &str = env!("CARGO_BIN_EXE_crashchild");

fn names(f: &Fixture) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(f.host("usr/bin"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

/// recovery of an interrupted rollback never writes the `undone` marker of the
/// apply it rolled forward, so that apply stays "live" forever.
#[test]
fn recovered_rollback_marks_its_apply_undone_r3() {
    let f = Fixture::new();
    let before = f.tree();
    let (sy, _) = f.engine();
    let plan = sy.plan(&standard_input()).unwrap();
    let a = sy.apply(&plan, ApplyMode::Commit).unwrap();
    let end = run_child(
        EXE.as_ref(),
        &Scenario {
            root: f.path().to_path_buf(),
            op: "rollback".into(),
            failpoint: fp::ROLLBACK_BEFORE_COMMIT.into(),
            mode: "kill".into(),
            nth: 1,
            run: Some(a.run_id.to_string()),
            links: standard_links(),
            fallback: false,
        },
    );
    assert_eq!(end, ChildEnd::Killed);
    sy.recover(ApplyMode::Commit).unwrap();
    assert_eq!(f.tree(), before, "tree is pre-plan after recovery");
    // After a clean rollback, status lists no managed targets and --last has nothing.
    let st = sy.status().unwrap();
    assert!(
        st.targets.is_empty(),
        "apply {} still reported live after its rollback was recovered: {:?}",
        a.run_id,
        st.targets
    );
    let last = sy.rollback(RunSelector::Last, ApplyMode::DryRun);
    assert!(
        last.is_err(),
        "rollback --last picks the already rolled-back run again: {:?}",
        last.map(|r| r.target_run_id)
    );
}

/// the target is replaced by another process (e.g. dpkg) between journal and swap.
/// Expected: apply fails with no visible change. Actual: our symlink stays installed,
/// the foreign file is hidden under the stage name, and recovery fails forever.
#[test]
fn target_replaced_between_journal_and_swap_changes_nothing_a3() {
    let f = Fixture::new();
    let (sy, _) = f.engine();
    let ls = f.host("usr/bin/ls");
    let tmp = f.host("usr/bin/dpkg-new");
    fail::cfg_callback(fp::APPLY_AFTER_JOURNAL, move || {
        std::fs::write(&tmp, b"#!/bin/sh\necho gnu-ls v2\n").unwrap();
        std::fs::rename(&tmp, &ls).unwrap();
    })
    .unwrap();
    let plan = sy
        .plan(&PlanInput::default().link(sp("usr/bin/ls"), sp("usr/lib/alt/ls")))
        .unwrap();
    let err = sy.apply(&plan, ApplyMode::Commit).unwrap_err();
    fail::remove(fp::APPLY_AFTER_JOURNAL);
    eprintln!("apply error: {} / {}", err.id.as_str(), err.message);
    eprintln!("usr/bin now: {:?}", names(&f));
    eprintln!(
        "ls link: {:?}",
        std::fs::read_link(f.host("usr/bin/ls")).ok()
    );
    let rec = sy.recover(ApplyMode::Commit);
    eprintln!("recover: {:?}", rec.as_ref().map_err(|e| e.message.clone()));
    assert!(
        std::fs::symlink_metadata(f.host("usr/bin/ls"))
            .unwrap()
            .is_file(),
        "failed apply left usr/bin/ls as our symlink (visible change)"
    );
    assert!(rec.is_ok(), "recovery wedged");
    assert!(
        !names(&f).iter().any(|n| n.starts_with(".switchyard.")),
        "litter: {:?}",
        names(&f)
    );
}

/// an absent target appears (another process) between journal and swap.
#[test]
fn absent_target_created_between_journal_and_swap_is_left_alone() {
    let f = Fixture::new();
    let (sy, _) = f.engine();
    let new = f.host("usr/bin/new");
    fail::cfg_callback(fp::APPLY_AFTER_JOURNAL, move || {
        std::fs::write(&new, b"pkg file\n").unwrap();
    })
    .unwrap();
    let plan = sy.plan(&standard_input()).unwrap();
    let err = sy.apply(&plan, ApplyMode::Commit).unwrap_err();
    fail::remove(fp::APPLY_AFTER_JOURNAL);
    eprintln!("apply error: {} / {}", err.id.as_str(), err.message);
    eprintln!("usr/bin now: {:?}", names(&f));
    let rec = sy.recover(ApplyMode::Commit);
    eprintln!("recover: {:?}", rec.as_ref().map_err(|e| e.message.clone()));
    // Even an unrelated plan is now refused.
    let other = sy
        .plan(&PlanInput::default().link(sp("usr/bin/keep"), sp("usr/lib/alt/keep")))
        .unwrap();
    let o = sy.apply(&other, ApplyMode::Commit);
    eprintln!(
        "unrelated apply: {:?}",
        o.as_ref().map(|_| ()).map_err(|e| e.id.as_str())
    );
    assert!(
        rec.is_ok(),
        "recovery wedged by a foreign file the user wants to keep"
    );
    assert!(o.is_ok(), "an unrelated plan must still apply");
    assert_eq!(
        std::fs::read(f.host("usr/bin/new")).unwrap(),
        b"pkg file\n",
        "their file is kept"
    );
    let litter: Vec<String> = names(&f)
        .into_iter()
        .filter(|n| {
            n.ends_with(".stage")
                || n.starts_with(".switchyard.ls.")
                || n.starts_with(".switchyard.cat.")
        })
        .collect();
    assert!(litter.is_empty(), "litter: {litter:?}");
}

/// a source that resolves (through a symlink) to the target itself passes
/// preflight; after apply the target is a symlink loop (A2: broken path).
#[test]
fn source_resolving_to_a_target_is_refused_a2() {
    let f = Fixture::new();
    std::os::unix::fs::symlink("../../bin/ls", f.host("usr/lib/alt/via")).unwrap();
    let (sy, _) = f.engine();
    let plan = sy
        .plan(&PlanInput::default().link(sp("usr/bin/ls"), sp("usr/lib/alt/via")))
        .unwrap();
    let r = sy.apply(&plan, ApplyMode::Commit);
    let meta = std::fs::metadata(f.host("usr/bin/ls"));
    eprintln!(
        "apply: {:?}; stat(ls): {:?}",
        r.as_ref().map(|r| r.changed).map_err(|e| e.message.clone()),
        meta.as_ref().map(|_| ())
    );
    assert!(
        meta.is_ok(),
        "usr/bin/ls no longer resolves: {:?}",
        meta.err()
    );
}

/// target is a symlink to an executable; a non-executable source passes.
#[test]
fn non_exec_source_over_symlinked_exec_target_is_refused_a2() {
    let f = Fixture::new();
    std::fs::set_permissions(
        f.host("usr/lib/alt/cat"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let (sy, _) = f.engine();
    let plan = sy
        .plan(&PlanInput::default().link(sp("usr/bin/cat"), sp("usr/lib/alt/cat")))
        .unwrap();
    let r = sy.apply(&plan, ApplyMode::Commit);
    assert!(
        r.is_err(),
        "usr/bin/cat (executable via its symlink) replaced by a non-executable source"
    );
}

/// restore + out-of-order rollback: every run rolled back, yet the target is the
/// alternative and the original is orphaned where no command can reach it.
#[test]
fn rollback_out_of_order_is_refused_and_newest_first_restores_r7() {
    let f = Fixture::new();
    let before = f.tree();
    let (sy, _) = f.engine();
    let a = sy
        .apply(
            &sy.plan(&PlanInput::default().link(sp("usr/bin/ls"), sp("usr/lib/alt/ls")))
                .unwrap(),
            ApplyMode::Commit,
        )
        .unwrap();
    let r = sy
        .apply(
            &sy.plan(&PlanInput::default().restore(sp("usr/bin/ls")))
                .unwrap(),
            ApplyMode::Commit,
        )
        .unwrap();
    assert!(r.changed);
    // Rolling back A first would strand R's nodes: refused, nothing changed.
    let mid = f.tree();
    let err = sy
        .rollback(RunSelector::Id(a.run_id), ApplyMode::Commit)
        .unwrap_err();
    assert_eq!(err.id, ErrorId::Policy, "{err}");
    assert!(err.message.contains(&r.run_id.to_string()), "{err}");
    assert_eq!(f.tree(), mid);
    // Newest first works and ends exactly pre-plan.
    sy.rollback(RunSelector::Id(r.run_id), ApplyMode::Commit)
        .unwrap();
    sy.rollback(RunSelector::Id(a.run_id), ApplyMode::Commit)
        .unwrap();
    assert!(sy.status().unwrap().targets.is_empty());
    assert_eq!(
        f.tree(),
        before,
        "all runs rolled back but tree is not pre-plan"
    );
}

/// a plan may target Switchyard's own backup names, hijacking a backup.
#[test]
fn plans_may_not_name_switchyard_backups_or_state() {
    let f = Fixture::new();
    let (sy, _) = f.engine();
    sy.apply(
        &sy.plan(&PlanInput::default().link(sp("usr/bin/ls"), sp("usr/lib/alt/ls")))
            .unwrap(),
        ApplyMode::Commit,
    )
    .unwrap();
    for (t, s) in [
        ("usr/bin/.switchyard.ls.1.bak", "usr/lib/alt/keep"),
        ("usr/bin/keep", "usr/bin/.switchyard.ls.1.bak"),
        ("var/lib/switchyard/lock", "usr/lib/alt/keep"),
    ] {
        let err = sy
            .plan(&PlanInput::default().link(sp(t), sp(s)))
            .unwrap_err();
        assert_eq!(err.id, ErrorId::Usage, "{t} -> {s}: {err}");
    }
}

/// a target symlink pointing at a FIFO hangs preflight (open(O_RDONLY) blocks).
#[test]
fn preflight_never_blocks_on_a_fifo() {
    let f = Fixture::new();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        f.host("usr/lib/fifo").as_path(),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    std::fs::remove_file(f.host("usr/bin/cat")).unwrap();
    std::os::unix::fs::symlink("../lib/fifo", f.host("usr/bin/cat")).unwrap();
    let root = f.path().to_path_buf();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (sy, _) = switchyard_testkit::engine_for(&root, switchyard::Policy::dev());
        let plan = sy
            .plan(&PlanInput::default().link(sp("usr/bin/cat"), sp("usr/lib/alt/cat")))
            .unwrap();
        let _ = tx.send(sy.preflight(&plan).map(|r| r.ok()).map_err(|e| e.id));
    });
    let got = rx.recv_timeout(std::time::Duration::from_secs(5));
    assert!(
        got.is_ok(),
        "preflight did not return within 5 s (blocked opening the FIFO)"
    );
    let _: Option<Result<bool, ErrorId>> = got.ok();
}
