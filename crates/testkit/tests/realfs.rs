//! Real faults on real filesystems (root; CI runs these as root, T3): ENOSPC at every
//! inode allocation of a run, immutable targets, read-only and noexec mounts (S2),
//! and state on another filesystem. Nothing is simulated: the kernel says no.
//!
//! Built as non-root these tests are ignored (with the reason); built and run as
//! root (CI) they run, and a missing tool or a failing mount panics (T3).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use switchyard::failpoints as fp;
use switchyard::{ApplyMode, ErrorId, Policy, RunSelector, StateLocation, Switchyard};
use switchyard_testkit::{
    assert_applied, assert_root, chattr, engine_for, in_own_process, is_root, run_child, sp,
    standard_input, standard_links, ChildEnd, Fixture, LoopFs, Scenario, TmpfsMount, STATE,
};

/// T3: CI runs as root, so none of the tests below is ignored there.
#[test]
fn ci_builds_and_runs_the_root_tests_t3() {
    // `build.rs` sets `testkit_not_root` for a non-root build.
    const BUILT_AS_ROOT: bool = !cfg!(testkit_not_root);
    if std::env::var_os("CI").is_some() {
        assert!(
            BUILT_AS_ROOT && is_root(),
            "CI must build and run the suite as root (built as root: {BUILT_AS_ROOT}, \
             running as root: {}): the real-filesystem tests would be ignored",
            is_root()
        );
    } else {
        assert_eq!(
            BUILT_AS_ROOT,
            is_root(),
            "built and run by different users; rebuild as this user"
        );
    }
}

#[test]
#[cfg_attr(testkit_not_root, ignore = "needs root: tmpfs mounts, chattr")]
fn enospc_at_every_inode_allocation_leaves_pre_plan_a3_r4() {
    assert_root("enospc sweep");
    let mut failures = 0;
    let mut first_success = None;
    for extra in 0..64 {
        let m = TmpfsMount::new("size=16m");
        let f = Fixture::new_in(m.path());
        let before = f.tree();
        m.remount(&format!("nr_inodes={}", m.inodes_used() + extra));
        let (sy, _) = engine_for(f.path(), Policy::dev());
        let plan = sy.plan(&standard_input()).unwrap();
        match sy.apply(&plan, ApplyMode::Commit) {
            Ok(rep) => {
                assert!(rep.changed);
                assert_applied(&before, &f.tree());
                first_success = Some(extra);
                break;
            }
            Err(e) => {
                failures += 1;
                let ctx = format!("+{extra} inodes: {e}");
                assert!(
                    e.errno() == Some(28) || e.message().contains("No space left"),
                    "{ctx}"
                );
                assert_eq!(f.tree(), before, "{ctx}: not pre-plan (R4)");
                // With room again, any leftover journal is settled and the plan applies.
                m.remount("nr_inodes=100000");
                sy.recover(ApplyMode::Commit)
                    .unwrap_or_else(|e| panic!("{ctx}: recover: {e}"));
                assert_eq!(f.tree(), before, "{ctx}: recovery");
                assert!(!sy.status().unwrap().pending_journal, "{ctx}");
                assert!(sy.apply(&plan, ApplyMode::Commit).unwrap().changed, "{ctx}");
                assert_applied(&before, &f.tree());
            }
        }
    }
    let extra = first_success.unwrap_or_else(|| panic!("the run never succeeded"));
    assert!(failures > 0, "never ran out of inodes");
    eprintln!("ENOSPC sweep: {failures} failing runs before the first success at +{extra} inodes");
}

#[test]
#[cfg_attr(testkit_not_root, ignore = "needs root: tmpfs mounts, chattr")]
fn immutable_target_stops_preflight_and_fails_the_swap_safely_s2() {
    // Arms a failpoint: alone in its own process (T6).
    in_own_process(|fps| {
        assert_root("immutable target");
        let f = Fixture::new();
        let ls = f.host("usr/bin/ls");
        let before = f.tree();
        let (sy, _) = engine_for(f.path(), Policy::dev());
        let plan = sy.plan(&standard_input()).unwrap();
        chattr("+i", &ls);
        let pre = sy.preflight(&plan).unwrap();
        let row = pre
            .rows
            .iter()
            .find(|r| r.path.as_str() == "usr/bin/ls")
            .unwrap();
        assert!(row.notes.iter().any(|n| n.contains("immutable")), "{row:?}");
        let err = sy.apply(&plan, ApplyMode::Commit).unwrap_err();
        chattr("-i", &ls);
        assert_eq!(err.id(), ErrorId::Policy);
        assert_eq!(f.tree(), before);

        // Made immutable after preflight, between journal and swap: the kernel refuses
        // the exchange (EPERM) and every action already done is undone.
        let target = ls.clone();
        fps.cfg_callback(fp::APPLY_AFTER_JOURNAL, move || chattr("+i", &target));
        let err = sy.apply(&plan, ApplyMode::Commit).unwrap_err();
        fps.remove(fp::APPLY_AFTER_JOURNAL);
        chattr("-i", &ls);
        assert_eq!(err.id(), ErrorId::AtomicSwap, "{err}");
        assert_eq!(err.errno(), Some(1), "EPERM from the kernel: {err}");
        assert_eq!(f.tree(), before);
        assert!(!sy.status().unwrap().pending_journal);
    });
}

#[test]
#[cfg_attr(testkit_not_root, ignore = "needs root: tmpfs mounts, chattr")]
fn read_only_and_noexec_mounts_stop_preflight_with_nothing_changed_s2() {
    assert_root("ro/noexec mounts");
    for (opt, word) in [("ro", "read-only"), ("noexec", "noexec")] {
        let m = TmpfsMount::new("size=16m");
        let f = Fixture::new_in(m.path());
        m.remount(opt);
        let before = switchyard_testkit::Tree::capture(f.path(), &[]);
        let (sy, _) = engine_for(f.path(), Policy::dev());
        let plan = sy.plan(&standard_input()).unwrap();
        let err = sy.apply(&plan, ApplyMode::Commit).unwrap_err();
        assert_eq!(err.id(), ErrorId::Policy, "{opt}: {err}");
        assert!(err.message().contains(word), "{opt}: {err}");
        assert_eq!(
            switchyard_testkit::Tree::capture(f.path(), &[]),
            before,
            "{opt}: not even a state dir"
        );
    }
}

#[test]
#[cfg_attr(testkit_not_root, ignore = "needs root: tmpfs mounts, chattr")]
fn state_on_another_filesystem_works_and_rolls_back_exactly() {
    assert_root("state on another filesystem");
    let m = TmpfsMount::new("size=16m");
    let f = Fixture::new();
    let before = f.tree();
    let mut policy = Policy::dev();
    policy.allow_roots = vec![sp("usr/bin")];
    let state = m.path().join("state");
    let sy = Switchyard::builder(policy)
        .root(f.path())
        .state_dir(StateLocation::Host(state.clone()))
        .with_lock_manager(switchyard::FileLock::new())
        .build()
        .unwrap();
    let rep = sy
        .apply(&sy.plan(&standard_input()).unwrap(), ApplyMode::Commit)
        .unwrap();
    assert_applied(&before, &f.tree());
    assert!(state
        .join("runs")
        .join(rep.run_id.to_string())
        .join("record.json")
        .is_file());
    assert!(
        !f.host(STATE).exists(),
        "nothing written to the root's default state dir"
    );
    sy.rollback(RunSelector::Id(rep.run_id), ApplyMode::Commit)
        .unwrap();
    assert_eq!(f.tree(), before);
}

/// F3, A3, A4: a power cut in every crash window of apply and rollback, on real xfs,
/// ext4 and btrfs (loop-mounted): the crash child is killed at the window, then what was
/// not durable is lost (`LoopFs::power_cut`) and the filesystem is mounted again.
/// `recover` then leaves exactly the pre-plan tree or exactly the applied one — for
/// an apply past its commit point, the applied one.
#[test]
#[cfg_attr(testkit_not_root, ignore = "needs root: loop mounts, xfs_io shutdown")]
fn a_power_cut_in_every_window_recovers_on_xfs_ext4_and_btrfs_f3() {
    assert_root("power cuts");
    const CHILD: &str = env!("CARGO_BIN_EXE_crashchild");
    let windows = [
        ("apply", fp::APPLY_AFTER_JOURNAL),
        ("apply", fp::APPLY_AFTER_STAGE),
        ("apply", fp::APPLY_AFTER_SWAP),
        ("apply", fp::APPLY_AFTER_BACKUP),
        ("apply", fp::APPLY_BEFORE_SYNC),
        ("apply", fp::APPLY_BEFORE_COMMIT),
        ("apply", fp::APPLY_AFTER_COMMIT),
        ("rollback", fp::ROLLBACK_AFTER_JOURNAL),
        ("rollback", fp::UNDO_AFTER_SWAP),
        ("rollback", fp::ROLLBACK_BEFORE_COMMIT),
    ];
    let mut cuts = 0;
    for kind in ["xfs", "ext4", "btrfs"] {
        // The control: a cut loses what was written but not made durable.
        let fs = LoopFs::new(kind);
        rustix::fs::sync();
        std::fs::write(fs.path().join("not-durable"), b"x").unwrap();
        fs.power_cut();
        assert!(
            !fs.path().join("not-durable").exists(),
            "{kind}: the power cut kept an unsynced file; it would prove nothing"
        );
        drop(fs);
        for (op, point) in windows {
            let fs = LoopFs::new(kind);
            let f = Fixture::new_in(fs.path());
            let before = f.tree();
            // The engine holds descriptors in the mount: it goes before the cut.
            let run = (op == "rollback").then(|| {
                let (sy, _) = engine_for(f.path(), Policy::dev());
                let plan = sy.plan(&standard_input()).unwrap();
                sy.apply(&plan, ApplyMode::Commit).unwrap().run_id
            });
            let applied = f.tree();
            // What the rollback undoes must itself survive the cut.
            rustix::fs::sync();
            let end = run_child(
                CHILD.as_ref(),
                &Scenario::kill(
                    f.path(),
                    op,
                    point,
                    run.map(|r| r.to_string()),
                    standard_links(),
                ),
            );
            let ctx = format!("{kind}: power cut at {point} ({op})");
            assert_eq!(end, ChildEnd::Killed, "{ctx}: window never reached");
            fs.power_cut();
            cuts += 1;
            let (sy, _) = engine_for(f.path(), Policy::dev());
            sy.recover(ApplyMode::Commit)
                .unwrap_or_else(|e| panic!("{ctx}: recover: {e}"));
            let now = f.tree();
            match (op, now == before) {
                ("apply", _) if point == fp::APPLY_AFTER_COMMIT => assert_applied(&before, &now),
                ("apply", true) | ("rollback", true) => {}
                ("apply", false) => assert_applied(&before, &now),
                ("rollback", false) => assert_eq!(now, applied, "{ctx}: neither tree"),
                _ => unreachable!(),
            }
            assert!(!sy.status().unwrap().pending_journal, "{ctx}: journal left");
            drop(f);
        }
    }
    eprintln!("{cuts} power cuts on xfs, ext4 and btrfs, each recovered to a whole tree");
}
