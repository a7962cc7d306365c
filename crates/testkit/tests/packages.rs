//! Living beside dpkg (M1–M5, S4, S8, T7), against the real tools: packages built with
//! `dpkg-deb`, installed and upgraded by `dpkg --root` into a temp root, checked with
//! `dpkg-divert --list`, `dpkg -S`, `dpkg --verify` and `dpkg --audit`.
//!
//! Root-only: ignored in a non-root build, and failing loudly in CI (T3) when a tool
//! is missing.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use switchyard::failpoints as fp;
use switchyard::{
    ApplyMode, DriftState, ErrorId, HealthVerdict, PlanInput, Policy, RestoreResult, RunSelector,
    Switchyard,
};
use switchyard_testkit::{
    assert_root, engine_for, get_cap, run_as_nobody, run_child, set_cap, sp, ChildEnd, Deb,
    DpkgRoot, Scenario, Tree,
};

const PKG: &str = "sy-tools";
const CHILD: &str = env!("CARGO_BIN_EXE_crashchild");
const LOCKHOLDER: &str = env!("CARGO_BIN_EXE_dpkglockholder");

fn body(name: &str, v: u32) -> Vec<u8> {
    format!("#!/bin/sh\necho {name} v{v}\n").into_bytes()
}

/// Version `v`: `usr/bin/alpha` (0755), `usr/bin/beta` (setuid root, 04755) and,
/// when `merged`, `bin/gamma` (shipped under `/bin`, as bookworm's coreutils ships
/// `/bin/ls`).
fn pkg(v: u32, merged: bool) -> Deb {
    let mut b = Deb::builder(PKG, &format!("{v}.0"))
        .file("usr/bin/alpha", &body("alpha", v), 0o755)
        .file("usr/bin/beta", &body("beta", v), 0o4755);
    if merged {
        b = b.file("bin/gamma", &body("gamma", v), 0o755);
    }
    b.build()
}

/// dpkg's `lock-frontend` of a root held by another process (`dpkglockholder`, an
/// fcntl write lock, as apt holds it) until released.
struct HeldLock(std::process::Child);

impl HeldLock {
    fn take(r: &DpkgRoot) -> HeldLock {
        let mut child = Command::new(LOCKHOLDER)
            .arg(r.host("var/lib/dpkg/lock-frontend"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "locked");
        HeldLock(child)
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    fn release(mut self) {
        self.0.stdin.take().unwrap().write_all(b"\n").unwrap();
        self.0.wait().unwrap();
    }
}

/// A root with version 1 installed, `alpha` given `cap_net_raw+ep`, and the
/// alternatives in `usr/lib/alt`.
fn root_with_v1(merged: bool) -> DpkgRoot {
    let r = if merged {
        DpkgRoot::merged_usr()
    } else {
        DpkgRoot::new()
    };
    r.install(&pkg(1, merged));
    set_cap(&r.host("usr/bin/alpha"), "cap_net_raw+ep");
    for n in ["alpha", "beta", "gamma", "unowned"] {
        let p = r.host(&format!("usr/lib/alt/{n}"));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, format!("#!/bin/sh\necho alt-{n}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    for d in ["usr/lib", "usr/lib/alt"] {
        std::fs::set_permissions(r.host(d), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    r
}

fn names(merged: bool) -> Vec<&'static str> {
    if merged {
        vec!["alpha", "beta", "gamma"]
    } else {
        vec!["alpha", "beta"]
    }
}

fn links(merged: bool) -> PlanInput {
    names(merged)
        .into_iter()
        .fold(PlanInput::default(), |i, n| {
            i.link(sp(&format!("usr/bin/{n}")), sp(&format!("usr/lib/alt/{n}")))
        })
}

/// The tree outside the state directory and the package database.
fn tree(r: &DpkgRoot) -> Tree {
    Tree::capture(r.path(), &["var"])
}

fn engine(r: &DpkgRoot) -> Switchyard {
    engine_for(r.path(), Policy::dev()).0
}

fn ours(r: &DpkgRoot) -> Vec<String> {
    r.divert_list()
        .into_iter()
        .filter(|l| l.ends_with(" by switchyard"))
        .collect()
}

/// `dpkg --verify` reports nothing (it exits 0 either way; the output is the verdict).
fn assert_verified(r: &DpkgRoot, when: &str) {
    let v = r.verify();
    assert!(
        v.stdout.trim().is_empty(),
        "{when}: dpkg --verify: {}",
        v.stdout
    );
}

/// After a rollback (M5, R6, M2): each of `names` is version `v`'s file — never an
/// older one — the backup store is gone, no diversion of ours is left, and
/// `dpkg --verify` is clean.
fn assert_back_at(r: &DpkgRoot, names: &[&str], v: u32, when: &str) {
    for n in names {
        assert_eq!(
            std::fs::read(r.host(&format!("usr/bin/{n}"))).unwrap(),
            body(n, v),
            "M5 {when}: version {v} of {n} is back, never an older one"
        );
    }
    assert!(
        !r.host("usr/bin/.switchyard").exists(),
        "R6 {when}: store gone"
    );
    assert!(ours(r).is_empty(), "M2 {when}: diversions gone");
    assert_verified(r, when);
}

fn apply(sy: &Switchyard, input: &PlanInput) -> switchyard::ApplyReport {
    sy.apply(&sy.plan(input).unwrap(), ApplyMode::Commit)
        .unwrap_or_else(|e| panic!("apply: {e}"))
}

/// M2, S8, R2: the swap registers a diversion per target as the package spells it;
/// dpkg's tools agree with the tree; the setuid original cannot be run by nobody;
/// rollback restores mode 4755 and the capability exactly and removes every trace.
fn swap_diverts_and_rollback_restores(merged: bool) {
    let r = root_with_v1(merged);
    let before = tree(&r);
    let cap = get_cap(&r.host("usr/bin/alpha")).expect("alpha has its capability");
    let sy = engine(&r);
    let run = apply(&sy, &links(merged));
    let mut want: Vec<String> = names(merged)
        .iter()
        .map(|n| {
            let spelled = if *n == "gamma" { "/bin" } else { "/usr/bin" };
            format!("diversion of {spelled}/{n} to /usr/bin/.switchyard/{n}.1.bak by switchyard")
        })
        .collect();
    want.sort();
    let mut got = ours(&r);
    got.sort();
    assert_eq!(got, want, "M2: dpkg-divert --list");
    assert_verified(&r, "after apply");
    let s = r.search("/usr/bin/alpha");
    assert!(
        s.stdout.contains("diversion by switchyard"),
        "dpkg -S: {}",
        s.stdout
    );
    let kept = r.host("usr/bin/.switchyard/beta.1.bak");
    assert_eq!(
        run_as_nobody(kept.to_str().unwrap(), &[]).code(),
        126,
        "S8: nobody cannot run the kept setuid original"
    );
    let st = sy.status().unwrap();
    assert!(st.targets.iter().all(|t| t.state == DriftState::InEffect));
    let alpha = st
        .targets
        .iter()
        .find(|t| t.path == "usr/bin/alpha")
        .unwrap();
    assert_eq!(
        (alpha.package.as_deref(), alpha.version.as_deref()),
        (Some(PKG), Some("1.0")),
        "M4/O7: status names the package"
    );
    sy.rollback(RunSelector::Id(run.run_id), ApplyMode::Commit)
        .unwrap();
    assert_eq!(tree(&r), before, "R2/R6: exact tree, store gone");
    assert_eq!(
        get_cap(&r.host("usr/bin/alpha")),
        Some(cap),
        "capability back"
    );
    assert!(ours(&r).is_empty(), "M2: diversions gone");
    assert_verified(&r, "after rollback");
}

#[test]
#[cfg_attr(testkit_not_root, ignore = "needs root: dpkg --root, setcap, setpriv")]
fn swap_diverts_and_rollback_restores_exactly_m2_s8() {
    assert_root("swap_diverts_and_rollback_restores_exactly_m2_s8");
    swap_diverts_and_rollback_restores(false);
}

#[test]
#[cfg_attr(testkit_not_root, ignore = "needs root: dpkg --root, setcap, setpriv")]
fn merged_usr_diverts_the_path_the_package_ships_m1_m2() {
    assert_root("merged_usr_diverts_the_path_the_package_ships_m1_m2");
    swap_diverts_and_rollback_restores(true);
}

/// M2, M5: an upgrade while swapped lands in the backups (the links stay); rollback's
/// dry-run predicts, and its commit restores, version 2's files — never version 1 —
/// with dpkg's tools agreeing and nothing left behind.
fn upgrade_while_swapped(merged: bool) {
    let r = root_with_v1(merged);
    let sy = engine(&r);
    let run = apply(&sy, &links(merged));
    r.install(&pkg(2, merged));
    assert_eq!(r.version_of(PKG), "2.0");
    for n in names(merged) {
        let t = r.host(&format!("usr/bin/{n}"));
        assert_eq!(
            std::fs::read_link(&t).unwrap(),
            Path::new(&format!("../lib/alt/{n}")),
            "M2: the upgrade left our link at {n}"
        );
        assert_eq!(
            std::fs::read(r.host(&format!("usr/bin/.switchyard/{n}.1.bak"))).unwrap(),
            body(n, 2),
            "M2: the upgrade wrote version 2 into the backup of {n}"
        );
    }
    assert_verified(&r, "after the upgrade");
    let dry = sy
        .rollback(RunSelector::Id(run.run_id), ApplyMode::DryRun)
        .unwrap();
    assert!(
        dry.actions
            .iter()
            .all(|a| a.result == RestoreResult::WouldRestorePackageUpdate),
        "M5/R8: the dry-run predicts restoring the updated backups: {:?}",
        dry.actions
    );
    let done = sy
        .rollback(RunSelector::Id(run.run_id), ApplyMode::Commit)
        .unwrap();
    let predicted: Vec<_> = dry.actions.iter().map(|a| a.target.clone()).collect();
    let restored: Vec<_> = done.actions.iter().map(|a| a.target.clone()).collect();
    assert_eq!(predicted, restored, "R8: same targets");
    assert!(done
        .actions
        .iter()
        .all(|a| a.result == RestoreResult::RestoredPackageUpdate));
    let beta = std::fs::symlink_metadata(r.host("usr/bin/beta")).unwrap();
    assert_eq!(beta.permissions().mode() & 0o7777, 0o4755);
    assert_back_at(&r, &names(merged), 2, "after rollback");
}

#[test]
#[cfg_attr(testkit_not_root, ignore = "needs root: dpkg --root")]
fn an_upgrade_while_swapped_lands_in_the_backup_and_rollback_restores_it_m2_m5() {
    assert_root("an_upgrade_while_swapped_lands_in_the_backup_and_rollback_restores_it_m2_m5");
    upgrade_while_swapped(false);
}

#[test]
#[cfg_attr(testkit_not_root, ignore = "needs root: dpkg --root")]
fn merged_usr_upgrade_while_swapped_m1_m2_m5() {
    assert_root("merged_usr_upgrade_while_swapped_m1_m2_m5");
    upgrade_while_swapped(true);
}

/// M4, M5: a target the package replaced without our diversion (someone removed it,
/// then dpkg reinstalled) is `drifted` with its package; doctor fails; rollback leaves
/// the package's file and reports it per target, removing the superseded backup;
/// re-applying instead would keep one backup per target.
#[test]
#[cfg_attr(testkit_not_root, ignore = "needs root: dpkg --root")]
fn a_target_the_package_replaced_is_reported_and_left_as_packaged_m4_m5() {
    assert_root("a_target_the_package_replaced_is_reported_and_left_as_packaged_m4_m5");
    let r = root_with_v1(false);
    let sy = engine(&r);
    let run = apply(&sy, &links(false));
    r.divert(&["--no-rename", "--remove", "/usr/bin/alpha"]);
    r.install(&pkg(2, false));
    assert_eq!(
        std::fs::read(r.host("usr/bin/alpha")).unwrap(),
        body("alpha", 2),
        "without the diversion dpkg overwrote our link"
    );
    let st = sy.status().unwrap();
    let alpha = st
        .targets
        .iter()
        .find(|t| t.path == "usr/bin/alpha")
        .unwrap();
    assert_eq!(alpha.state, DriftState::Drifted);
    assert_eq!(
        (alpha.package.as_deref(), alpha.version.as_deref()),
        (Some(PKG), Some("2.0")),
        "M4: drifted names the package and version that replaced it"
    );
    let h = sy.doctor();
    assert_eq!(h.verdict, HealthVerdict::NeedsAttention);
    assert_ne!(h.exit_code, 0);

    let dry = sy
        .rollback(RunSelector::Id(run.run_id), ApplyMode::DryRun)
        .unwrap();
    let result_of = |rep: &switchyard::RollbackReport, t: &str| {
        rep.actions.iter().find(|a| a.target == t).unwrap().result
    };
    assert_eq!(
        result_of(&dry, "usr/bin/alpha"),
        RestoreResult::WouldKeepPackaged
    );
    let done = sy
        .rollback(RunSelector::Id(run.run_id), ApplyMode::Commit)
        .unwrap();
    assert_eq!(
        result_of(&done, "usr/bin/alpha"),
        RestoreResult::KeptPackaged
    );
    assert_eq!(
        result_of(&done, "usr/bin/beta"),
        RestoreResult::RestoredPackageUpdate
    );
    assert_eq!(
        std::fs::read(r.host("usr/bin/alpha")).unwrap(),
        body("alpha", 2),
        "M5: left as the package put it"
    );
    assert!(!r.host("usr/bin/.switchyard").exists(), "no backup left");
    assert!(ours(&r).is_empty());
    assert_verified(&r, "after rollback");
}

/// M3: dpkg's lock held by another process: `E_LOCKING` naming it, nothing changed.
#[test]
#[cfg_attr(testkit_not_root, ignore = "needs root: dpkg --root")]
fn dpkgs_lock_held_by_another_process_is_named_and_nothing_changes_m3() {
    assert_root("dpkgs_lock_held_by_another_process_is_named_and_nothing_changes_m3");
    let r = root_with_v1(false);
    let mut policy = Policy::dev();
    policy.lock_timeout_ms = 200;
    let (sy, _) = engine_for(r.path(), policy);
    let plan = sy.plan(&links(false)).unwrap();
    let holder = HeldLock::take(&r);
    let before = tree(&r);
    let diversions = std::fs::read(r.host("var/lib/dpkg/diversions")).ok();
    let e = sy.apply(&plan, ApplyMode::Commit).unwrap_err();
    let pid = holder.pid();
    holder.release();
    assert_eq!(e.id(), ErrorId::Locking, "{e}");
    assert!(
        e.message().contains(&format!("dpkglockholder (pid {pid})")),
        "names the holder: {e}"
    );
    assert_eq!(tree(&r), before, "nothing changed");
    assert_eq!(
        std::fs::read(r.host("var/lib/dpkg/diversions")).ok(),
        diversions
    );
    assert!(!sy.status().unwrap().pending_journal);
    // Once it is released, the same apply goes through.
    sy.apply(&plan, ApplyMode::Commit).unwrap();
}

/// M3: a half-configured package makes every package-owned row stop, naming the
/// remedy, before anything changes; S4: with strict_ownership an unowned target stops
/// with E_OWNERSHIP.
#[test]
#[cfg_attr(testkit_not_root, ignore = "needs root: dpkg --root")]
fn an_unsettled_package_and_an_unowned_target_stop_preflight_m3_s4() {
    assert_root("an_unsettled_package_and_an_unowned_target_stop_preflight_m3_s4");
    let r = root_with_v1(false);
    let sy = engine(&r);
    r.set_state(PKG, "half-configured");
    assert!(r.audit().stdout.contains(PKG), "dpkg --audit agrees");
    let before = tree(&r);
    let e = sy
        .apply(&sy.plan(&links(false)).unwrap(), ApplyMode::Commit)
        .unwrap_err();
    assert_eq!(e.id(), ErrorId::Policy, "{e}");
    assert!(e.message().contains("half-configured"), "{e}");
    let rows = sy.preflight(&sy.plan(&links(false)).unwrap()).unwrap();
    assert!(rows
        .rows
        .iter()
        .all(|row| row.notes.iter().any(|n| n.contains("dpkg --configure -a"))));
    assert_eq!(tree(&r), before);

    let r2 = root_with_v1(false);
    std::fs::write(r2.host("usr/bin/unowned"), b"#!/bin/sh\n").unwrap();
    let mut strict = Policy::dev();
    strict.strict_ownership = true;
    let (sy2, _) = engine_for(r2.path(), strict);
    let input = links(false).link(sp("usr/bin/unowned"), sp("usr/lib/alt/unowned"));
    let e = sy2
        .apply(&sy2.plan(&input).unwrap(), ApplyMode::Commit)
        .unwrap_err();
    assert_eq!((e.id(), e.exit_code()), (ErrorId::Policy, 10), "{e}");
    assert_eq!(e.summary_error_ids(), [ErrorId::Ownership, ErrorId::Policy]);
    assert!(e.message().contains("no package owns this target"), "{e}");
    // Owned targets alone pass under the same policy.
    apply(&sy2, &links(false));
}

/// M2, A3: SIGKILL at the new failpoints (after the diversions are written; before an
/// undo removes them) and at the swap and undo windows: after recovery the tree and
/// `var/lib/dpkg/diversions` agree — either pre-plan (no diversion of ours) or fully
/// applied (every diversion) — and dpkg --verify is clean.
#[test]
#[cfg_attr(testkit_not_root, ignore = "needs root: dpkg --root")]
fn sigkill_around_the_diversions_leaves_tree_and_database_agreeing_m2_a3() {
    assert_root("sigkill_around_the_diversions_leaves_tree_and_database_agreeing_m2_a3");
    let cases = [
        ("apply", fp::APPLY_AFTER_JOURNAL),
        // The package failpoints (fp::PACKAGE) are covered here, and only here.
        ("apply", fp::APPLY_AFTER_DIVERT),
        ("apply", fp::APPLY_AFTER_SWAP),
        ("apply", fp::APPLY_BEFORE_COMMIT),
        ("apply", fp::APPLY_AFTER_COMMIT),
        ("rollback", fp::UNDO_AFTER_SWAP),
        ("rollback", fp::UNDO_BEFORE_UNDIVERT),
        ("rollback", fp::ROLLBACK_BEFORE_COMMIT),
    ];
    let linked: Vec<(String, String)> = names(false)
        .iter()
        .map(|n| (format!("usr/bin/{n}"), format!("usr/lib/alt/{n}")))
        .collect();
    for (op, point) in cases {
        let r = root_with_v1(false);
        let before = tree(&r);
        let sy = engine(&r);
        let run = (op == "rollback").then(|| apply(&sy, &links(false)).run_id);
        let applied = run.map(|_| tree(&r));
        let end = run_child(
            CHILD.as_ref(),
            &Scenario::kill(
                r.path(),
                op,
                point,
                run.map(|r| r.to_string()),
                linked.clone(),
            ),
        );
        assert_eq!(end, ChildEnd::Killed, "{op} at {point}: never reached");
        sy.recover(ApplyMode::Commit)
            .unwrap_or_else(|e| panic!("{op} at {point}: recover: {e}"));
        let now = tree(&r);
        let diverted = ours(&r).len();
        if now == before {
            assert_eq!(
                diverted, 0,
                "{op} at {point}: pre-plan tree, our diversions left"
            );
        } else {
            if let Some(applied) = &applied {
                assert_eq!(
                    &now, applied,
                    "{op} at {point}: neither pre-plan nor applied"
                );
            }
            for n in names(false) {
                assert_eq!(
                    std::fs::read_link(r.host(&format!("usr/bin/{n}"))).ok(),
                    Some(format!("../lib/alt/{n}").into()),
                    "{op} at {point}: neither pre-plan nor applied"
                );
                assert_eq!(
                    std::fs::read(r.host(&format!("usr/bin/.switchyard/{n}.1.bak"))).unwrap(),
                    body(n, 1)
                );
            }
            assert_eq!(
                diverted, 2,
                "{op} at {point}: applied tree, diversions missing"
            );
        }
        assert_verified(&r, &format!("{op} at {point}"));
    }
}

/// T1: every package failpoint has its crash case above (the plain suites skip them).
#[test]
fn every_package_failpoint_is_crash_tested_t1() {
    let src = include_str!("packages.rs");
    for f in fp::PACKAGE {
        let name = match *f {
            fp::APPLY_AFTER_DIVERT => "fp::APPLY_AFTER_DIVERT",
            fp::UNDO_BEFORE_UNDIVERT => "fp::UNDO_BEFORE_UNDIVERT",
            other => panic!("{other}: add it to the crash cases of this file"),
        };
        assert!(
            src.contains(&format!("\", {name})")),
            "{f} has no crash case"
        );
    }
}

/// M4, P1: re-applying a target the package replaced (its diversion removed, then an
/// upgrade) puts it back in effect with one backup — the package's current file — and
/// retires the superseded one; rolling back both runs, newest first, ends with the
/// package's version 2 everywhere and nothing of Switchyard's left.
#[test]
#[cfg_attr(testkit_not_root, ignore = "needs root: dpkg --root")]
fn reapplying_a_drifted_target_keeps_one_backup_m4() {
    assert_root("reapplying_a_drifted_target_keeps_one_backup_m4");
    let r = root_with_v1(false);
    let sy = engine(&r);
    let first = apply(&sy, &links(false));
    r.divert(&["--no-rename", "--remove", "/usr/bin/alpha"]);
    r.install(&pkg(2, false));
    let second = apply(&sy, &links(false));
    let store = Tree::capture(&r.host("usr/bin/.switchyard"), &[]);
    let mut kept: Vec<&String> = store.0.keys().filter(|k| !k.is_empty()).collect();
    kept.sort();
    assert_eq!(
        kept,
        ["alpha.2.bak", "beta.1.bak"],
        "M4: one backup per target"
    );
    assert_eq!(
        std::fs::read(r.host("usr/bin/.switchyard/alpha.2.bak")).unwrap(),
        body("alpha", 2)
    );
    let st = sy.status().unwrap();
    assert!(st.targets.iter().all(|t| t.state == DriftState::InEffect));
    assert!(
        st.targets.iter().all(|t| t.backup_current == Some(true)),
        "M4: every backup is current with the package: {:?}",
        st.targets
    );
    assert_eq!(ours(&r).len(), 2, "both paths diverted again");
    assert_verified(&r, "after re-applying");
    sy.rollback(RunSelector::Id(second.run_id), ApplyMode::Commit)
        .unwrap();
    sy.rollback(RunSelector::Id(first.run_id), ApplyMode::Commit)
        .unwrap();
    assert_back_at(&r, &names(false), 2, "after both rollbacks");
}

/// M2, M5 with restores: a `[[restore]]` of a package-owned target puts the kept
/// original back (its diversion goes with the backup it pointed to), and rolling that
/// restore back puts our link back — the restored package file is the restore's own
/// node, not a package replacement.
#[test]
#[cfg_attr(testkit_not_root, ignore = "needs root: dpkg --root")]
fn a_restore_and_its_rollback_keep_dpkg_in_step_m2_m5() {
    assert_root("a_restore_and_its_rollback_keep_dpkg_in_step_m2_m5");
    let r = root_with_v1(false);
    let sy = engine(&r);
    apply(&sy, &links(false));
    let swapped = tree(&r);
    let restore = apply(&sy, &PlanInput::default().restore(sp("usr/bin/alpha")));
    assert_eq!(
        std::fs::read(r.host("usr/bin/alpha")).unwrap(),
        body("alpha", 1)
    );
    assert_verified(&r, "after the restore");
    let back = sy
        .rollback(RunSelector::Id(restore.run_id), ApplyMode::Commit)
        .unwrap();
    assert!(
        back.actions
            .iter()
            .all(|a| a.result == RestoreResult::Restored),
        "{:?}",
        back.actions
    );
    assert_eq!(
        tree(&r),
        swapped,
        "the link is back, the original kept again"
    );
    assert_eq!(ours(&r).len(), 2);
    assert_verified(&r, "after rolling the restore back");
}

/// Version `v` of `PKG` with only `beta` (it drops `alpha`, as an upgrade that moves
/// a program to another package does).
fn pkg_without_alpha(v: u32) -> Deb {
    Deb::builder(PKG, &format!("{v}.0"))
        .file("usr/bin/beta", &body("beta", v), 0o4755)
        .build()
}

/// The dry-run's word for a commit's result (R8).
fn predicted(r: RestoreResult) -> RestoreResult {
    match r {
        RestoreResult::Restored => RestoreResult::WouldRestore,
        RestoreResult::RestoredPackageUpdate => RestoreResult::WouldRestorePackageUpdate,
        RestoreResult::KeptPackaged => RestoreResult::WouldKeepPackaged,
        RestoreResult::Refused => RestoreResult::WouldRefuse,
        RestoreResult::RemovedWithPackage => RestoreResult::WouldRemoveWithPackage,
        other => other,
    }
}

/// Rolls back `run` (dry-run, then commit), expecting the dry-run to predict the
/// commit per target (R8) and the commit to finish: nothing pending, no diversion of
/// ours, no store, `dpkg --verify` clean. Returns the commit's results.
fn rollback_settles(
    r: &DpkgRoot,
    sy: &Switchyard,
    run: &switchyard::ApplyReport,
    when: &str,
) -> Vec<(String, RestoreResult)> {
    let dry = sy
        .rollback(RunSelector::Id(run.run_id), ApplyMode::DryRun)
        .unwrap_or_else(|e| panic!("{when}: dry-run: {e}"));
    let done = sy
        .rollback(RunSelector::Id(run.run_id), ApplyMode::Commit)
        .unwrap_or_else(|e| panic!("{when}: R8: the rollback cannot finish: {e}"));
    let got: Vec<_> = done
        .actions
        .iter()
        .map(|a| (a.target.clone(), a.result))
        .collect();
    let want: Vec<_> = dry
        .actions
        .iter()
        .map(|a| (a.target.clone(), a.result))
        .collect();
    let as_dry: Vec<_> = got
        .iter()
        .map(|(t, r)| (t.clone(), predicted(*r)))
        .collect();
    assert_eq!(want, as_dry, "{when}: R8: the dry-run predicts the commit");
    assert!(!sy.status().unwrap().pending_journal, "{when}: pending");
    assert!(ours(r).is_empty(), "{when}: M2: {:?}", ours(r));
    assert!(!r.host("usr/bin/.switchyard").exists(), "{when}: R6");
    assert_verified(r, when);
    got
}

/// M5, R8: an upgrade that drops a swapped file from the package removes it from
/// where dpkg diverted it — our backup. Rollback must still finish (not stay pending
/// forever, blocking every later command): the package no longer ships the path, so
/// the target ends as the package left it, absent.
#[test]
#[cfg_attr(testkit_not_root, ignore = "needs root: dpkg --root")]
fn an_upgrade_dropping_a_swapped_file_then_rollback_finishes_m5_r8() {
    assert_root("an_upgrade_dropping_a_swapped_file_then_rollback_finishes_m5_r8");
    let r = root_with_v1(false);
    let sy = engine(&r);
    let run = apply(&sy, &links(false));
    r.install(&pkg_without_alpha(2));
    assert!(
        !r.host("usr/bin/.switchyard/alpha.1.bak").exists(),
        "dpkg removed the dropped file where it diverted it: our backup"
    );
    rollback_settles(&r, &sy, &run, "after the upgrade dropped alpha");
    assert!(
        std::fs::symlink_metadata(r.host("usr/bin/alpha")).is_err(),
        "M5: alpha is gone, as the package left it"
    );
    assert_eq!(
        std::fs::read(r.host("usr/bin/beta")).unwrap(),
        body("beta", 2)
    );
    apply(&sy, &links(false));
}

/// M5, R8: `dpkg --remove` (and `--purge`) of the package while swapped removes the
/// backups (dpkg removes a diverted file at its diverted name). Rollback must finish.
#[test]
#[cfg_attr(testkit_not_root, ignore = "needs root: dpkg --root")]
fn removing_the_package_while_swapped_then_rollback_finishes_m5_r8() {
    assert_root("removing_the_package_while_swapped_then_rollback_finishes_m5_r8");
    for purge in [false, true] {
        let r = root_with_v1(false);
        let sy = engine(&r);
        let run = apply(&sy, &links(false));
        r.remove(PKG, purge);
        assert!(!r.host("usr/bin/.switchyard/alpha.1.bak").exists());
        rollback_settles(&r, &sy, &run, &format!("after dpkg purge={purge}"));
        for n in names(false) {
            assert!(
                std::fs::symlink_metadata(r.host(&format!("usr/bin/{n}"))).is_err(),
                "purge={purge}: {n} is gone with its package"
            );
        }
    }
}

/// A package shipping `usr/bin/delta` as a symlink (to `delta.vN`, as packages ship
/// `awk -> /etc/alternatives/awk` or `python3 -> python3.11`).
fn pkg_with_symlink(v: u32) -> Deb {
    Deb::builder("sy-links", &format!("{v}.0"))
        .file(&format!("usr/bin/delta.v{v}"), &body("delta", v), 0o755)
        .symlink("usr/bin/delta", &format!("delta.v{v}"))
        .build()
}

/// M2, M5: a package-owned symlink target (dpkg records no MD5 for a symlink) that an
/// upgrade rewrote through the diversion is restored as the package now ships it, and
/// the rollback finishes.
#[test]
#[cfg_attr(testkit_not_root, ignore = "needs root: dpkg --root")]
fn a_packaged_symlink_target_upgraded_while_swapped_rolls_back_m2_m5() {
    assert_root("a_packaged_symlink_target_upgraded_while_swapped_rolls_back_m2_m5");
    let r = root_with_v1(false);
    r.install(&pkg_with_symlink(1));
    let sy = engine(&r);
    let input = PlanInput::default().link(sp("usr/bin/delta"), sp("usr/lib/alt/alpha"));
    let run = apply(&sy, &input);
    assert_eq!(ours(&r).len(), 1);
    assert_verified(&r, "after apply");
    r.install(&pkg_with_symlink(2));
    assert_eq!(
        std::fs::read_link(r.host("usr/bin/.switchyard/delta.1.bak")).unwrap(),
        Path::new("delta.v2"),
        "dpkg wrote version 2's link into the backup"
    );
    rollback_settles(&r, &sy, &run, "after the symlink's upgrade");
    assert_eq!(
        std::fs::read_link(r.host("usr/bin/delta")).unwrap(),
        Path::new("delta.v2"),
        "M5: the package's current link, never version 1's"
    );
}

/// M2: rolling back a `[[restore]]` of a package-owned target after the package
/// replaced the restored file (no diversion any more, so dpkg wrote the target) keeps
/// the package's file — and must not register a diversion to a backup that no longer
/// exists: dpkg would then put the next upgrade into the store, leaving the target
/// stale (and `dpkg --verify` reports the path missing meanwhile).
#[test]
#[cfg_attr(testkit_not_root, ignore = "needs root: dpkg --root")]
fn rolling_back_a_restore_the_package_replaced_diverts_nothing_m2_m5() {
    assert_root("rolling_back_a_restore_the_package_replaced_diverts_nothing_m2_m5");
    let r = root_with_v1(false);
    let sy = engine(&r);
    let first = apply(&sy, &links(false));
    let restore = apply(&sy, &PlanInput::default().restore(sp("usr/bin/alpha")));
    r.install(&pkg(2, false));
    assert_eq!(
        std::fs::read(r.host("usr/bin/alpha")).unwrap(),
        body("alpha", 2)
    );
    let back = sy
        .rollback(RunSelector::Id(restore.run_id), ApplyMode::Commit)
        .unwrap();
    assert_eq!(back.actions[0].result, RestoreResult::KeptPackaged);
    assert_eq!(
        ours(&r),
        ["diversion of /usr/bin/beta to /usr/bin/.switchyard/beta.1.bak by switchyard"],
        "M2: only beta (still swapped) is diverted"
    );
    assert_verified(&r, "after rolling back the restore");
    r.install(&pkg(3, false));
    assert_eq!(
        std::fs::read(r.host("usr/bin/alpha")).unwrap(),
        body("alpha", 3),
        "the next upgrade reaches alpha"
    );
    rollback_settles(&r, &sy, &first, "after the next upgrade");
}

/// M2: linking an already swapped package-owned target to another source keeps dpkg's
/// diversion on the backup that holds the package's file (not on the new backup,
/// which holds our own older link); rolling back the second run leaves the first
/// run's diversion in place, and an upgrade still lands in the package's backup.
#[test]
#[cfg_attr(testkit_not_root, ignore = "needs root: dpkg --root")]
fn relinking_a_swapped_target_keeps_the_diversion_on_the_packaged_file_m2() {
    assert_root("relinking_a_swapped_target_keeps_the_diversion_on_the_packaged_file_m2");
    let r = root_with_v1(false);
    let sy = engine(&r);
    let first = apply(&sy, &links(false));
    let second = apply(
        &sy,
        &PlanInput::default().link(sp("usr/bin/alpha"), sp("usr/lib/alt/gamma")),
    );
    let want = [
        "diversion of /usr/bin/alpha to /usr/bin/.switchyard/alpha.1.bak by switchyard",
        "diversion of /usr/bin/beta to /usr/bin/.switchyard/beta.1.bak by switchyard",
    ];
    assert_eq!(ours(&r), want, "M2: after the second apply");
    assert_verified(&r, "after the second apply");
    sy.rollback(RunSelector::Id(second.run_id), ApplyMode::Commit)
        .unwrap();
    assert_eq!(ours(&r), want, "M2: the first run is still in effect");
    assert_verified(&r, "after rolling back the second run");
    r.install(&pkg(2, false));
    assert_eq!(
        std::fs::read_link(r.host("usr/bin/alpha")).unwrap(),
        Path::new("../lib/alt/alpha"),
        "the first run's link survives the upgrade"
    );
    rollback_settles(&r, &sy, &first, "after the upgrade");
    assert_eq!(
        std::fs::read(r.host("usr/bin/alpha")).unwrap(),
        body("alpha", 2)
    );
}

/// A3, M2, M5: the package manager runs between a crash and the recovery (unattended
/// upgrades on the next boot, before anyone runs Switchyard). After the upgrade and
/// then `recover`, in every crash window, the tree is either pre-plan as the upgrade
/// left it (version 2 at every target, no diversion of ours) or fully applied (our
/// links, version 2 in every backup, every diversion), and dpkg agrees.
#[test]
#[cfg_attr(testkit_not_root, ignore = "needs root: dpkg --root")]
fn an_upgrade_between_a_crash_and_recovery_is_settled_a3_m2_m5() {
    assert_root("an_upgrade_between_a_crash_and_recovery_is_settled_a3_m2_m5");
    let cases = [
        ("apply", fp::APPLY_AFTER_JOURNAL),
        ("apply", fp::APPLY_AFTER_DIVERT),
        ("apply", fp::APPLY_AFTER_STAGE),
        ("apply", fp::APPLY_AFTER_SWAP),
        ("apply", fp::APPLY_AFTER_BACKUP),
        ("apply", fp::APPLY_BEFORE_SYNC),
        ("apply", fp::APPLY_BEFORE_COMMIT),
        ("apply", fp::APPLY_AFTER_COMMIT),
        ("rollback", fp::ROLLBACK_AFTER_JOURNAL),
        ("rollback", fp::UNDO_AFTER_SWAP),
        ("rollback", fp::UNDO_AFTER_DISPOSE),
        ("rollback", fp::UNDO_BEFORE_UNDIVERT),
        ("rollback", fp::ROLLBACK_BEFORE_COMMIT),
    ];
    let linked: Vec<(String, String)> = names(false)
        .iter()
        .map(|n| (format!("usr/bin/{n}"), format!("usr/lib/alt/{n}")))
        .collect();
    let v2 = pkg(2, false);
    let mut failures = Vec::new();
    for (op, point) in cases {
        let r = root_with_v1(false);
        let sy = engine(&r);
        let run = (op == "rollback").then(|| apply(&sy, &links(false)).run_id);
        let end = run_child(
            CHILD.as_ref(),
            &Scenario::kill(
                r.path(),
                op,
                point,
                run.map(|r| r.to_string()),
                linked.clone(),
            ),
        );
        assert_eq!(end, ChildEnd::Killed, "{op} at {point}: never reached");
        let up = r.try_install(&v2);
        if !up.status.success() {
            failures.push(format!(
                "{op} at {point}: dpkg failed: {}",
                up.stderr.trim()
            ));
            continue;
        }
        if let Err(e) = sy.recover(ApplyMode::Commit) {
            failures.push(format!("{op} at {point}: recover: {e}"));
            continue;
        }
        let v = r.verify();
        if !v.stdout.trim().is_empty() {
            failures.push(format!(
                "{op} at {point}: dpkg --verify: {}",
                v.stdout.trim()
            ));
        }
        let pre = names(false)
            .iter()
            .all(|n| std::fs::read(r.host(&format!("usr/bin/{n}"))).ok() == Some(body(n, 2)))
            && ours(&r).is_empty()
            && !r.host("usr/bin/.switchyard").exists();
        let applied = names(false).iter().all(|n| {
            std::fs::read_link(r.host(&format!("usr/bin/{n}"))).ok()
                == Some(format!("../lib/alt/{n}").into())
                && std::fs::read(r.host(&format!("usr/bin/.switchyard/{n}.1.bak"))).ok()
                    == Some(body(n, 2))
        }) && ours(&r).len() == 2;
        if !(pre || applied) {
            failures.push(format!(
                "{op} at {point}: neither pre-plan nor applied: {:?}, diversions {:?}",
                Tree::capture(&r.host("usr/bin"), &[])
                    .0
                    .keys()
                    .collect::<Vec<_>>(),
                ours(&r)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// M3: dpkg left the package half-installed (killed mid-upgrade) or half-configured:
/// a rollback that would move its files and rewrite the diversions refuses, as apply
/// does, naming the remedy, with nothing changed.
#[test]
#[cfg_attr(testkit_not_root, ignore = "needs root: dpkg --root")]
fn a_rollback_refuses_while_dpkg_is_unsettled_m3() {
    assert_root("a_rollback_refuses_while_dpkg_is_unsettled_m3");
    for state in ["half-installed", "half-configured"] {
        let r = root_with_v1(false);
        let sy = engine(&r);
        let run = apply(&sy, &links(false));
        r.set_state(PKG, state);
        let before = tree(&r);
        let diversions = ours(&r);
        let e = sy
            .rollback(RunSelector::Id(run.run_id), ApplyMode::Commit)
            .expect_err("M3: a rollback while dpkg is unsettled");
        assert!(e.message().contains(state), "{state}: {e}");
        assert_eq!(tree(&r), before, "{state}: nothing changed");
        assert_eq!(ours(&r), diversions);
    }
}

/// M2, M5, O7: another package takes a swapped file over (`Replaces:`): dpkg unpacks
/// it through our diversion into the backup; status names the new owner, and rollback
/// restores the new owner's file, MD5 checked.
#[test]
#[cfg_attr(testkit_not_root, ignore = "needs root: dpkg --root")]
fn a_package_taking_a_swapped_file_over_m2_m5() {
    assert_root("a_package_taking_a_swapped_file_over_m2_m5");
    let r = root_with_v1(false);
    let sy = engine(&r);
    let run = apply(&sy, &links(false));
    let taker = Deb::builder("sy-taker", "1.0")
        .control("Replaces", PKG)
        .file("usr/bin/alpha", &body("taker", 1), 0o755)
        .build();
    r.install(&taker);
    assert_eq!(
        std::fs::read_link(r.host("usr/bin/alpha")).unwrap(),
        Path::new("../lib/alt/alpha")
    );
    assert_verified(&r, "after the takeover");
    let st = sy.status().unwrap();
    let alpha = st
        .targets
        .iter()
        .find(|t| t.path == "usr/bin/alpha")
        .unwrap();
    assert_eq!(alpha.package.as_deref(), Some("sy-taker"));
    assert_eq!(alpha.backup_current, Some(true), "M4");
    let got = rollback_settles(&r, &sy, &run, "after the takeover");
    assert!(got.contains(&("usr/bin/alpha".into(), RestoreResult::RestoredPackageUpdate)));
    assert_eq!(
        std::fs::read(r.host("usr/bin/alpha")).unwrap(),
        body("taker", 1)
    );
}

/// M4: status after upgrades: every backup current with the package after an upgrade
/// through the diversions; doctor healthy.
#[test]
#[cfg_attr(testkit_not_root, ignore = "needs root: dpkg --root")]
fn status_and_doctor_after_an_upgrade_m4() {
    assert_root("status_and_doctor_after_an_upgrade_m4");
    let r = root_with_v1(false);
    let sy = engine(&r);
    apply(&sy, &links(false));
    r.install(&pkg(2, false));
    let st = sy.status().unwrap();
    for t in &st.targets {
        assert_eq!(t.state, DriftState::InEffect, "{t:?}");
        assert_eq!(t.backup_current, Some(true), "{t:?}");
        assert_eq!(t.version.as_deref(), Some("2.0"), "{t:?}");
    }
    let h = sy.doctor();
    assert_eq!(h.exit_code, 0, "{h:?}");
}

/// M1, M2 on merged-/usr: a target listed under both spellings (`/bin/omega` by one
/// package, `/usr/bin/omega` by another — dpkg does not alias them, so it installs
/// both over the same file) stops preflight: with only one spelling diverted, an upgrade of the other
/// package would overwrite the link, and `dpkg --verify` reports the undiverted
/// spelling (`?M5?????? /bin/omega`) right after the apply.
#[test]
#[cfg_attr(testkit_not_root, ignore = "needs root: dpkg --root")]
fn merged_usr_target_listed_under_both_spellings_m1_m2() {
    assert_root("merged_usr_target_listed_under_both_spellings_m1_m2");
    let r = root_with_v1(true);
    let old = |v: u32| {
        Deb::builder("sy-old", &format!("{v}.0"))
            .file("bin/omega", &body("omega-old", v), 0o755)
            .build()
    };
    let new = |v: u32| {
        Deb::builder("sy-new", &format!("{v}.0"))
            .file("usr/bin/omega", &body("omega", v), 0o755)
            .build()
    };
    r.install(&old(1));
    r.install(&new(1));
    let sy = engine(&r);
    let input = PlanInput::default().link(sp("usr/bin/omega"), sp("usr/lib/alt/alpha"));
    let before = tree(&r);
    let e = sy
        .apply(&sy.plan(&input).unwrap(), ApplyMode::Commit)
        .expect_err("M2: only one of two spellings could be diverted");
    assert_eq!(e.id(), ErrorId::Policy, "{e}");
    assert!(
        e.message().contains("/bin/omega") && e.message().contains("/usr/bin/omega"),
        "names both spellings: {e}"
    );
    assert_eq!(tree(&r), before, "nothing changed");
    assert!(ours(&r).is_empty());
}

/// M2: a path dpkg already diverts — a local diversion, or one held by another
/// package — stops preflight (Switchyard cannot divert it again), nothing changed.
#[test]
#[cfg_attr(testkit_not_root, ignore = "needs root: dpkg --root")]
fn a_path_diverted_by_someone_else_stops_preflight_m2() {
    assert_root("a_path_diverted_by_someone_else_stops_preflight_m2");
    for holder in [vec!["--local"], vec!["--package", "sy-other"]] {
        let r = root_with_v1(false);
        let mut args = holder.clone();
        args.extend([
            "--no-rename",
            "--divert",
            "/usr/bin/alpha.theirs",
            "--add",
            "/usr/bin/alpha",
        ]);
        assert!(r.divert(&args).status.success());
        let listed = r.divert_list();
        let before = tree(&r);
        let sy = engine(&r);
        let e = sy
            .apply(&sy.plan(&links(false)).unwrap(), ApplyMode::Commit)
            .expect_err("M2: someone else's diversion");
        assert_eq!(e.id(), ErrorId::Policy, "{holder:?}: {e}");
        assert!(e.message().contains("already diverts"), "{holder:?}: {e}");
        assert_eq!(tree(&r), before, "{holder:?}: nothing changed");
        assert_eq!(r.divert_list(), listed, "{holder:?}: diversions unchanged");
    }
}

/// S9: a run record whose package fields were crafted — a database path naming
/// another path, a diverted-to path outside the target's store — makes rollback
/// divert or undivert nothing but the run's own targets' diversions.
#[test]
#[cfg_attr(testkit_not_root, ignore = "needs root: dpkg --root")]
fn crafted_package_fields_in_a_record_divert_nothing_else_s9() {
    assert_root("crafted_package_fields_in_a_record_divert_nothing_else_s9");
    let r = root_with_v1(false);
    let sy = engine(&r);
    let run = apply(&sy, &links(false));
    assert!(r
        .divert(&[
            "--local",
            "--no-rename",
            "--divert",
            "/usr/bin/zeta.local",
            "--add",
            "/usr/bin/zeta"
        ])
        .status
        .success());
    let rec_path = r.host(&format!(
        "var/lib/switchyard/runs/{}/record.json",
        run.run_id
    ));
    let mut rec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&rec_path).unwrap()).unwrap();
    for a in rec["actions"].as_array_mut().unwrap() {
        let alpha = a["target"] == "usr/bin/alpha";
        let p = &mut a["package"];
        if alpha {
            p["db_path"] = "/usr/bin/zeta".into();
            p["diverted_to"] = "/usr/bin/zeta.local".into();
        } else {
            p["diverted_to"] = "/etc/passwd".into();
        }
    }
    std::fs::write(&rec_path, serde_json::to_vec(&rec).unwrap()).unwrap();
    let _ = sy.rollback(RunSelector::Id(run.run_id), ApplyMode::Commit);
    let all = r.divert_list();
    assert!(
        all.contains(&"local diversion of /usr/bin/zeta to /usr/bin/zeta.local".to_owned()),
        "S9: someone else's diversion kept: {all:?}"
    );
    for d in &all {
        assert!(
            d.starts_with("local diversion of /usr/bin/zeta ")
                || d.starts_with("diversion of /usr/bin/alpha to /usr/bin/.switchyard/")
                || d.starts_with("diversion of /usr/bin/beta to /usr/bin/.switchyard/"),
            "S9: nothing else diverted: {all:?}"
        );
    }
    assert!(!r.host("etc/passwd").exists());
}

/// Holds `lock-frontend` as apt does while `during` runs with the engine waiting for
/// it (started by `op` on another thread), upgrades the package meanwhile as dpkg under
/// apt does (it takes only `lock`, DPKG_FRONTEND_LOCKED), then releases it; returns
/// what `op` returned.
fn while_apt_upgrades<T: Send>(r: &DpkgRoot, deb: &Deb, op: impl FnOnce() -> T + Send) -> T {
    let apt = HeldLock::take(r);
    std::thread::scope(|s| {
        let t = s.spawn(op);
        // The engine reads the database, then waits for lock-frontend.
        std::thread::sleep(std::time::Duration::from_millis(700));
        assert!(!t.is_finished(), "the engine waits for dpkg's lock");
        let up = Command::new("dpkg")
            .args(["--root", r.path().to_str().unwrap(), "--install"])
            .arg(deb.path())
            .env("DPKG_FRONTEND_LOCKED", "1")
            .env("LC_ALL", "C")
            .output()
            .unwrap();
        assert!(
            up.status.success(),
            "{}",
            String::from_utf8_lossy(&up.stderr)
        );
        apt.release();
        t.join().unwrap()
    })
}

/// M1, M3: an apply that waited for dpkg's lock while dpkg upgraded the package does
/// not act on the database it read before waiting: it stops with `E_LOCKING`,
/// nothing changed, and the same apply then goes through.
#[test]
#[cfg_attr(testkit_not_root, ignore = "needs root: dpkg --root")]
fn an_apply_waiting_for_dpkgs_lock_rereads_the_database_m1_m3() {
    assert_root("an_apply_waiting_for_dpkgs_lock_rereads_the_database_m1_m3");
    let r = root_with_v1(false);
    let mut policy = Policy::dev();
    policy.lock_timeout_ms = 20_000;
    let (sy, _) = engine_for(r.path(), policy);
    let plan = sy.plan(&links(false)).unwrap();
    let v2 = pkg(2, false);
    let e = while_apt_upgrades(&r, &v2, || sy.apply(&plan, ApplyMode::Commit))
        .expect_err("M3: the database changed under the wait");
    assert_eq!(e.id(), ErrorId::Locking, "{e}");
    assert!(ours(&r).is_empty());
    assert_eq!(
        std::fs::read(r.host("usr/bin/alpha")).unwrap(),
        body("alpha", 2)
    );
    let run = apply(&sy, &links(false));
    assert!(run
        .actions
        .iter()
        .all(|a| a.provenance.version.as_deref() == Some("2.0")));
}

/// M3, M5: the same for a rollback: it judges what dpkg left, not what it read before
/// waiting — version 2 comes back and the rollback finishes.
#[test]
#[cfg_attr(testkit_not_root, ignore = "needs root: dpkg --root")]
fn a_rollback_waiting_for_dpkgs_lock_judges_what_dpkg_left_m3_m5() {
    assert_root("a_rollback_waiting_for_dpkgs_lock_judges_what_dpkg_left_m3_m5");
    let r = root_with_v1(false);
    let mut policy = Policy::dev();
    policy.lock_timeout_ms = 20_000;
    let (sy, _) = engine_for(r.path(), policy);
    let run = apply(&sy, &links(false));
    let v2 = pkg(2, false);
    let done = while_apt_upgrades(&r, &v2, || {
        sy.rollback(RunSelector::Id(run.run_id), ApplyMode::Commit)
    });
    let done = done.unwrap_or_else(|e| panic!("M5: the rollback judged a stale database: {e}"));
    assert!(done
        .actions
        .iter()
        .all(|a| a.result == RestoreResult::RestoredPackageUpdate));
    assert_back_at(&r, &names(false), 2, "after the rollback");
}

/// M1, M2, M5 with multi-arch: a file shared by the amd64 and i386 instances of a
/// `Multi-Arch: same` package (listed in `pkg:amd64.list` and `pkg:i386.list`) is
/// owned, diverted once, upgraded through the diversion, and rolled back to the
/// upgraded file.
#[test]
#[cfg_attr(testkit_not_root, ignore = "needs root: dpkg --root")]
fn a_multi_arch_shared_file_is_diverted_once_m1_m2_m5() {
    assert_root("a_multi_arch_shared_file_is_diverted_once_m1_m2_m5");
    let r = root_with_v1(false);
    let out = Command::new("dpkg")
        .args([
            "--root",
            r.path().to_str().unwrap(),
            "--add-architecture",
            "i386",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ma = |arch: &str, v: u32| {
        Deb::builder("sy-ma", &format!("{v}.0"))
            .control("Architecture", arch)
            .control("Multi-Arch", "same")
            .file("usr/bin/sy-ma-shared", &body("shared", v), 0o755)
            .build()
    };
    let native = String::from_utf8(
        Command::new("dpkg")
            .arg("--print-architecture")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .to_owned();
    let install = |v: u32| {
        let (a, b) = (ma(&native, v), ma("i386", v));
        let out = Command::new("dpkg")
            .args(["--root", r.path().to_str().unwrap(), "--install"])
            .args([a.path(), b.path()])
            .env("LC_ALL", "C")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    install(1);
    assert!(r
        .host(&format!("var/lib/dpkg/info/sy-ma:{native}.list"))
        .exists());
    assert!(r.host("var/lib/dpkg/info/sy-ma:i386.list").exists());
    let sy = engine(&r);
    let input = PlanInput::default().link(sp("usr/bin/sy-ma-shared"), sp("usr/lib/alt/alpha"));
    let run = apply(&sy, &input);
    assert_eq!(run.actions[0].provenance.pkg.as_deref(), Some("sy-ma"));
    assert_eq!(ours(&r).len(), 1);
    assert_verified(&r, "after apply");
    install(2);
    assert_verified(&r, "after the upgrade");
    let got = rollback_settles(&r, &sy, &run, "after the multi-arch upgrade");
    assert_eq!(got[0].1, RestoreResult::RestoredPackageUpdate);
    assert_eq!(
        std::fs::read(r.host("usr/bin/sy-ma-shared")).unwrap(),
        body("shared", 2)
    );
}

/// M2, M5: a `[[restore]]` of a package-owned target after an upgrade wrote version 2
/// into its backup puts version 2 back (never version 1), removing the diversion;
/// rolling the restore back swaps the link in again with its diversion.
#[test]
#[cfg_attr(testkit_not_root, ignore = "needs root: dpkg --root")]
fn a_restore_after_an_upgrade_puts_the_packages_file_back_m2_m5() {
    assert_root("a_restore_after_an_upgrade_puts_the_packages_file_back_m2_m5");
    let r = root_with_v1(false);
    let sy = engine(&r);
    apply(&sy, &links(false));
    r.install(&pkg(2, false));
    let restore = sy
        .apply(
            &sy.plan(&PlanInput::default().restore(sp("usr/bin/alpha")))
                .unwrap(),
            ApplyMode::Commit,
        )
        .unwrap_or_else(|e| panic!("M5: restoring the package's updated file: {e}"));
    assert_eq!(
        std::fs::read(r.host("usr/bin/alpha")).unwrap(),
        body("alpha", 2)
    );
    assert_eq!(ours(&r).len(), 1, "only beta is diverted");
    assert_verified(&r, "after the restore");
    sy.rollback(RunSelector::Id(restore.run_id), ApplyMode::Commit)
        .unwrap();
    assert_eq!(ours(&r).len(), 2);
    assert_verified(&r, "after rolling the restore back");
}

/// A3, M5: a rollback of targets whose package was removed (removed_with_package),
/// killed in each undo window, is finished by recovery: no link, no backup, no store,
/// no diversion of ours left.
#[test]
#[cfg_attr(testkit_not_root, ignore = "needs root: dpkg --root")]
fn sigkill_while_rolling_back_a_removed_packages_targets_a3_m5() {
    assert_root("sigkill_while_rolling_back_a_removed_packages_targets_a3_m5");
    for point in [
        fp::UNDO_AFTER_SWAP,
        fp::UNDO_AFTER_DISPOSE,
        fp::UNDO_BEFORE_UNDIVERT,
        fp::ROLLBACK_BEFORE_COMMIT,
    ] {
        let r = root_with_v1(false);
        let sy = engine(&r);
        let run = apply(&sy, &links(false));
        r.remove(PKG, false);
        let end = run_child(
            CHILD.as_ref(),
            &Scenario::kill(
                r.path(),
                "rollback",
                point,
                Some(run.run_id.to_string()),
                Vec::new(),
            ),
        );
        if point == fp::UNDO_AFTER_DISPOSE {
            // Removing our link is the undo's only step: there may be no dispose.
            assert!(
                matches!(end, ChildEnd::Killed | ChildEnd::Finished(Ok(_))),
                "{point}: {end:?}"
            );
        } else {
            assert_eq!(end, ChildEnd::Killed, "{point}: never reached");
        }
        sy.recover(ApplyMode::Commit)
            .unwrap_or_else(|e| panic!("{point}: recover: {e}"));
        for n in names(false) {
            assert!(
                std::fs::symlink_metadata(r.host(&format!("usr/bin/{n}"))).is_err(),
                "{point}: {n} left"
            );
        }
        assert!(
            !r.host("usr/bin/.switchyard").exists(),
            "{point}: store left"
        );
        assert!(ours(&r).is_empty(), "{point}: {:?}", ours(&r));
        assert!(!sy.status().unwrap().pending_journal);
    }
}

/// M3: on a root with a package database, even a plan of targets no package owns waits
/// for dpkg's lock — dpkg may be installing a package that ships one right now.
#[test]
#[cfg_attr(testkit_not_root, ignore = "needs root: dpkg --root")]
fn an_unowned_target_on_a_dpkg_root_still_waits_for_dpkgs_lock_m3() {
    assert_root("an_unowned_target_on_a_dpkg_root_still_waits_for_dpkgs_lock_m3");
    let r = root_with_v1(false);
    std::fs::write(r.host("usr/bin/unowned"), b"#!/bin/sh\n").unwrap();
    let mut policy = Policy::dev();
    policy.lock_timeout_ms = 100;
    let (sy, _) = engine_for(r.path(), policy);
    let plan = sy
        .plan(&PlanInput::default().link(sp("usr/bin/unowned"), sp("usr/lib/alt/unowned")))
        .unwrap();
    let holder = HeldLock::take(&r);
    let before = tree(&r);
    let e = sy.apply(&plan, ApplyMode::Commit).unwrap_err();
    holder.release();
    assert_eq!(e.id(), ErrorId::Locking, "{e}");
    assert_eq!(tree(&r), before, "nothing changed");
    sy.apply(&plan, ApplyMode::Commit).unwrap();
}
