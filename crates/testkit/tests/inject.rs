//! Injected I/O errors (EIO) at every failpoint and every hit: the call returns the
//! right error and the tree is already settled without running recovery —
//! apply (R4): back to pre-plan, no journal left; past the commit point: applied, and
//! the call succeeds with a warning (O9); rollback (R5, R8): every target's state
//! reported, the rollback stays pending (journal kept) and the next mutating command
//! finishes it; after every target is restored: success with a warning (O9);
//! recovery: fails with E_RECOVERY, keeps its journal, and running it again finishes.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use switchyard::failpoints::{self as fp, ALL};
use switchyard::{ApplyMode, Policy, RunSelector};
use switchyard_testkit::{
    assert_applied, engine_with, run_child, standard_input, standard_links, ChildEnd, Fixture,
    Scenario,
};

const EXE: &str = env!("CARGO_BIN_EXE_crashchild");

/// The outcome of a run that succeeded with warnings (O9).
const WARNED: &str = "warned";

/// (failpoint, child op, expected error id, or [`WARNED`])
const CASES: &[(&str, &str, &str)] = &[
    (fp::APPLY_AFTER_JOURNAL, "apply", "E_GENERIC"),
    (fp::APPLY_AFTER_STAGE, "apply", "E_ATOMIC_SWAP"),
    (fp::APPLY_AFTER_SWAP, "apply", "E_ATOMIC_SWAP"),
    (fp::APPLY_AFTER_BACKUP, "apply", "E_ATOMIC_SWAP"),
    (fp::APPLY_BEFORE_SYNC, "apply", "E_ATOMIC_SWAP"),
    (fp::APPLY_BEFORE_COMMIT, "apply", "E_GENERIC"),
    (fp::APPLY_AFTER_COMMIT, "apply", WARNED),
    (fp::ROLLBACK_AFTER_JOURNAL, "rollback", "E_RESTORE_FAILED"),
    (fp::UNDO_AFTER_SWAP, "rollback", "E_RESTORE_FAILED"),
    (fp::UNDO_AFTER_DISPOSE, "rollback", "E_RESTORE_FAILED"),
    (fp::ROLLBACK_BEFORE_COMMIT, "rollback", WARNED),
    (fp::UNDO_AFTER_SWAP, "recover", "E_RECOVERY"),
    (fp::UNDO_AFTER_DISPOSE, "recover", "E_RECOVERY"),
    (fp::RECOVERY_BEFORE_CLEAR, "recover", "E_RECOVERY"),
];

fn sc(
    fallback: bool,
    f: &Fixture,
    op: &str,
    failpoint: &str,
    mode: &str,
    nth: u32,
    run: Option<String>,
) -> Scenario {
    Scenario {
        root: f.path().to_path_buf(),
        op: op.into(),
        failpoint: failpoint.into(),
        mode: mode.into(),
        nth,
        run,
        links: standard_links(),
        fallback,
    }
}

fn inject_all(point: &str) -> u32 {
    let mut injected = 0;
    let cases = CASES.iter().filter(|c| c.0 == point);
    for (fallback, &(_, op, want)) in [false, true]
        .into_iter()
        .flat_map(|fb| cases.clone().map(move |c| (fb, c)))
    {
        for nth in 1.. {
            let f = Fixture::new();
            let before = f.tree();
            let (sy, _) = engine_with(f.path(), Policy::dev(), fallback);
            let mut run = None;
            match op {
                "rollback" => {
                    let plan = sy.plan(&standard_input()).unwrap();
                    run = Some(sy.apply(&plan, ApplyMode::Commit).unwrap().run_id);
                }
                "recover" => {
                    let end = run_child(
                        EXE.as_ref(),
                        &sc(
                            fallback,
                            &f,
                            "apply",
                            fp::APPLY_BEFORE_SYNC,
                            "kill",
                            1,
                            None,
                        ),
                    );
                    assert_eq!(end, ChildEnd::Killed);
                }
                _ => {}
            }
            let end = run_child(
                EXE.as_ref(),
                &sc(
                    fallback,
                    &f,
                    op,
                    point,
                    "error",
                    nth,
                    run.map(|r| r.to_string()),
                ),
            );
            let ctx = format!("EIO at {point} hit {nth} ({op}, fallback={fallback})");
            let err = match end {
                ChildEnd::Finished(Ok(_)) => {
                    assert!(
                        nth > 1 || fallback,
                        "{ctx}: failpoint never reached (fallbacks may lack a window)"
                    );
                    break;
                }
                ChildEnd::Finished(Err(id)) => id,
                ChildEnd::Warned(w) => {
                    assert!(w.iter().all(|w| w.contains("recover")), "{w:?}");
                    WARNED.to_owned()
                }
                ChildEnd::Killed => panic!("{ctx}: unexpected kill"),
            };
            injected += 1;
            assert_eq!(err, want, "{ctx}");
            let pending = sy.status().unwrap().pending_journal;
            match (op, point) {
                ("apply", p) if p == fp::APPLY_AFTER_COMMIT => {
                    assert_applied(&before, &f.tree());
                    assert!(
                        pending,
                        "{ctx}: journal of a committed run is left for recovery to complete"
                    );
                    sy.recover(ApplyMode::Commit).unwrap();
                    assert_applied(&before, &f.tree());
                }
                ("apply", _) => {
                    assert_eq!(
                        f.tree(),
                        before,
                        "{ctx}: not pre-plan without recovery (R4)"
                    );
                    assert!(!pending, "{ctx}: journal left behind");
                }
                ("rollback", _) => {
                    if want == WARNED {
                        assert_eq!(f.tree(), before, "{ctx}: warned, but not restored");
                    }
                    // R8: a rollback that did not finish stays pending for the next
                    // mutating command, which finishes it before its own work.
                    assert!(pending, "{ctx}: unfinished rollback left no journal (R8)");
                    let again = sy.rollback(RunSelector::Id(run.unwrap()), ApplyMode::Commit);
                    again.unwrap_or_else(|e| panic!("{ctx}: second rollback: {e}"));
                    assert_eq!(f.tree(), before, "{ctx}: second rollback did not finish");
                }
                _ => {
                    assert!(pending, "{ctx}: failed recovery must keep its journal");
                    sy.recover(ApplyMode::Commit)
                        .unwrap_or_else(|e| panic!("{ctx}: second recovery: {e}"));
                    assert_eq!(f.tree(), before, "{ctx}");
                }
            }
            assert!(
                !sy.status().unwrap().pending_journal,
                "{ctx}: journal left at the end"
            );
        }
    }
    injected
}

macro_rules! inject_tests {
    ($($name:ident => $fp:expr),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                let n = inject_all($fp);
                assert!(n > 0);
                eprintln!("{}: {n} injected-error cases", $fp);
            }
        )*

        #[test]
        fn every_failpoint_has_an_injected_error_test() {
            let tested = [$($fp),*];
            for f in ALL.iter().filter(|f| !fp::PACKAGE.contains(f)) {
                assert!(tested.contains(f) && CASES.iter().any(|c| c.0 == *f), "{f} untested");
            }
        }
    };
}

inject_tests! {
    eio_apply_after_journal => fp::APPLY_AFTER_JOURNAL,
    eio_apply_after_stage => fp::APPLY_AFTER_STAGE,
    eio_apply_after_swap => fp::APPLY_AFTER_SWAP,
    eio_apply_after_backup => fp::APPLY_AFTER_BACKUP,
    eio_apply_before_sync => fp::APPLY_BEFORE_SYNC,
    eio_apply_before_commit => fp::APPLY_BEFORE_COMMIT,
    eio_apply_after_commit => fp::APPLY_AFTER_COMMIT,
    eio_rollback_after_journal => fp::ROLLBACK_AFTER_JOURNAL,
    eio_undo_after_swap => fp::UNDO_AFTER_SWAP,
    eio_undo_after_dispose => fp::UNDO_AFTER_DISPOSE,
    eio_rollback_before_commit => fp::ROLLBACK_BEFORE_COMMIT,
    eio_recovery_before_clear => fp::RECOVERY_BEFORE_CLEAR,
}
