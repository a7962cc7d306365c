//! T1 crash windows: for every failpoint of apply, rollback and recovery, a real
//! child process is SIGKILLed there — at every hit, not just the first — then
//! recovery runs and the tree must be exactly pre-plan (or exactly applied once the
//! run had committed), with no litter and no pending journal.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use switchyard::failpoints::{self as fp, ALL};
use switchyard::{ApplyMode, Policy};
use switchyard_testkit::{
    assert_applied, engine_with, run_child, standard_input, standard_links, ChildEnd, Fixture,
    Scenario,
};

const EXE: &str = env!("CARGO_BIN_EXE_crashchild");

/// What exists before the child runs.
#[derive(Clone, Copy, Debug)]
enum Setup {
    /// The fixture as created.
    Fresh,
    /// The standard plan committed (the child rolls it back).
    Applied,
    /// An apply killed at this failpoint's first hit (the child recovers).
    CrashedApply(&'static str),
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    PrePlan,
    Applied,
}

/// Every crash case: (failpoint, setup, child op, expected end state).
const CASES: &[(&str, Setup, &str, Expect)] = &[
    (
        fp::APPLY_AFTER_JOURNAL,
        Setup::Fresh,
        "apply",
        Expect::PrePlan,
    ),
    (
        fp::APPLY_AFTER_STAGE,
        Setup::Fresh,
        "apply",
        Expect::PrePlan,
    ),
    (fp::APPLY_AFTER_SWAP, Setup::Fresh, "apply", Expect::PrePlan),
    (
        fp::APPLY_AFTER_BACKUP,
        Setup::Fresh,
        "apply",
        Expect::PrePlan,
    ),
    (
        fp::APPLY_BEFORE_SYNC,
        Setup::Fresh,
        "apply",
        Expect::PrePlan,
    ),
    (
        fp::APPLY_BEFORE_COMMIT,
        Setup::Fresh,
        "apply",
        Expect::PrePlan,
    ),
    (
        fp::APPLY_AFTER_COMMIT,
        Setup::Fresh,
        "apply",
        Expect::Applied,
    ),
    (
        fp::ROLLBACK_AFTER_JOURNAL,
        Setup::Applied,
        "rollback",
        Expect::PrePlan,
    ),
    (
        fp::UNDO_AFTER_SWAP,
        Setup::Applied,
        "rollback",
        Expect::PrePlan,
    ),
    (
        fp::UNDO_AFTER_DISPOSE,
        Setup::Applied,
        "rollback",
        Expect::PrePlan,
    ),
    (
        fp::ROLLBACK_BEFORE_COMMIT,
        Setup::Applied,
        "rollback",
        Expect::PrePlan,
    ),
    (
        fp::UNDO_AFTER_SWAP,
        Setup::CrashedApply(fp::APPLY_BEFORE_SYNC),
        "recover",
        Expect::PrePlan,
    ),
    (
        fp::UNDO_AFTER_DISPOSE,
        Setup::CrashedApply(fp::APPLY_AFTER_SWAP),
        "recover",
        Expect::PrePlan,
    ),
    (
        fp::RECOVERY_BEFORE_CLEAR,
        Setup::CrashedApply(fp::APPLY_AFTER_BACKUP),
        "recover",
        Expect::PrePlan,
    ),
];

fn scenario(
    f: &Fixture,
    op: &str,
    failpoint: &str,
    nth: u32,
    run: Option<String>,
    fallback: bool,
) -> Scenario {
    Scenario {
        root: f.path().to_path_buf(),
        op: op.into(),
        failpoint: failpoint.into(),
        mode: "kill".into(),
        nth,
        run,
        links: standard_links(),
        fallback,
    }
}

/// Runs every case of `failpoint` at every hit; returns how many kills happened.
fn crash_all(failpoint: &str) -> u32 {
    let mut kills = 0;
    let cases: Vec<_> = CASES.iter().filter(|c| c.0 == failpoint).collect();
    assert!(!cases.is_empty(), "no crash case for {failpoint}");
    // Every case runs with renameat2 flags and with the linkat fallbacks (A1).
    for (fallback, &&(point, setup, op, expect)) in [false, true]
        .into_iter()
        .flat_map(|fb| cases.iter().map(move |c| (fb, c)))
    {
        for nth in 1.. {
            let f = Fixture::new();
            let before = f.tree();
            let (sy, _) = engine_with(f.path(), Policy::dev(), fallback);
            let run = match setup {
                Setup::Fresh => None,
                Setup::Applied => {
                    let plan = sy.plan(&standard_input()).unwrap();
                    Some(
                        sy.apply(&plan, ApplyMode::Commit)
                            .unwrap()
                            .run_id
                            .to_string(),
                    )
                }
                Setup::CrashedApply(at) => {
                    let end =
                        run_child(EXE.as_ref(), &scenario(&f, "apply", at, 1, None, fallback));
                    assert_eq!(end, ChildEnd::Killed, "setup crash at {at}");
                    None
                }
            };
            let end = run_child(EXE.as_ref(), &scenario(&f, op, point, nth, run, fallback));
            if let ChildEnd::Finished(r) = end {
                assert!(
                    nth > 1 || fallback, // fallbacks may lack a window (a plain rename over our link leaves nothing to dispose)
                    "{point} ({setup:?}/{op}) was never reached; child ended with {r:?}"
                );
                assert!(
                    r.is_ok(),
                    "{point} hit {nth}: uninterrupted run failed: {r:?}"
                );
                break;
            }
            kills += 1;
            let ctx = format!("killed at {point} hit {nth} ({setup:?}, {op}, fallback={fallback})");
            assert!(
                sy.status().unwrap().pending_journal,
                "{ctx}: a killed run must leave its journal"
            );
            let rec = sy
                .recover(ApplyMode::Commit)
                .unwrap_or_else(|e| panic!("{ctx}: recovery failed: {e}"));
            assert!(!rec.actions.is_empty(), "{ctx}: nothing recovered");
            match expect {
                Expect::PrePlan => {
                    assert_eq!(f.tree(), before, "{ctx}: not pre-plan after recovery")
                }
                Expect::Applied => assert_applied(&before, &f.tree()),
            }
            assert!(
                !sy.status().unwrap().pending_journal,
                "{ctx}: journal left behind"
            );
            let again = sy.recover(ApplyMode::Commit).unwrap();
            assert!(
                again.actions.is_empty() && !again.changed,
                "{ctx}: recovery not idempotent"
            );
            // The system is usable afterwards: the plan applies and rolls back cleanly.
            let plan = sy.plan(&standard_input()).unwrap();
            let rep = sy
                .apply(&plan, ApplyMode::Commit)
                .unwrap_or_else(|e| panic!("{ctx}: apply after recovery: {e}"));
            if expect == Expect::PrePlan {
                assert!(rep.changed);
                assert_applied(&before, &f.tree());
                sy.rollback(switchyard::RunSelector::Id(rep.run_id), ApplyMode::Commit)
                    .unwrap();
                assert_eq!(f.tree(), before, "{ctx}: rollback after recovery");
            }
        }
    }
    kills
}

macro_rules! crash_tests {
    ($($name:ident => $fp:expr),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                let kills = crash_all($fp);
                assert!(kills > 0);
                eprintln!("{}: {kills} crash cases", $fp);
            }
        )*

        /// T1: every failpoint of the catalog has a crash test.
        #[test]
        fn every_failpoint_has_a_crash_test() {
            let tested = [$($fp),*];
            for f in ALL.iter().filter(|f| !fp::PACKAGE.contains(f)) {
                assert!(tested.contains(f), "failpoint {f} has no crash test");
                assert!(CASES.iter().any(|c| c.0 == *f), "failpoint {f} has no crash case");
            }
        }
    };
}

crash_tests! {
    crash_apply_after_journal => fp::APPLY_AFTER_JOURNAL,
    crash_apply_after_stage => fp::APPLY_AFTER_STAGE,
    crash_apply_after_swap => fp::APPLY_AFTER_SWAP,
    crash_apply_after_backup => fp::APPLY_AFTER_BACKUP,
    crash_apply_before_sync => fp::APPLY_BEFORE_SYNC,
    crash_apply_before_commit => fp::APPLY_BEFORE_COMMIT,
    crash_apply_after_commit => fp::APPLY_AFTER_COMMIT,
    crash_rollback_after_journal => fp::ROLLBACK_AFTER_JOURNAL,
    crash_undo_after_swap => fp::UNDO_AFTER_SWAP,
    crash_undo_after_dispose => fp::UNDO_AFTER_DISPOSE,
    crash_rollback_before_commit => fp::ROLLBACK_BEFORE_COMMIT,
    crash_recovery_before_clear => fp::RECOVERY_BEFORE_CLEAR,
}

/// T1: product code names failpoints only through the catalog's constants.
#[test]
fn failpoints_are_never_named_by_string_literals() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../switchyard/src");
    let mut stack = vec![src];
    let mut scanned = 0;
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                scanned += 1;
                let text = std::fs::read_to_string(&p).unwrap();
                for (i, line) in text.lines().enumerate() {
                    let squashed: String = line.split_whitespace().collect();
                    assert!(
                        !squashed.contains("hit(\"") && !squashed.contains("fail_point!(\""),
                        "{}:{}: failpoint named by a string literal",
                        p.display(),
                        i + 1
                    );
                }
            }
        }
    }
    assert!(scanned > 10, "scanned only {scanned} files");
}
