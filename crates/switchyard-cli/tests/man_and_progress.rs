//! `switchyard man`, and the progress bar's rule: only on a terminal, so a 400-action
//! run piped to a file leaves stderr empty.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

#[test]
fn man_page_is_roff_for_switchyard() {
    let out = Command::new(BIN).arg("man").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains(".TH switchyard 1"),
        "{}",
        &text[..text.len().min(300)]
    );
    assert!(text.contains("rollback"));
}

#[test]
fn long_run_without_a_terminal_has_no_progress_bar() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    for d in ["usr/bin", "usr/lib/alt"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    use std::os::unix::fs::PermissionsExt;
    for i in 0..400 {
        for (d, body) in [
            ("usr/bin", "#!/bin/sh\n"),
            ("usr/lib/alt", "#!/bin/sh\necho alt\n"),
        ] {
            let p = root.join(d).join(format!("t{i}"));
            std::fs::write(&p, body).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
    let m = dir.path().join("m.toml");
    std::fs::write(
        &m,
        "preset = \"dev\"\n[policy]\nallow_roots = [\"usr/bin\"]\n[[link_dir]]\ntargets = \"usr/bin\"\nsources = \"usr/lib/alt\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("--root")
        .arg(&root)
        .args(["apply", m.to_str().unwrap(), "--commit"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .matches("changed  link")
            .count(),
        400
    );
}
