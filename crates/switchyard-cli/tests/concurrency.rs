//! L1/L4 through the CLI: concurrent `apply --commit` processes of one manifest on
//! one root serialize on the lock. Each exits 0 (applied, or found it already in
//! effect, D3) or 30 (lock not acquired in time, L2); exactly one changes anything;
//! the final tree is the applied state.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;
use common::*;
use std::process::{Command, Stdio};

#[test]
fn four_concurrent_commits_one_change_l1_l2_d3() {
    let sb = Sandbox::new();
    let m = sb
        .manifest("m.toml", dev_manifest(STANDARD_LINKS))
        .display()
        .to_string();
    let root = sb.root().display().to_string();
    let children: Vec<_> = (0..4)
        .map(|_| {
            Command::new(BIN)
                .args(["--root", &root, "--json", "apply", &m, "--commit"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut changed = 0;
    for c in children {
        let o = c.wait_with_output().unwrap();
        let code = o.status.code().unwrap();
        let stdout = String::from_utf8_lossy(&o.stdout);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(
            code == 0 || code == 30,
            "exit {code}\nstdout:\n{stdout}\nstderr:\n{stderr}"
        );
        let j: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(j["exit_code"], code);
        if code == 30 {
            assert_eq!(j["error_id"], "E_LOCKING");
        }
        if j["changed"] == true {
            changed += 1;
        }
    }
    assert_eq!(changed, 1, "exactly one run changes anything");
    let t = sb.tree();
    for name in ["ls", "cat", "new"] {
        let e = t.get(&format!("usr/bin/{name}"));
        assert_eq!(e.kind, "symlink");
        assert_eq!(
            e.link_dest.as_deref(),
            Some(format!("../lib/alt/{name}").as_str())
        );
    }
    let backups: Vec<_> =
        t.0.keys()
            .filter(|k| k.starts_with("usr/bin/.switchyard/"))
            .cloned()
            .collect();
    assert_eq!(
        backups.len(),
        2,
        "one backup each for ls and cat, none for the absent new: {backups:?}"
    );
    let st = sb.run(&["--json", "status"]).json();
    assert_eq!(st["pending_journal"], false);
    assert_eq!(st["targets"].as_array().unwrap().len(), 3);
}
