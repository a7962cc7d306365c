//! End-to-end engine behaviour: apply, rollback, idempotence, litter, integrity.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use switchyard::{ApplyMode, ErrorId, RunSelector};
use switchyard_testkit::{sp, standard_input, Fixture};

#[test]
fn apply_then_rollback_restores_identical_tree_r2_r6() {
    let f = Fixture::new();
    let before = f.tree();
    let (sy, _) = f.engine();
    let plan = sy.plan(&standard_input()).unwrap();
    let rep = sy.apply(&plan, ApplyMode::Commit).unwrap();
    assert!(rep.changed);
    assert_eq!(
        std::fs::read_link(f.host("usr/bin/ls")).unwrap().to_str(),
        Some("../lib/alt/ls")
    );
    assert_eq!(
        std::fs::read_link(f.host("usr/bin/new")).unwrap().to_str(),
        Some("../lib/alt/new")
    );
    let names = f.tree().names_in("usr/bin");
    let new: Vec<_> = names
        .iter()
        .filter(|n| !before.names_in("usr/bin").contains(n))
        .collect();
    assert_eq!(
        new,
        [".switchyard", "new"],
        "R6: only the backup store is new"
    );
    assert_eq!(
        f.tree().names_in("usr/bin/.switchyard"),
        ["cat.1.bak", "ls.1.bak"],
        "S8: one backup per replaced target, in the store"
    );
    let back = sy
        .rollback(RunSelector::Id(rep.run_id), ApplyMode::Commit)
        .unwrap();
    assert!(back.changed && !back.idempotent_noop);
    assert_eq!(f.tree(), before, "R2/R6: identical tree after rollback");
    let again = sy
        .rollback(RunSelector::Id(rep.run_id), ApplyMode::Commit)
        .unwrap();
    assert!(again.idempotent_noop && !again.changed, "R3");
    assert_eq!(f.tree(), before);
}

#[test]
fn applying_twice_changes_nothing_the_second_time_d3() {
    let f = Fixture::new();
    let (sy, _) = f.engine();
    let plan = sy.plan(&standard_input()).unwrap();
    assert!(sy.apply(&plan, ApplyMode::Commit).unwrap().changed);
    let mid = f.tree();
    let second = sy.apply(&plan, ApplyMode::Commit).unwrap();
    assert!(!second.changed);
    assert_eq!(f.tree(), mid);
    // R7: rolling back the run that changed nothing changes nothing.
    let r = sy
        .rollback(RunSelector::Id(second.run_id), ApplyMode::Commit)
        .unwrap();
    assert!(r.idempotent_noop);
    assert_eq!(f.tree(), mid);
}

#[test]
fn dry_run_changes_nothing_d2() {
    let f = Fixture::new();
    let before = switchyard_testkit::Tree::capture(f.path(), &[]);
    let (sy, _) = f.engine();
    let plan = sy.plan(&standard_input()).unwrap();
    let rep = sy.apply(&plan, ApplyMode::DryRun).unwrap();
    assert!(rep.dry_run && rep.changed);
    assert_eq!(
        switchyard_testkit::Tree::capture(f.path(), &[]),
        before,
        "not even a state dir"
    );
}

#[test]
fn tampered_backup_is_refused_with_nothing_changed_s6() {
    let f = Fixture::new();
    let (sy, _) = f.engine(); // dev keeps require_sidecar_integrity from production
    let plan = sy.plan(&standard_input()).unwrap();
    let rep = sy.apply(&plan, ApplyMode::Commit).unwrap();
    std::fs::write(f.host("usr/bin/.switchyard/ls.1.bak"), b"evil").unwrap();
    let mid = f.tree();
    let err = sy
        .rollback(RunSelector::Id(rep.run_id), ApplyMode::Commit)
        .unwrap_err();
    assert_eq!(err.id(), ErrorId::RestoreFailed, "{err}");
    assert!(err.message().contains("tampered"), "{err}");
    assert_eq!(f.tree(), mid, "nothing changed");
}

#[test]
fn preflight_stops_outside_allow_roots_and_symlinked_parents_s1_s7() {
    let f = Fixture::new();
    std::os::unix::fs::symlink("usr/bin", f.host("bin")).unwrap();
    f.write("etc/passwd", b"root", 0o644);
    let (sy, _) = f.engine();
    let input = switchyard::PlanInput::default()
        .link(sp("etc/passwd"), sp("usr/lib/alt/ls"))
        .link(sp("bin/ls"), sp("usr/lib/alt/ls"));
    let plan = sy.plan(&input).unwrap();
    let pre = sy.preflight(&plan).unwrap();
    assert_eq!(pre.stops().count(), 2);
    assert!(
        pre.rows[0].notes.iter().any(|n| n.contains("symlink")),
        "{:?}",
        pre.rows[0]
    );
    assert!(
        pre.rows[1].notes.iter().any(|n| n.contains("allow_roots")),
        "{:?}",
        pre.rows[1]
    );
    let before = f.tree();
    let err = sy.apply(&plan, ApplyMode::Commit).unwrap_err();
    assert_eq!(err.id(), ErrorId::Policy);
    assert_eq!(f.tree(), before);
}

#[test]
fn restore_puts_back_the_latest_backup_and_is_reversible() {
    let f = Fixture::new();
    let before = f.tree();
    let (sy, _) = f.engine();
    sy.apply(&sy.plan(&standard_input()).unwrap(), ApplyMode::Commit)
        .unwrap();
    let applied = f.tree();
    let restore = sy
        .plan(&switchyard::PlanInput::default().restore(sp("usr/bin/ls")))
        .unwrap();
    let rep = sy.apply(&restore, ApplyMode::Commit).unwrap();
    assert!(rep.changed);
    assert_eq!(
        f.tree().0["usr/bin/ls"],
        before.0["usr/bin/ls"],
        "original bytes, mode, times, xattrs"
    );
    // D3: restoring again is a no-op.
    assert!(!sy.apply(&restore, ApplyMode::Commit).unwrap().changed);
    sy.rollback(RunSelector::Id(rep.run_id), ApplyMode::Commit)
        .unwrap();
    assert_eq!(f.tree(), applied);
}

/// A durable write whose final rename fails leaves no `.<name>.tmp` behind (A4): here
/// `runs/LATEST` is a non-empty directory, so renaming the new pointer over it fails
/// and the commit is undone.
#[test]
fn failed_rename_of_a_durable_write_leaves_no_temp_file_a4() {
    let f = Fixture::new();
    let before = f.tree();
    let runs = f.host(switchyard_testkit::STATE).join("runs");
    std::fs::create_dir_all(runs.join("LATEST/blocker")).unwrap();
    let (sy, _) = f.engine();
    let err = sy
        .apply(&sy.plan(&standard_input()).unwrap(), ApplyMode::Commit)
        .unwrap_err();
    assert!(err.message().contains("runs/LATEST"), "{err}");
    assert_eq!(f.tree(), before, "the commit was undone");
    let litter: Vec<String> = std::fs::read_dir(&runs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(litter.is_empty(), "temp files left in runs/: {litter:?}");
}
