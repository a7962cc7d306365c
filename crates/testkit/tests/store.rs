//! The backup store (S8, R2, R6): kept originals — a setuid-root binary, a binary
//! with a file capability — cannot be run or even opened by an unprivileged user
//! while they are kept, and come back exactly; a store someone else made is refused.
//!
//! The root tests run real binaries as uid 65534 with `setpriv` and set real file
//! capabilities with `setcap` (libcap2-bin): nothing is simulated.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use switchyard::{ApplyMode, ErrorId, PlanInput, RunSelector};
use switchyard_testkit::{assert_root, get_cap, run_as_nobody, set_cap, sp, Fixture};

/// Runs `argv` as uid/gid 65534 (the kit's `run_as_nobody`); (success, stdout).
fn as_nobody(argv: &[&str]) -> (bool, String) {
    let out = run_as_nobody(argv[0], &argv[1..]);
    (out.status.success(), out.stdout)
}

fn getcap(p: &Path) -> String {
    get_cap(p).unwrap_or_default()
}

/// S8 + R2: `usr/bin/sudo` (setuid root) and `usr/bin/ping` (cap_net_raw+ep) are
/// swapped; as uid 65534 the kept originals can neither be executed nor opened, by
/// their store path — while before the swap the same user ran `sudo` with euid 0
/// (the control that makes the test mean something). Rollback brings back mode 4755,
/// owner and the capability exactly, and removes the store.
#[test]
#[cfg_attr(
    testkit_not_root,
    ignore = "needs root: setuid-root files, setcap, setpriv to uid 65534"
)]
fn kept_setuid_and_capability_binaries_are_unusable_by_others_s8() {
    assert_root("kept_setuid_and_capability_binaries_are_unusable_by_others_s8");
    let f = Fixture::new();
    // The fixture is a private temp dir: open the path to others, as /usr/bin is.
    std::fs::set_permissions(f.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let id = std::fs::read("/usr/bin/id").expect("coreutils id");
    f.write("usr/bin/sudo", &id, 0o4755);
    f.write("usr/bin/ping", &id, 0o755);
    set_cap(&f.host("usr/bin/ping"), "cap_net_raw+ep");
    let cap_before = getcap(&f.host("usr/bin/ping"));
    assert!(cap_before.contains("cap_net_raw"), "{cap_before}");
    for n in ["sudo", "ping"] {
        f.write(&format!("usr/lib/alt/{n}"), b"#!/bin/sh\necho alt\n", 0o755);
    }
    let sudo = f.host("usr/bin/sudo");
    let (ok, out) = as_nobody(&[sudo.to_str().unwrap(), "-u"]);
    assert!(
        ok && out.trim() == "0",
        "control: as nobody the setuid original runs with euid 0 ({ok}, {out:?})"
    );
    let before = f.tree();

    let (sy, _) = f.engine();
    let input = PlanInput::default()
        .link(sp("usr/bin/sudo"), sp("usr/lib/alt/sudo"))
        .link(sp("usr/bin/ping"), sp("usr/lib/alt/ping"));
    let rep = sy
        .apply(&sy.plan(&input).unwrap(), ApplyMode::Commit)
        .unwrap();
    let store = f.host("usr/bin/.switchyard");
    let md = std::fs::symlink_metadata(&store).unwrap();
    assert!(md.is_dir() && md.permissions().mode() & 0o7777 == 0o700);
    for n in ["sudo", "ping"] {
        let kept = store.join(format!("{n}.1.bak"));
        let k = kept.to_str().unwrap();
        assert!(!as_nobody(&[k, "-u"]).0, "S8: {k} ran as nobody");
        assert!(
            !as_nobody(&["cat", k]).0,
            "S8: {k} could be opened by nobody"
        );
        // /tmp is writable by uid 65534: only the store can stop the link.
        let link = std::env::temp_dir().join(format!("switchyard-s8-{}-{n}", std::process::id()));
        assert!(
            !as_nobody(&["ln", k, link.to_str().unwrap()]).0 && !link.exists(),
            "S8: {k} could be hard-linked by nobody"
        );
    }
    // Root still sees them exactly as they were (R2 holds while kept).
    let kept = std::fs::symlink_metadata(store.join("sudo.1.bak")).unwrap();
    assert_eq!(kept.permissions().mode() & 0o7777, 0o4755);
    assert_eq!(getcap(&store.join("ping.1.bak")), cap_before);

    sy.rollback(RunSelector::Id(rep.run_id), ApplyMode::Commit)
        .unwrap();
    assert_eq!(f.tree(), before, "R2/R6: exact tree, store gone");
    assert_eq!(
        getcap(&f.host("usr/bin/ping")),
        cap_before,
        "capability back"
    );
    let (ok, out) = as_nobody(&[sudo.to_str().unwrap(), "-u"]);
    assert!(
        ok && out.trim() == "0",
        "the original works again as before"
    );
}

/// S8/S9: a `.switchyard` beside the targets that Switchyard did not make — open to
/// others, or a symlink — is refused before anything changes, with the remediation.
#[test]
fn a_store_someone_else_made_is_refused_s8() {
    let f = Fixture::new();
    let (sy, _) = f.engine();
    let plan = sy
        .plan(&PlanInput::default().link(sp("usr/bin/ls"), sp("usr/lib/alt/ls")))
        .unwrap();
    let store = f.host("usr/bin/.switchyard");
    std::fs::create_dir(&store).unwrap();
    std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o777)).unwrap();
    let before = f.tree();
    let e = sy.apply(&plan, ApplyMode::Commit).unwrap_err();
    assert_eq!(e.id(), ErrorId::Policy, "{e}");
    assert!(e.message().contains("0777"), "{e}");
    assert!(e.remediation().unwrap().contains("0700"), "{e:?}");
    assert_eq!(f.tree(), before, "nothing changed");

    std::fs::remove_dir(&store).unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(elsewhere.path(), &store).unwrap();
    let before = f.tree();
    let e = sy.apply(&plan, ApplyMode::Commit).unwrap_err();
    assert_eq!(e.id(), ErrorId::Policy, "{e}");
    assert!(e.message().contains("not a directory"), "{e}");
    assert_eq!(f.tree(), before, "nothing changed");
    assert_eq!(
        std::fs::read_dir(elsewhere.path()).unwrap().count(),
        0,
        "nothing written through the symlink"
    );
}

/// F1: a backup store that is another filesystem (something mounted on
/// `usr/bin/.switchyard`, even a private 0700 one) would make the swap's renames cross
/// filesystems: it is refused with `E_EXDEV` (exit 50) before anything changes.
#[test]
#[cfg_attr(testkit_not_root, ignore = "needs root: mounts a tmpfs on the store")]
fn a_store_on_another_filesystem_is_refused_with_exdev_f1() {
    assert_root("a_store_on_another_filesystem_is_refused_with_exdev_f1");
    let f = Fixture::new();
    let (sy, _) = f.engine();
    let plan = sy
        .plan(&PlanInput::default().link(sp("usr/bin/ls"), sp("usr/lib/alt/ls")))
        .unwrap();
    let store = f.host("usr/bin/.switchyard");
    std::fs::create_dir(&store).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "mode=0700,size=1m", "switchyard-test"])
        .arg(&store)
        .status()
        .unwrap_or_else(|e| panic!("mount (package mount) must be installed: {e}"));
    assert!(mounted.success(), "mount tmpfs on the store");
    let before = f.tree();
    let e = sy.apply(&plan, ApplyMode::Commit).unwrap_err();
    let after = f.tree();
    let umounted = std::process::Command::new("umount").arg(&store).status();
    assert_eq!((e.id(), e.exit_code()), (ErrorId::Exdev, 50), "{e}");
    assert_eq!(after, before, "nothing changed");
    assert!(umounted.unwrap().success(), "umount");
}

/// F1 (issue 8 #7): a target with a file bind-mounted on it cannot be replaced by a
/// rename: preflight stops it with `E_EXDEV` (exit 50), nothing changes.
#[test]
#[cfg_attr(testkit_not_root, ignore = "needs root: bind mounts")]
fn a_bind_mounted_target_stops_with_exdev_f1() {
    assert_root("a_bind_mounted_target_stops_with_exdev_f1");
    let f = Fixture::new();
    let (sy, _) = f.engine();
    let plan = sy
        .plan(&PlanInput::default().link(sp("usr/bin/ls"), sp("usr/lib/alt/ls")))
        .unwrap();
    let target = f.host("usr/bin/ls");
    let mounted = std::process::Command::new("mount")
        .arg("--bind")
        .arg(f.host("usr/lib/alt/keep"))
        .arg(&target)
        .status()
        .unwrap_or_else(|e| panic!("mount (package mount) must be installed: {e}"));
    assert!(mounted.success(), "bind mount");
    let before = f.tree();
    let pre = sy.preflight(&plan).unwrap();
    let e = sy.apply(&plan, ApplyMode::Commit).unwrap_err();
    let after = f.tree();
    let umounted = std::process::Command::new("umount").arg(&target).status();
    assert!(
        pre.rows[0]
            .notes
            .iter()
            .any(|n| n.contains("mounted on the target")),
        "{:?}",
        pre.rows[0]
    );
    assert_eq!((e.id(), e.exit_code()), (ErrorId::Exdev, 50), "{e}");
    assert_eq!(after, before, "nothing changed");
    assert!(umounted.unwrap().success(), "umount");
}
