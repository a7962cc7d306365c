//! Races and hostile inputs found in review: another process changing targets
//! mid-run, sources that loop back, reserved names, FIFOs, out-of-order rollback.
//! Failpoint callbacks play the other process; a test that arms one runs alone in its
//! own process (`in_own_process`, T6), under `cargo test` as under nextest.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use switchyard::failpoints as fp;
use switchyard::{ApplyMode, ErrorId, PlanInput, RunSelector};
use switchyard_testkit::{
    in_own_process, run_child, sp, standard_input, standard_links, ChildEnd, Fixture, Scenario,
    STATE,
};

const EXE: &str = env!("CARGO_BIN_EXE_crashchild");

/// The one-action plan most of these tests use: `usr/bin/ls` → `usr/lib/alt/ls`.
fn link_ls(sy: &switchyard::Switchyard) -> switchyard::Plan {
    sy.plan(&PlanInput::default().link(sp("usr/bin/ls"), sp("usr/lib/alt/ls")))
        .unwrap()
}

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
        &Scenario::kill(
            f.path(),
            "rollback",
            fp::ROLLBACK_BEFORE_COMMIT,
            Some(a.run_id.to_string()),
            standard_links(),
        ),
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
    in_own_process(|fps| {
        let f = Fixture::new();
        let (sy, _) = f.engine();
        let ls = f.host("usr/bin/ls");
        let tmp = f.host("usr/bin/dpkg-new");
        fps.cfg_callback(fp::APPLY_AFTER_JOURNAL, move || {
            std::fs::write(&tmp, b"#!/bin/sh\necho gnu-ls v2\n").unwrap();
            std::fs::rename(&tmp, &ls).unwrap();
        });
        let plan = link_ls(&sy);
        let err = sy.apply(&plan, ApplyMode::Commit).unwrap_err();
        fps.remove(fp::APPLY_AFTER_JOURNAL);
        eprintln!("apply error: {} / {}", err.id().as_str(), err.message());
        eprintln!("usr/bin now: {:?}", names(&f));
        eprintln!(
            "ls link: {:?}",
            std::fs::read_link(f.host("usr/bin/ls")).ok()
        );
        let rec = sy.recover(ApplyMode::Commit);
        eprintln!(
            "recover: {:?}",
            rec.as_ref().map_err(|e| e.message().to_owned())
        );
        assert!(
            std::fs::symlink_metadata(f.host("usr/bin/ls"))
                .unwrap()
                .is_file(),
            "failed apply left usr/bin/ls as our symlink (visible change)"
        );
        assert!(rec.is_ok(), "recovery wedged");
        assert!(
            !names(&f).iter().any(|n| n.starts_with(".switchyard")),
            "litter: {:?}",
            names(&f)
        );
    });
}

/// an absent target appears (another process) between journal and swap.
#[test]
fn absent_target_created_between_journal_and_swap_is_left_alone() {
    in_own_process(|fps| {
        let f = Fixture::new();
        let (sy, _) = f.engine();
        let new = f.host("usr/bin/new");
        fps.cfg_callback(fp::APPLY_AFTER_JOURNAL, move || {
            std::fs::write(&new, b"pkg file\n").unwrap();
        });
        let plan = sy.plan(&standard_input()).unwrap();
        let err = sy.apply(&plan, ApplyMode::Commit).unwrap_err();
        fps.remove(fp::APPLY_AFTER_JOURNAL);
        eprintln!("apply error: {} / {}", err.id().as_str(), err.message());
        eprintln!("usr/bin now: {:?}", names(&f));
        let rec = sy.recover(ApplyMode::Commit);
        eprintln!(
            "recover: {:?}",
            rec.as_ref().map_err(|e| e.message().to_owned())
        );
        // Even an unrelated plan is now refused.
        let other = sy
            .plan(&PlanInput::default().link(sp("usr/bin/keep"), sp("usr/lib/alt/keep")))
            .unwrap();
        let o = sy.apply(&other, ApplyMode::Commit);
        eprintln!(
            "unrelated apply: {:?}",
            o.as_ref().map(|_| ()).map_err(|e| e.id().as_str())
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
        // The unrelated apply made the store and keeps keep's backup there: nothing
        // else of ours may remain, beside the targets or in the store.
        let litter: Vec<String> = names(&f)
            .into_iter()
            .filter(|n| n.ends_with(".stage") || n.starts_with(".switchyard."))
            .chain(
                f.tree()
                    .names_in("usr/bin/.switchyard")
                    .into_iter()
                    .filter(|n| n != "keep.1.bak"),
            )
            .collect();
        assert!(litter.is_empty(), "litter: {litter:?}");
    });
}

/// a source that resolves (through a symlink) to the target itself passes
/// preflight; after apply the target is a symlink loop (A2: broken path).
/// Expected: preflight stops the row, apply refuses with E_POLICY, nothing changes.
#[test]
fn source_resolving_to_a_target_is_refused_a2() {
    let f = Fixture::new();
    std::os::unix::fs::symlink("../../bin/ls", f.host("usr/lib/alt/via")).unwrap();
    let before = f.tree();
    let (sy, _) = f.engine();
    let plan = sy
        .plan(&PlanInput::default().link(sp("usr/bin/ls"), sp("usr/lib/alt/via")))
        .unwrap();
    assert_loop_refused(
        &f,
        &sy,
        &plan,
        "usr/bin/ls",
        "source usr/lib/alt/via resolves through usr/bin/ls, a target of this plan; after the swap the link would loop",
        &before,
    );
}

/// Asserts preflight stops `target` with exactly `note`, and apply refuses the
/// plan with E_POLICY naming it, changing nothing (A2).
fn assert_loop_refused(
    f: &Fixture,
    sy: &switchyard::Switchyard,
    plan: &switchyard::Plan,
    target: &str,
    note: &str,
    before: &switchyard_testkit::Tree,
) {
    let pre = sy.preflight(plan).unwrap();
    let row = pre.rows.iter().find(|r| r.path.as_str() == target).unwrap();
    assert_eq!(row.verdict, switchyard::Verdict::Stop, "{row:?}");
    assert_eq!(row.notes, [note], "{row:?}");
    let err = sy.apply(plan, ApplyMode::Commit).unwrap_err();
    assert_eq!(err.id(), ErrorId::Policy, "{err}");
    assert_eq!(
        err.message(),
        format!("preflight stopped 1 of 1 actions; first: {target}: {note}"),
        "{err}"
    );
    assert_eq!(&f.tree(), before, "a refused plan changed the tree");
    assert!(
        std::fs::metadata(f.host(target)).is_ok(),
        "{target} no longer resolves"
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
    let a = sy.apply(&link_ls(&sy), ApplyMode::Commit).unwrap();
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
    assert_eq!(err.id(), ErrorId::Policy, "{err}");
    assert!(err.message().contains(&r.run_id.to_string()), "{err}");
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
    sy.apply(&link_ls(&sy), ApplyMode::Commit).unwrap();
    for (t, s) in [
        ("usr/bin/.switchyard/ls.1.bak", "usr/lib/alt/keep"),
        ("usr/bin/keep", "usr/bin/.switchyard/ls.1.bak"),
        ("usr/bin/.switchyard", "usr/lib/alt/keep"),
        ("var/lib/switchyard/lock", "usr/lib/alt/keep"),
    ] {
        let err = sy
            .plan(&PlanInput::default().link(sp(t), sp(s)))
            .unwrap_err();
        assert_eq!(err.id(), ErrorId::Usage, "{t} -> {s}: {err}");
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
        let _ = tx.send(sy.preflight(&plan).map(|r| r.ok()).map_err(|e| e.id()));
    });
    let got = rx
        .recv_timeout(std::time::Duration::from_secs(5))
        .unwrap_or_else(|e| {
            panic!("preflight did not return within 5 s (blocked opening the FIFO): {e}")
        });
    // It returns a report, and replacing a symlink whose destination is a FIFO is fine.
    assert_eq!(got, Ok(true), "preflight over a symlink to a FIFO");
}

// Found by the second review.

/// the loop check compares the source's *final* node with the targets' own nodes.
/// A source that reaches a *symlink* target on its way (source -> usr/bin/cat ->
/// gnu-cat) resolves to gnu-cat, passes, and after the swap usr/bin/cat is a loop.
/// Expected: refused like a source resolving to the target itself.
#[test]
fn source_through_symlinked_target_is_refused_a2() {
    let f = Fixture::new();
    std::os::unix::fs::symlink("../../bin/cat", f.host("usr/lib/alt/via")).unwrap();
    let before = f.tree();
    let (sy, _) = f.engine();
    let plan = sy
        .plan(&PlanInput::default().link(sp("usr/bin/cat"), sp("usr/lib/alt/via")))
        .unwrap();
    assert_loop_refused(
        &f,
        &sy,
        &plan,
        "usr/bin/cat",
        "source usr/lib/alt/via resolves through usr/bin/cat, a target of this plan; after the swap the link would loop",
        &before,
    );
}

/// the target is replaced by another process after staging, and the run dies
/// (here: EIO; SIGKILL leaves the same state) at APPLY_AFTER_SWAP, i.e. after the
/// exchange and before the concurrent-replacement check. Undo finds our link at the
/// target, the foreign node under the stage name, the original nowhere: it refuses,
/// and recovery is wedged for every later command.
#[test]
fn crash_after_exchange_with_replaced_target_recovers_their_node_a3() {
    in_own_process(|fps| {
        let f = Fixture::new();
        let (sy, _) = f.engine();
        let ls = f.host("usr/bin/ls");
        let tmp = f.host("usr/bin/dpkg-new");
        fps.cfg_callback(fp::APPLY_AFTER_STAGE, move || {
            std::fs::write(&tmp, b"#!/bin/sh\necho gnu-ls v2\n").unwrap();
            std::fs::rename(&tmp, &ls).unwrap();
        });
        fps.cfg(fp::APPLY_AFTER_SWAP, "return");
        let plan = link_ls(&sy);
        let err = sy.apply(&plan, ApplyMode::Commit).unwrap_err();
        fps.remove(fp::APPLY_AFTER_STAGE);
        fps.remove(fp::APPLY_AFTER_SWAP);
        eprintln!("apply: {} / {}", err.id().as_str(), err.message());
        eprintln!("usr/bin: {:?}", names(&f));
        let rec = sy.recover(ApplyMode::Commit);
        eprintln!(
            "recover: {:?}",
            rec.as_ref().map_err(|e| e.message().to_owned())
        );
        assert!(rec.is_ok(), "recovery wedged");
        assert_eq!(
            std::fs::read(f.host("usr/bin/ls")).unwrap(),
            b"#!/bin/sh\necho gnu-ls v2\n",
            "the other process's file must be back at the target"
        );
        assert!(
            !names(&f).iter().any(|n| n.starts_with(".switchyard")),
            "litter: {:?}",
            names(&f)
        );
    });
}

/// a crash between a rollback's `write_record` and `clear_journal` (no failpoint
/// there) leaves its journal; recovery "rolls it forward" and rewrites the rollback's
/// record with EMPTY facts, destroying the rollback's evidence (O1).
#[test]
fn recovered_rollback_keeps_its_facts_o1() {
    let f = Fixture::new();
    let (sy, _) = f.engine();
    let a = sy.apply(&link_ls(&sy), ApplyMode::Commit).unwrap();
    let rb = sy
        .rollback(RunSelector::Id(a.run_id), ApplyMode::Commit)
        .unwrap();
    let facts = rb.facts_path.clone().unwrap();
    assert!(!std::fs::read(&facts).unwrap().is_empty());
    // Reconstruct the on-disk state of a crash right after `write_record`: the
    // journal (the pending record) is still there, no `undone` marker yet.
    let state = f.host(STATE);
    let rec = state.join(format!("runs/{}/record.json", rb.run_id));
    let mut j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&rec).unwrap()).unwrap();
    j["status"] = "pending".into();
    j["changed"] = false.into();
    std::fs::write(
        state.join(format!("journal/{}.json", rb.run_id)),
        serde_json::to_vec(&j).unwrap(),
    )
    .unwrap();
    std::fs::remove_file(state.join(format!("runs/{}/undone", a.run_id))).unwrap();
    sy.recover(ApplyMode::Commit).unwrap();
    let after = std::fs::read(&facts).unwrap();
    assert!(
        !after.is_empty(),
        "recovery overwrote rollback {}'s facts.jsonl with nothing",
        rb.run_id
    );
}

/// out-of-order rollback under a newer *link* run of the same target (not a
/// restore) is not caught by `backups_in_place` (the older backup is still intact):
/// the newer-run check is skipped and the user gets E_RESTORE_FAILED advising them to
/// move "the unexpected node" (Switchyard's own newer link) aside.
#[test]
fn out_of_order_rollback_under_newer_link_run_is_refused_as_policy_r7() {
    let f = Fixture::new();
    let (sy, _) = f.engine();
    let a = sy.apply(&link_ls(&sy), ApplyMode::Commit).unwrap();
    let b = sy
        .apply(
            &sy.plan(&PlanInput::default().link(sp("usr/bin/ls"), sp("usr/lib/alt/new")))
                .unwrap(),
            ApplyMode::Commit,
        )
        .unwrap();
    assert!(b.changed);
    let err = sy
        .rollback(RunSelector::Id(a.run_id), ApplyMode::Commit)
        .unwrap_err();
    eprintln!(
        "{} / {} / {:?}",
        err.id().as_str(),
        err.message(),
        err.remediation()
    );
    assert_eq!(err.id(), ErrorId::Policy, "{err}");
    assert!(err.message().contains(&b.run_id.to_string()), "{err}");
}

/// same, but the newer run links the same source after a package upgrade
/// replaced our link: rolling back the OLDER run silently undoes the newer one (the
/// package's file ends up stranded in the newer run's backup) and the newer run's own
/// rollback then fails.
#[test]
fn out_of_order_rollback_under_a_relink_is_refused_r7() {
    let f = Fixture::new();
    let (sy, _) = f.engine();
    let a = sy.apply(&link_ls(&sy), ApplyMode::Commit).unwrap();
    // A package upgrade replaces our link with a new ls.
    let tmp = f.host("usr/bin/dpkg-new");
    std::fs::write(&tmp, b"#!/bin/sh\necho gnu-ls v2\n").unwrap();
    std::fs::rename(&tmp, f.host("usr/bin/ls")).unwrap();
    let b = sy.apply(&link_ls(&sy), ApplyMode::Commit).unwrap();
    assert!(b.changed);
    let r = sy.rollback(RunSelector::Id(a.run_id), ApplyMode::Commit);
    eprintln!(
        "rollback older: {:?}",
        r.as_ref()
            .map(|r| r.changed)
            .map_err(|e| e.message().to_owned())
    );
    eprintln!("usr/bin: {:?}", names(&f));
    let rb = sy.rollback(RunSelector::Id(b.run_id), ApplyMode::Commit);
    eprintln!(
        "rollback newer: {:?}",
        rb.as_ref()
            .map(|r| r.changed)
            .map_err(|e| e.message().to_owned())
    );
    assert!(
        r.is_err(),
        "older run rolled back underneath newer run {}",
        b.run_id
    );
}

/// link, restore, link again. The third run reuses backup name `.1.bak` (freed by
/// the restore), so `backups_in_place` of run 1 is true and the newer-run check is
/// skipped. Rolling back run 1 first succeeds; after rolling back the other two as
/// well, the target is the alternative and the original is orphaned at `.1.bak`.
#[test]
fn link_restore_link_rolled_back_newest_first_is_exact_r7() {
    let f = Fixture::new();
    let before = f.tree();
    let (sy, _) = f.engine();
    let r1 = sy.apply(&link_ls(&sy), ApplyMode::Commit).unwrap();
    let r2 = sy
        .apply(
            &sy.plan(&PlanInput::default().restore(sp("usr/bin/ls")))
                .unwrap(),
            ApplyMode::Commit,
        )
        .unwrap();
    let r3 = sy.apply(&link_ls(&sy), ApplyMode::Commit).unwrap();
    assert!(r1.changed && r2.changed && r3.changed);
    let first = sy.rollback(RunSelector::Id(r1.run_id), ApplyMode::Commit);
    eprintln!(
        "rollback r1 first: {:?}",
        first
            .as_ref()
            .map(|r| r.changed)
            .map_err(|e| e.message().to_owned())
    );
    for id in [r3.run_id, r2.run_id, r1.run_id] {
        let r = sy.rollback(RunSelector::Id(id), ApplyMode::Commit);
        eprintln!(
            "rollback {id}: {:?}",
            r.as_ref()
                .map(|r| r.changed)
                .map_err(|e| e.message().to_owned())
        );
    }
    eprintln!(
        "usr/bin: {:?}; ls -> {:?}",
        names(&f),
        std::fs::read_link(f.host("usr/bin/ls")).ok()
    );
    assert!(first.is_err(), "rollback of the oldest run was not refused");
    assert_eq!(
        f.tree(),
        before,
        "every run rolled back but the tree is not pre-plan"
    );
}

/// A state directory configured by host path but lying inside the root is protected
/// like the default one.
#[test]
fn host_state_dir_inside_the_root_is_never_planned() {
    let f = Fixture::new();
    let mut policy = switchyard::Policy::dev();
    policy.allow_roots = vec![sp("usr/bin"), sp("srv")];
    let sy = switchyard::Switchyard::builder(policy)
        .root(f.path())
        .state_dir(switchyard::StateLocation::Host(f.host("srv/state")))
        .build()
        .unwrap();
    let err = sy
        .plan(&PlanInput::default().link(sp("srv/state/lock"), sp("usr/lib/alt/ls")))
        .unwrap_err();
    assert_eq!(err.id(), ErrorId::Usage, "{err}");
    assert!(
        err.message().contains("inside the state directory"),
        "{err}"
    );
}
