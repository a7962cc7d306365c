//! H2–H4: command smoke checks. A check that cannot run — missing binary, timeout,
//! signal — is a failure that records its cause, never empty output or success; a
//! failing check inside commit rolls the run back with E_SMOKE (H3).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::time::Duration;
use switchyard::{
    ApplyMode, CommandCheck, CommandSmoke, ErrorId, FileLock, MemorySink, Policy, Root, Switchyard,
};
use switchyard_testkit::{sp, standard_input, Fixture};

fn check(
    argv: &[&str],
    expect_exit: i32,
    expect_stdout: Option<&str>,
    timeout_ms: u64,
) -> CommandCheck {
    CommandCheck {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        expect_exit,
        expect_stdout: expect_stdout.map(str::to_owned),
        timeout: Duration::from_millis(timeout_ms),
    }
}

#[test]
fn every_way_a_check_can_fail_names_its_cause_h4() {
    let f = Fixture::new();
    let root = Root::open(f.path()).unwrap();
    let cases: &[(CommandCheck, Option<&str>)] = &[
        (check(&["usr/bin/ls"], 0, Some("gnu-ls"), 5000), None),
        (
            check(&["usr/bin/missing"], 0, None, 5000),
            Some("could not execute usr/bin/missing"),
        ),
        (
            check(&["/bin/sleep", "5"], 0, None, 100),
            Some("timed out after 100 ms"),
        ),
        (
            check(&["/bin/sh", "-c", "kill -9 $$"], 0, None, 5000),
            Some("killed by signal 9"),
        ),
        (
            check(&["/bin/sh", "-c", "exit 3"], 0, None, 5000),
            Some("exit status 3, expected 0"),
        ),
        (
            check(&["usr/bin/ls"], 0, Some("uutils"), 5000),
            // H8: the failure shows what the tool printed.
            Some("stdout does not contain \"uutils\"; it printed \"gnu-ls\\n\""),
        ),
        (check(&[], 0, None, 5000), Some("empty argv")),
        // 3 MB of output: the first MiB is kept, the rest drained, nothing blocks.
        (
            check(
                // The check's PATH is the root's: host tools by absolute path.
                &[
                    "/bin/sh",
                    "-c",
                    "echo first; /usr/bin/head -c 3000000 /dev/zero",
                ],
                0,
                Some("first"),
                10_000,
            ),
            None,
        ),
    ];
    for (c, want) in cases {
        let o = c.run(&root);
        match want {
            None => assert!(o.ok && o.cause.is_none(), "{:?}: {o:?}", c.argv),
            Some(cause) => {
                assert!(!o.ok, "{:?} passed", c.argv);
                let got = o.cause.unwrap_or_default();
                assert!(
                    got.contains(cause),
                    "{:?}: cause {got:?}, want {cause:?}",
                    c.argv
                );
            }
        }
    }
}

#[test]
fn a_failing_check_rolls_the_commit_back_with_its_cause_h3() {
    let f = Fixture::new();
    let before = f.tree();
    let mut policy = Policy::dev();
    policy.allow_roots = vec![sp("usr/bin")];
    let sink = MemorySink::default();
    let sy = Switchyard::builder(policy)
        .root(f.path())
        .with_lock_manager(FileLock::new())
        .with_facts_sink(sink.clone())
        // After the swap usr/bin/ls is the alternative, which prints "alt-ls".
        .with_smoke_runner(CommandSmoke {
            checks: vec![check(&["usr/bin/ls"], 0, Some("gnu-ls"), 5000)],
        })
        .build()
        .unwrap();
    let err = sy
        .apply(&sy.plan(&standard_input()).unwrap(), ApplyMode::Commit)
        .unwrap_err();
    assert_eq!((err.id(), err.exit_code()), (ErrorId::Smoke, 80));
    assert!(
        err.message().contains("stdout does not contain \"gnu-ls\""),
        "{err}"
    );
    assert_eq!(f.tree(), before, "H3: rolled back");
    let smoke = sink
        .facts()
        .into_iter()
        .find(|f| f.stage() == switchyard::facts::Stage::Smoke)
        .unwrap();
    let failure = smoke.failure().unwrap();
    assert_eq!(failure.error_id, ErrorId::Smoke);
    assert!(failure.error.message.contains("gnu-ls"));
}

#[test]
fn disable_auto_rollback_keeps_the_swap_but_still_fails_h3() {
    let f = Fixture::new();
    let before = f.tree();
    let mut policy = Policy::dev();
    policy.allow_roots = vec![sp("usr/bin")];
    policy.disable_auto_rollback = true;
    let sy = Switchyard::builder(policy)
        .root(f.path())
        .with_lock_manager(FileLock::new())
        .with_smoke_runner(CommandSmoke {
            checks: vec![check(&["/bin/sh", "-c", "exit 1"], 0, None, 5000)],
        })
        .build()
        .unwrap();
    let err = sy
        .apply(&sy.plan(&standard_input()).unwrap(), ApplyMode::Commit)
        .unwrap_err();
    assert_eq!(err.id(), ErrorId::Smoke);
    switchyard_testkit::assert_applied(&before, &f.tree());
    assert!(!sy.status().unwrap().pending_journal);
}
