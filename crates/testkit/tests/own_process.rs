//! T6: failpoint configuration (per process in the `fail` crate) is only ever set in
//! a process that runs one test. `in_own_process` provides that process under
//! `cargo test` and nextest alike; these tests check it cannot pass by accident, and
//! that no source arms a failpoint any other way.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::path::{Path, PathBuf};
use switchyard::failpoints as fp;
use switchyard_testkit::{in_own_process, Fixture, OWN_PROCESS_ENV};

fn in_child() -> bool {
    std::env::var_os(OWN_PROCESS_ENV).is_some()
}

fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default()
}

#[test]
fn the_body_runs_in_a_child_running_only_this_test_t6() {
    let parent_env = std::env::var(OWN_PROCESS_ENV);
    in_own_process(|fps| {
        assert_eq!(
            std::env::var(OWN_PROCESS_ENV).as_deref(),
            Ok("the_body_runs_in_a_child_running_only_this_test_t6"),
            "the body runs only in the marked child"
        );
        // A failpoint armed here is live in this process (EIO at the first hit).
        fps.cfg(fp::APPLY_AFTER_JOURNAL, "return");
        let f = Fixture::new();
        let (sy, _) = f.engine();
        let before = f.tree();
        let plan = sy.plan(&switchyard_testkit::standard_input()).unwrap();
        let err = sy.apply(&plan, switchyard::ApplyMode::Commit).unwrap_err();
        assert_eq!(err.errno(), Some(5), "{err}");
        assert_eq!(f.tree(), before);
    });
    // The same function runs in the parent (without the marker) and in the child.
    assert_eq!(parent_env.is_ok(), in_child());
}

#[test]
fn a_child_that_never_finishes_its_body_fails_the_parent_t6() {
    let r = std::panic::catch_unwind(|| {
        in_own_process(|_| panic!("deliberate panic in the child"));
    });
    let msg = panic_text(r.unwrap_err());
    if in_child() {
        // Here the body's own panic was caught: this child passes, without having
        // finished the body, which the parent must notice.
        assert_eq!(msg, "deliberate panic in the child");
    } else {
        assert!(
            msg.contains("in its own process exited 0 but never finished its body"),
            "{msg}"
        );
        assert!(msg.contains("deliberate panic in the child"), "{msg}");
    }
}

#[test]
fn a_child_that_fails_fails_the_parent_t6() {
    let r = std::panic::catch_unwind(|| {
        in_own_process(|_| std::process::exit(3));
    });
    // Only the parent gets here: the child exited inside the body.
    assert!(!in_child());
    let msg = panic_text(r.unwrap_err());
    assert!(
        msg.contains("in its own process failed (exit status: 3)"),
        "{msg}"
    );
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// T6: no source in the workspace arms, lists or removes a failpoint except through
/// `switchyard_testkit::Failpoints` (only handed out by `in_own_process`) and the
/// crash child (a process per scenario). Product code only passes failpoints
/// (`fail_point!` in the catalog).
#[test]
fn failpoints_are_configured_only_in_a_process_of_their_own_t6() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    rust_files(&crates, &mut files);
    // Built here so this file does not match itself.
    let path_of_crate = ["fail", "::"].concat();
    let use_crate = ["use", "fail"].concat();
    let extern_crate = ["externcrate", "fail"].concat();
    let mut in_failpoints_impl = 0;
    for p in &files {
        let rel = p
            .strip_prefix(&crates)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let text = std::fs::read_to_string(p).unwrap();
        let mut in_impl = false;
        for (i, line) in text.lines().enumerate() {
            if rel == "testkit/src/lib.rs" {
                if line == "impl Failpoints {" {
                    in_impl = true;
                } else if in_impl && line == "}" {
                    in_impl = false;
                }
            }
            let code = line.split("//").next().unwrap_or_default();
            let squashed: String = code.split_whitespace().collect();
            let names_crate = squashed.match_indices(&path_of_crate).any(|(at, _)| {
                !squashed[..at]
                    .chars()
                    .next_back()
                    .is_some_and(|c| c.is_alphanumeric() || c == '_')
            }) || squashed.starts_with(&format!("{use_crate}::"))
                || squashed.starts_with(&format!("{use_crate};"))
                || squashed.starts_with(&format!("{use_crate}as"))
                || squashed.starts_with(&extern_crate);
            if !names_crate {
                continue;
            }
            let allowed = match rel.as_str() {
                "testkit/src/lib.rs" if in_impl => {
                    in_failpoints_impl += 1;
                    true
                }
                // One scenario per process by construction.
                "testkit/src/bin/crashchild.rs" => true,
                "switchyard/src/failpoints.rs" => squashed.contains("fail_point!"),
                _ => false,
            };
            assert!(
                allowed,
                "{rel}:{}: configures failpoints outside `in_own_process` (T6): {line}",
                i + 1
            );
        }
    }
    assert!(files.len() > 30, "scanned only {} files", files.len());
    assert_eq!(
        in_failpoints_impl, 3,
        "Failpoints wraps cfg, cfg_callback, remove"
    );
}
