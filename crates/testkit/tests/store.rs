//! The backup store (S8, R2, R6): kept originals — a setuid-root binary, a binary
//! with a file capability — cannot be run or even opened by an unprivileged user
//! while they are kept, and come back exactly; a store someone else made is refused.
//!
//! The root tests run real binaries as uid 65534 with `setpriv` and set real file
//! capabilities with `setcap` (libcap2-bin): nothing is simulated.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use switchyard::{failpoints as fp, ApplyMode, ErrorId, PlanInput, RunSelector};
use switchyard_testkit::{
    assert_root, get_cap, in_own_process, run_as_nobody, set_cap, sp, standard_input, Fixture,
};

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
    let keep = f.host("usr/lib/alt/keep");
    let _mount = MountAt::new(&["--bind", keep.to_str().unwrap()], &f.host("usr/bin/ls"));
    let before = f.tree();
    let pre = sy.preflight(&plan).unwrap();
    let e = sy.apply(&plan, ApplyMode::Commit).unwrap_err();
    let after = f.tree();
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
}

/// A mount at a path for one test, unmounted on drop.
struct MountAt(std::path::PathBuf);

impl MountAt {
    fn new(args: &[&str], at: &Path) -> MountAt {
        let st = std::process::Command::new("mount")
            .args(args)
            .arg(at)
            .status()
            .expect("mount(8)");
        assert!(st.success(), "mount {args:?} {}: {st}", at.display());
        MountAt(at.to_path_buf())
    }
}

impl Drop for MountAt {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// S8, F1/F2: the store must be on the target's own mount (the exchange that moves the
/// original into it is a rename, and renames do not cross mounts). A mount at
/// `usr/bin/.switchyard` — a tmpfs, or a bind mount of a directory of the same
/// filesystem (same `st_dev`, so a device comparison misses it), each root's and 0700,
/// so the owner and mode checks pass — is refused before anything changes: the dry-run
/// predicts the commit's refusal (`E_EXDEV`, exit 50), nothing is journaled, and the
/// next command is not blocked. The bind mount used to pass the dry-run, fail the
/// commit mid-way with `E_RESTORE_FAILED` (EXDEV), then fail to remove the store
/// (EBUSY) and leave a pending journal that every later command tripped over
/// (`E_RECOVERY`).
#[test]
#[cfg_attr(testkit_not_root, ignore = "needs root: tmpfs and bind mounts")]
fn a_store_on_another_filesystem_is_refused_before_anything_changes_s8_f2() {
    assert_root("a_store_on_another_filesystem_is_refused_before_anything_changes_s8_f2");
    for how in ["tmpfs", "bind"] {
        let f = Fixture::new();
        let store = f.host("usr/bin/.switchyard");
        let private = std::fs::Permissions::from_mode(0o700);
        std::fs::create_dir(&store).unwrap();
        std::fs::set_permissions(&store, private.clone()).unwrap();
        let _mount = match how {
            "tmpfs" => MountAt::new(
                &["-t", "tmpfs", "-o", "mode=0700", "switchyard-test"],
                &store,
            ),
            _ => {
                let src = f.host("var/elsewhere");
                std::fs::create_dir(&src).unwrap();
                std::fs::set_permissions(&src, private).unwrap();
                MountAt::new(&["--bind", src.to_str().unwrap()], &store)
            }
        };
        let md = std::fs::symlink_metadata(&store).unwrap();
        assert!(
            md.is_dir() && md.permissions().mode() & 0o7777 == 0o700,
            "{how}"
        );
        let before = f.tree();
        let (sy, _) = f.engine();
        let plan = sy.plan(&standard_input()).unwrap();
        let ctx = format!("store on a {how} mount");
        let dry = sy.apply(&plan, ApplyMode::DryRun).unwrap_err();
        assert_eq!(
            (dry.id(), dry.exit_code()),
            (ErrorId::Exdev, 50),
            "{ctx}: dry-run: {dry}"
        );
        let e = sy.apply(&plan, ApplyMode::Commit).unwrap_err();
        assert_eq!((e.id(), e.exit_code()), (ErrorId::Exdev, 50), "{ctx}: {e}");
        assert!(e.message().contains("another filesystem"), "{ctx}: {e}");
        assert_eq!(f.tree(), before, "{ctx}: nothing changed");
        assert!(
            !sy.status().unwrap().pending_journal,
            "{ctx}: nothing pending"
        );
        sy.recover(ApplyMode::Commit)
            .unwrap_or_else(|e| panic!("{ctx}: later commands are not blocked: {e}"));
    }
}

/// S8/S9, A3: a `.switchyard` symlink planted after the journal is written, before the
/// first swap in its directory, is refused (`E_POLICY`) and the run is undone cleanly:
/// nothing of the run is left, no journal stays pending and later commands are not
/// blocked. (Undo used to refuse the planted store too, so a run that had changed
/// nothing failed with `E_RESTORE_FAILED`, stayed pending, and every later command
/// failed with `E_RECOVERY` until the symlink was removed by hand.)
#[test]
fn a_store_planted_after_the_journal_is_refused_and_the_run_undone_s8_a3() {
    in_own_process(|fps| {
        let f = Fixture::new();
        let (sy, _) = f.engine();
        let store = f.host("usr/bin/.switchyard");
        let elsewhere = tempfile::tempdir().unwrap();
        let planted = elsewhere.path().to_path_buf();
        let at = store.clone();
        fps.cfg_callback(fp::APPLY_AFTER_JOURNAL, move || {
            std::os::unix::fs::symlink(&planted, &at).unwrap();
        });
        let plan = sy.plan(&standard_input()).unwrap();
        let before = f.tree();
        let e = sy.apply(&plan, ApplyMode::Commit).unwrap_err();
        fps.remove(fp::APPLY_AFTER_JOURNAL);
        assert_eq!(e.id(), ErrorId::Policy, "{e}");
        assert!(e.message().contains("not a directory"), "{e}");
        assert!(e.targets().is_empty(), "nothing left half-done: {e:?}");
        let mut now = f.tree();
        assert_eq!(
            now.0.remove("usr/bin/.switchyard").map(|e| e.kind),
            Some("symlink".to_owned()),
            "the planted symlink is left alone"
        );
        assert_eq!(now, before, "the run is undone");
        assert_eq!(std::fs::read_dir(elsewhere.path()).unwrap().count(), 0);
        assert!(!sy.status().unwrap().pending_journal, "nothing pending");
        std::fs::remove_file(&store).unwrap();
        let rep = sy.apply(&plan, ApplyMode::Commit).unwrap();
        assert!(rep.changed, "later commands are not blocked");
    });
}
