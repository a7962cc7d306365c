//! Locking (L1–L4), R5 reporting, and S3 source ownership.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::sync::Arc;
use switchyard::LockManager;
use switchyard::{ApplyMode, ErrorId, FileLock, MemorySink, Policy, RunSelector, Switchyard};
use switchyard_testkit::{assert_applied, engine_for, sp, standard_input, Fixture};

/// The decision and lock fields of the `apply.attempt` fact of the last apply
/// recorded by `sink`.
fn attempt_fact(sink: &MemorySink) -> (switchyard::facts::Decision, switchyard::facts::LockFact) {
    sink.facts()
        .into_iter()
        .rev()
        .find_map(|f| match f.event {
            switchyard::facts::Event::ApplyAttempt(l) => Some((f.envelope.decision, l)),
            _ => None,
        })
        .unwrap()
}

#[test]
fn core_types_are_send_and_sync_l4() {
    fn check<T: Send + Sync>() {}
    check::<Switchyard>();
    check::<switchyard::Plan>();
    check::<switchyard::Error>();
}

#[test]
fn lock_wait_is_bounded_and_reported_l2() {
    let f = Fixture::new();
    let mut policy = Policy::dev();
    policy.lock_timeout_ms = 150;
    let (sy, sink) = engine_for(f.path(), policy);
    std::fs::create_dir_all(f.host(switchyard_testkit::STATE)).unwrap();
    let state = std::fs::File::open(f.host(switchyard_testkit::STATE)).unwrap();
    let held = FileLock::new()
        .acquire(std::os::fd::AsFd::as_fd(&state), std::time::Duration::ZERO)
        .unwrap();
    assert_eq!(held.attempts, 1);
    let before = f.tree();
    let err = sy
        .apply(&sy.plan(&standard_input()).unwrap(), ApplyMode::Commit)
        .unwrap_err();
    assert_eq!((err.id(), err.exit_code()), (ErrorId::Locking, 30));
    assert!(
        err.message()
            .contains(&format!("held by pid {}", std::process::id())),
        "{err}"
    );
    assert_eq!(f.tree(), before);
    drop(held);
    sink.clear();
    sy.apply(&sy.plan(&standard_input()).unwrap(), ApplyMode::Commit)
        .unwrap();
    let (_, attempt) = attempt_fact(&sink);
    assert_eq!(attempt.lock_backend, "flock");
    assert_eq!(attempt.lock_attempts, 1, "free lock: one attempt");
}

#[test]
fn production_refuses_without_lock_manager_and_dev_warns_l3() {
    let f = Fixture::new();
    let mut policy = Policy::production();
    policy.allow_roots = vec![sp("usr/bin")];
    policy.require_smoke_runner = false;
    let sy = Switchyard::builder(policy).root(f.path()).build().unwrap();
    let err = sy
        .apply(&sy.plan(&standard_input()).unwrap(), ApplyMode::Commit)
        .unwrap_err();
    assert_eq!(err.id(), ErrorId::Policy);
    assert!(err.message().contains("lock manager"), "{err}");
    // H6: production also refuses without a smoke runner.
    let mut p = Policy::production();
    p.allow_roots = vec![sp("usr/bin")];
    let sy = Switchyard::builder(p)
        .root(f.path())
        .with_lock_manager(FileLock::new())
        .build()
        .unwrap();
    let err = sy
        .apply(&sy.plan(&standard_input()).unwrap(), ApplyMode::Commit)
        .unwrap_err();
    assert!(err.message().contains("smoke runner"), "{err}");

    let mut dev = Policy::dev();
    dev.allow_roots = vec![sp("usr/bin")];
    let sink = MemorySink::default();
    let sy = Switchyard::builder(dev)
        .root(f.path())
        .with_facts_sink(sink.clone())
        .build()
        .unwrap();
    sy.apply(&sy.plan(&standard_input()).unwrap(), ApplyMode::Commit)
        .unwrap();
    let (decision, attempt) = attempt_fact(&sink);
    assert_eq!(decision, switchyard::facts::Decision::Warn);
    assert_eq!(attempt.lock_backend, "none");
}

#[test]
fn concurrent_applies_serialize_on_the_lock_l1_l4() {
    let f = Fixture::new();
    let before = f.tree();
    let (sy, _) = engine_for(f.path(), Policy::dev());
    let sy = Arc::new(sy);
    let plan = Arc::new(sy.plan(&standard_input()).unwrap());
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let (sy, plan) = (sy.clone(), plan.clone());
            std::thread::spawn(move || sy.apply(&plan, ApplyMode::Commit).map(|r| r.changed))
        })
        .collect();
    let changed: Vec<bool> = handles
        .into_iter()
        .map(|h| h.join().unwrap().unwrap())
        .collect();
    assert_eq!(changed.iter().filter(|c| **c).count(), 1, "{changed:?}");
    assert_applied(&before, &f.tree());
}

#[test]
fn failed_rollback_step_reports_every_target_r5() {
    let f = Fixture::new();
    let (sy, _) = engine_for(f.path(), Policy::dev());
    let before = f.tree();
    let rep = sy
        .apply(&sy.plan(&standard_input()).unwrap(), ApplyMode::Commit)
        .unwrap();
    // Someone replaces our link at usr/bin/ls with their own file.
    std::fs::remove_file(f.host("usr/bin/ls")).unwrap();
    f.write("usr/bin/ls", b"someone else's", 0o755);
    // R8: the dry-run predicts the commit, target by target.
    let dry = sy
        .rollback(RunSelector::Id(rep.run_id), ApplyMode::DryRun)
        .unwrap();
    let predicted: Vec<(&str, &str)> = dry
        .actions
        .iter()
        .map(|a| (a.target.as_str(), a.result.as_str()))
        .collect();
    assert_eq!(
        predicted,
        [
            ("usr/bin/new", "would_restore"),
            ("usr/bin/ls", "would_refuse"),
            ("usr/bin/cat", "would_restore")
        ]
    );
    let err = sy
        .rollback(RunSelector::Id(rep.run_id), ApplyMode::Commit)
        .unwrap_err();
    assert_eq!((err.id(), err.exit_code()), (ErrorId::RestoreFailed, 70));
    let states: Vec<(&str, &str)> = err
        .targets()
        .iter()
        .map(|t| (t.path.as_str(), t.state.as_str()))
        .collect();
    // R8: the commit ends as its dry-run predicted, target by target (R5: the states
    // are the true ones — the foreign node was refused, not "unknown").
    assert_eq!(
        states,
        [
            ("usr/bin/new", "restored"),
            ("usr/bin/ls", "refused"),
            ("usr/bin/cat", "restored")
        ]
    );
    // O1, §3: the failed rollback's facts are in its run's facts.jsonl, the refusal
    // among them, and they survive the recovery that finishes it.
    let rb = err.run_id().expect("the failed rollback names its run");
    let facts_of = |what: &str| {
        let p = sy
            .facts_of(rb)
            .unwrap_or_else(|| panic!("{what}: no facts.jsonl for the failed rollback {rb}"));
        std::fs::read_to_string(p).unwrap()
    };
    let facts = facts_of("after the failure");
    assert!(
        facts
            .lines()
            .any(|l| l.contains("\"usr/bin/ls\"") && l.contains("E_RESTORE_FAILED")),
        "{facts}"
    );
    let ls = err
        .targets()
        .iter()
        .find(|t| t.path == "usr/bin/ls")
        .unwrap();
    assert!(
        ls.remediation.contains("move the unexpected node"),
        "{}",
        ls.remediation
    );
    assert_eq!(
        std::fs::read(f.host("usr/bin/ls")).unwrap(),
        b"someone else's",
        "never overwritten"
    );
    assert!(
        f.host("usr/bin/.switchyard/ls.1.bak").exists(),
        "the original is kept"
    );
    // R8: the rollback could not finish, so it stays pending, visible to status and
    // doctor, until the cause is fixed and `recover` (or any mutating run) ends it.
    assert!(sy.status().unwrap().pending_journal, "R8: rollback pending");
    assert_ne!(sy.doctor().verdict, switchyard::HealthVerdict::Ok);
    std::fs::remove_file(f.host("usr/bin/ls")).unwrap();
    sy.recover(ApplyMode::Commit).unwrap();
    assert_eq!(
        f.tree(),
        before,
        "R8: the finished rollback restored everything"
    );
    assert_eq!(facts_of("after recovery"), facts, "the evidence is kept");
    let st = sy.status().unwrap();
    assert!(!st.pending_journal && st.targets.is_empty(), "{st:?}");
}

/// R5, O9: a rollback never reports a target as restored that it did not restore.
/// With integrity checks off (a library policy), the original of `usr/bin/ls` removed
/// from the store by hand and the target replaced by someone else's file, the
/// rollback leaves that file alone — there is nothing to put back — and says so
/// (`kept_replaced`, predicted by its dry-run), while the other targets are restored.
/// It used to report `restored` for it. (With integrity checks on, the rollback
/// refuses up front: the backup is missing.)
#[test]
fn rollback_never_reports_a_target_it_did_not_restore_as_restored_r5() {
    let f = Fixture::new();
    let mut lax = Policy::dev();
    lax.require_sidecar_integrity = false;
    let (sy, _) = engine_for(f.path(), lax);
    let rep = sy
        .apply(&sy.plan(&standard_input()).unwrap(), ApplyMode::Commit)
        .unwrap();
    // (The foreign file is made before the original goes, so it cannot reuse its
    // inode number.)
    std::fs::remove_file(f.host("usr/bin/ls")).unwrap();
    f.write("usr/bin/ls", b"someone else's", 0o755);
    std::fs::remove_file(f.host("usr/bin/.switchyard/ls.1.bak")).unwrap();
    let results = |r: &switchyard::RollbackReport| -> Vec<(String, &'static str)> {
        r.actions
            .iter()
            .map(|a| (a.target.clone(), a.result.as_str()))
            .collect()
    };
    let dry = sy
        .rollback(RunSelector::Id(rep.run_id), ApplyMode::DryRun)
        .unwrap();
    let expect = |ls: &'static str, other: &'static str| {
        vec![
            ("usr/bin/new".to_owned(), other),
            ("usr/bin/ls".to_owned(), ls),
            ("usr/bin/cat".to_owned(), other),
        ]
    };
    assert_eq!(
        results(&dry),
        expect("would_keep_replaced", "would_restore")
    );
    let done = sy
        .rollback(RunSelector::Id(rep.run_id), ApplyMode::Commit)
        .unwrap();
    assert_eq!(results(&done), expect("kept_replaced", "restored"));
    assert_eq!(
        std::fs::read(f.host("usr/bin/ls")).unwrap(),
        b"someone else's",
        "left alone"
    );
    assert_eq!(
        std::fs::read_link(f.host("usr/bin/cat")).unwrap(),
        std::path::Path::new("gnu-cat")
    );
    // With integrity checks on, the missing backup stops the rollback before anything.
    let (strict, _) = engine_for(f.path(), Policy::dev());
    let rep = strict
        .apply(&strict.plan(&standard_input()).unwrap(), ApplyMode::Commit)
        .unwrap();
    std::fs::remove_file(f.host("usr/bin/cat")).unwrap();
    f.write("usr/bin/cat", b"someone else's", 0o755);
    std::fs::remove_file(f.host("usr/bin/.switchyard/cat.1.bak")).unwrap();
    let before = f.tree();
    let e = strict
        .rollback(RunSelector::Id(rep.run_id), ApplyMode::Commit)
        .unwrap_err();
    assert_eq!(e.id(), ErrorId::BackupMissing, "{e}");
    assert_eq!(f.tree(), before, "nothing moved");
}

#[test]
fn strict_policy_refuses_sources_not_owned_by_root_or_writable_s3() {
    let f = Fixture::new();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        f.host("usr/lib/alt/cat"),
        std::fs::Permissions::from_mode(0o777),
    )
    .unwrap();
    if switchyard_testkit::is_root() {
        std::os::unix::fs::chown(f.host("usr/lib/alt/ls"), Some(1000), None).unwrap();
    }
    let mut policy = Policy::dev();
    policy.strict_source_ownership = true;
    let (sy, _) = engine_for(f.path(), policy);
    let pre = sy.preflight(&sy.plan(&standard_input()).unwrap()).unwrap();
    let notes = |p: &str| {
        pre.rows
            .iter()
            .find(|r| r.path.as_str() == p)
            .unwrap()
            .notes
            .join("; ")
    };
    assert!(
        notes("usr/bin/cat").contains("group/world-writable"),
        "{}",
        notes("usr/bin/cat")
    );
    assert!(
        notes("usr/bin/ls").contains("not root"),
        "{}",
        notes("usr/bin/ls")
    );
    let err = sy
        .apply(&sy.plan(&standard_input()).unwrap(), ApplyMode::Commit)
        .unwrap_err();
    assert_eq!(err.id(), ErrorId::Policy);
    assert_eq!(
        err.summary_error_ids(),
        [ErrorId::Ownership, ErrorId::Policy],
        "O8: causes first"
    );
}

/// Every entry under the state directory with its permission bits, by relative path.
fn state_modes(f: &Fixture) -> Vec<(String, bool, u32)> {
    use std::os::unix::fs::MetadataExt;
    let base = f.host(switchyard_testkit::STATE);
    let mut out = vec![(
        String::new(),
        true,
        std::fs::metadata(&base).unwrap().mode() & 0o7777,
    )];
    let mut todo = vec![base.clone()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let md = std::fs::symlink_metadata(&p).unwrap();
            if md.is_dir() {
                todo.push(p.clone());
            }
            let rel = p.strip_prefix(&base).unwrap().display().to_string();
            out.push((rel, md.is_dir(), md.mode() & 0o7777));
        }
    }
    out.sort();
    out
}

#[test]
fn state_is_created_private_s9() {
    // S9: the state directory and everything Switchyard creates in it are its own:
    // directories 0700, files (the lock included) 0600.
    let f = Fixture::new();
    let (sy, _) = f.engine();
    let rep = sy
        .apply(&sy.plan(&standard_input()).unwrap(), ApplyMode::Commit)
        .unwrap();
    sy.rollback(RunSelector::Id(rep.run_id), ApplyMode::Commit)
        .unwrap();
    let modes = state_modes(&f);
    let names: Vec<&str> = modes.iter().map(|(n, _, _)| n.as_str()).collect();
    for want in ["", "lock", "runs", "journal", "runs/LATEST"] {
        assert!(names.contains(&want), "{want:?} missing from {names:?}");
    }
    assert!(names.iter().any(|n| n.ends_with("/record.json")));
    assert!(names.iter().any(|n| n.ends_with("/facts.jsonl")));
    assert!(names.iter().any(|n| n.ends_with("/undone")));
    for (name, is_dir, mode) in &modes {
        let want = if *is_dir { 0o700 } else { 0o600 };
        assert_eq!(*mode, want, "{name:?} is {mode:o}, want {want:o}");
    }
    // The ancestors it had to create are ordinary system directories.
    use std::os::unix::fs::MetadataExt;
    let lib = std::fs::metadata(f.host("var/lib")).unwrap().mode() & 0o7777;
    assert_eq!(lib, 0o755);
}

/// Issue 8 #2, S9: state an earlier version left readable by others (directories
/// 0755, the lock 0644) is made private by the next mutating command; a read-only
/// query changes nothing.
#[test]
fn state_an_earlier_version_left_open_is_made_private_s9() {
    use std::os::unix::fs::PermissionsExt;
    let f = Fixture::new();
    let (sy, _) = f.engine();
    let plan = sy.plan(&standard_input()).unwrap();
    sy.apply(&plan, ApplyMode::Commit).unwrap();
    let state = f.host(switchyard_testkit::STATE);
    for (rel, mode) in [
        ("", 0o755),
        ("journal", 0o755),
        ("runs", 0o755),
        ("lock", 0o644),
    ] {
        std::fs::set_permissions(state.join(rel), std::fs::Permissions::from_mode(mode)).unwrap();
    }
    sy.status().unwrap();
    let opened = state_modes(&f);
    assert!(
        opened.iter().any(|(n, _, m)| n == "lock" && *m == 0o644),
        "a query changes nothing: {opened:?}"
    );
    sy.apply(&plan, ApplyMode::Commit).unwrap();
    for (name, is_dir, mode) in state_modes(&f) {
        let want = if is_dir { 0o700 } else { 0o600 };
        assert_eq!(mode, want, "{name:?} is {mode:o}, want {want:o}");
    }
}

#[test]
#[cfg_attr(
    testkit_not_root,
    ignore = "needs root: takes the lock as the unprivileged user nobody"
)]
fn an_unprivileged_user_cannot_take_the_lock_s9_l1() {
    // Issue 8 #2: a shared flock by `nobody` on a world-readable lock file blocked
    // every run. The lock file is 0600 in a 0700 directory now: nobody cannot open it.
    switchyard_testkit::assert_root("lock as nobody");
    let f = Fixture::new();
    let (sy, _) = f.engine();
    let plan = sy.plan(&standard_input()).unwrap();
    sy.apply(&plan, ApplyMode::Commit).unwrap();
    let lock = f.host(switchyard_testkit::STATE).join("lock");
    let out = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "flock",
            "-n",
            "-s",
        ])
        .arg(&lock)
        .arg("true")
        .output()
        .unwrap_or_else(|e| panic!("setpriv/flock (util-linux) must be installed: {e}"));
    assert!(
        !out.status.success(),
        "nobody took a shared lock on {}: {}",
        lock.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Permission denied"), "{err}");
    // And root's next run is not blocked.
    let (sy, _) = f.engine();
    sy.apply(&plan, ApplyMode::Commit).unwrap();
}

/// Issue 8 #2 (L1): the lock file holds the pid of whoever last took it; when someone
/// else holds the lock now, `doctor` and the `E_LOCKING` message name the real holder
/// (from /proc/locks), not that stale pid.
#[test]
fn the_lock_holder_is_named_from_the_kernel_not_a_stale_pid_l1() {
    use std::io::{BufRead, BufReader, Write};
    let f = Fixture::new();
    let mut policy = Policy::dev();
    policy.lock_timeout_ms = 50;
    let (sy, _) = engine_for(f.path(), policy);
    let plan = sy.plan(&standard_input()).unwrap();
    sy.apply(&plan, ApplyMode::Commit).unwrap();
    let lock = f.host(switchyard_testkit::STATE).join("lock");
    std::fs::write(&lock, b"999999\n").unwrap();
    let mut holder = std::process::Command::new("flock")
        .arg("-x")
        .arg(&lock)
        .args(["sh", "-c", "echo locked; read x"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("flock (util-linux) must be installed: {e}"));
    let mut line = String::new();
    BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "locked");
    let h = sy.doctor();
    let e = sy.apply(&plan, ApplyMode::Commit).unwrap_err();
    let pid = holder.id();
    holder.stdin.take().unwrap().write_all(b"\n").unwrap();
    holder.wait().unwrap();
    assert_eq!(h.lock.state, switchyard::LockState::Held);
    assert_eq!(h.lock.pid, Some(pid), "doctor names flock, not pid 999999");
    assert_eq!(e.id(), ErrorId::Locking, "{e}");
    assert!(
        e.message().contains(&format!("flock (pid {pid})")),
        "E_LOCKING names the holder: {e}"
    );
}
