//! Golden tests of the human output of `plan`, `preflight`, `apply` and `status`
//! (compact tables, `docs/GUARANTEES.md`). Each output is compared byte-for-byte with a plain file
//! under `tests/golden/`, after replacing the temp root with `<ROOT>`, the sandbox
//! with `<BASE>` and run IDs with `<RUN_ID>`. Plan and action IDs are UUIDv5 (D1),
//! identical on every machine, so they stay.
//!
//! Regenerate after an intended change with:
//!
//!     UPDATE_GOLDENS=1 cargo nextest run -p switchyard-cli
//!
//! and review the diff of `tests/golden/` before committing it.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;
use common::*;
use std::path::PathBuf;

fn golden_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
}

fn normalize(sb: &Sandbox, s: &str, run_ids: &[&str]) -> String {
    let mut s = s
        .replace(&sb.root().display().to_string(), "<ROOT>")
        .replace(&sb.base.display().to_string(), "<BASE>");
    for id in run_ids {
        s = s.replace(id, "<RUN_ID>");
    }
    s
}

#[track_caller]
fn check(name: &str, actual: &str) {
    let p = golden_path(name);
    if std::env::var_os("UPDATE_GOLDENS").is_some() {
        // Regenerating never counts as comparing: refused in CI (T4), and the file
        // written is compared below like any other.
        assert!(
            std::env::var_os("CI").is_none(),
            "UPDATE_GOLDENS is set in CI: goldens would be rewritten, not checked (T4)"
        );
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, actual).unwrap();
    }
    let want = std::fs::read_to_string(&p).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; create it with UPDATE_GOLDENS=1 cargo nextest run -p switchyard-cli",
            p.display()
        )
    });
    assert!(
        want == actual,
        "{name} differs from the golden file (regenerate with UPDATE_GOLDENS=1 cargo nextest run -p switchyard-cli)\n--- want\n{want}--- got\n{actual}"
    );
}

fn manifest(sb: &Sandbox) -> String {
    sb.manifest("m.toml", dev_manifest(STANDARD_LINKS))
        .display()
        .to_string()
}

#[test]
fn golden_plan() {
    let sb = Sandbox::new();
    let r = sb.run(&["plan", &manifest(&sb)]);
    r.expect(0);
    assert_eq!(r.stderr, "");
    check("plan.txt", &normalize(&sb, &r.stdout, &[]));
}

#[test]
fn golden_preflight_ok() {
    let sb = Sandbox::new();
    let r = sb.run(&["preflight", &manifest(&sb)]);
    r.expect(0);
    check("preflight_ok.txt", &normalize(&sb, &r.stdout, &[]));
}

#[test]
fn golden_preflight_with_stops() {
    // Three reasons to stop: a missing source, a target outside allow_roots, a
    // symlinked parent directory (S1, S7).
    let sb = Sandbox::new();
    std::os::unix::fs::symlink("bin", sb.host("usr/sbin")).unwrap();
    let m = sb.manifest(
        "m.toml",
        format!(
            "preset = \"dev\"\n[policy]\nallow_roots = [\"usr/bin\", \"usr/sbin\"]\n{STANDARD_LINKS}\
             [[link]]\ntarget = \"usr/bin/gone\"\nsource = \"usr/lib/alt/gone\"\n\
             [[link]]\ntarget = \"etc/motd\"\nsource = \"usr/lib/alt/ls\"\n\
             [[link]]\ntarget = \"usr/sbin/ls\"\nsource = \"usr/lib/alt/ls\"\n"
        ),
    );
    let r = sb.run(&["preflight", &m.display().to_string()]);
    r.expect(10);
    check("preflight_stop.txt", &normalize(&sb, &r.stdout, &[]));
    check("preflight_stop.stderr.txt", &normalize(&sb, &r.stderr, &[]));
}

#[test]
fn golden_apply_dry_run_and_commit() {
    let sb = Sandbox::new();
    let m = manifest(&sb);
    let dry = sb.run(&["apply", &m]);
    dry.expect(0);
    check("apply_dry_run.txt", &normalize(&sb, &dry.stdout, &[]));
    let j = sb.run(&["--json", "apply", &m, "--commit"]).json();
    let run_id = j["run_id"].as_str().unwrap().to_owned();
    let again = sb.run(&["apply", &m, "--commit"]);
    again.expect(0);
    let id2 = again
        .stdout
        .split("(run ")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .unwrap()
        .to_owned();
    check(
        "apply_noop.txt",
        &normalize(&sb, &again.stdout, &[&run_id, &id2]),
    );
}

#[test]
fn golden_status() {
    let sb = Sandbox::new();
    let empty = sb.run(&["status"]);
    empty.expect(0);
    check("status_empty.txt", &normalize(&sb, &empty.stdout, &[]));
    let j = sb
        .run(&["--json", "apply", &manifest(&sb), "--commit"])
        .json();
    let run_id = j["run_id"].as_str().unwrap().to_owned();
    let r = sb.run(&["status"]);
    r.expect(0);
    check("status.txt", &normalize(&sb, &r.stdout, &[&run_id]));
}
