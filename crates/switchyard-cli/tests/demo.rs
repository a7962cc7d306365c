//! End to end: `switchyard demo` walks plan → preflight → apply → status → rollback
//! on a throwaway root, exits 0 and removes the root it printed.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;
use common::*;

#[test]
fn demo_runs_end_to_end_and_removes_its_root() {
    let r = run(&["demo".into()], &[]);
    r.expect(0);
    for step in [
        "plan",
        "preflight",
        "apply",
        "--commit",
        "status",
        "rollback",
        "facts.jsonl",
        "demo alternative ls",
        "byte for byte",
    ] {
        assert!(r.stdout.contains(step), "demo output lacks {step:?}");
    }
    let base = r
        .stdout
        .lines()
        .find_map(|l| l.split("removed the throwaway root ").nth(1))
        .expect("demo names the root it removed")
        .trim()
        .to_owned();
    assert!(base.contains("switchyard-demo."), "{base}");
    assert!(
        r.stdout
            .contains(&format!("A throwaway root at {base}/root")),
        "the removed directory is the one the demo built"
    );
    assert!(
        !std::path::Path::new(&base).exists(),
        "{base} still exists after the demo"
    );
    assert!(!r.stdout.contains('\x1b'), "no colour when not a terminal");
}

#[test]
fn demo_quiet_prints_nothing() {
    let r = run(&["--quiet".into(), "demo".into()], &[]);
    r.expect(0);
    assert_eq!(r.stdout, "");
}

#[test]
fn demo_escapes_its_temporary_directory_s10() {
    // S10: the throwaway root's name comes from TMPDIR, which can hold anything; the
    // demo printed it raw (retitling the window, ringing the bell).
    let tmp = tempfile::tempdir().unwrap();
    let evil = tmp.path().join("t\u{1b}]0;PWNED\u{7}\u{202e}");
    std::fs::create_dir(&evil).unwrap();
    let r = run(
        &["--color".into(), "never".into(), "demo".into()],
        &[("TMPDIR", evil.to_str().unwrap())],
    );
    r.expect(0);
    for c in ['\u{1b}', '\u{7}', '\u{202e}'] {
        assert!(!r.stdout.contains(c), "raw {c:?} in: {}", r.stdout);
    }
    assert!(
        r.stdout.contains("t\\u{1b}]0;PWNED\\u{7}\\u{202e}"),
        "the directory is shown escaped: {}",
        r.stdout
    );
}
