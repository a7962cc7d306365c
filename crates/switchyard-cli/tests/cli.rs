//! Black-box tests of every command of the `switchyard` binary: flags, exit codes
//! and `--json` shapes (both in `docs/GUARANTEES.md`). Each test has its own temp root.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;
use common::*;
use serde_json::Value;
use std::collections::BTreeSet;

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

fn has_keys(v: &Value, want: &[&str]) {
    let k = keys(v);
    for w in want {
        assert!(k.contains(*w), "missing key {w:?} in {v}");
    }
}

fn standard(sb: &Sandbox) -> String {
    sb.manifest("m.toml", dev_manifest(STANDARD_LINKS))
        .display()
        .to_string()
}

/// Applies the standard manifest; returns its JSON.
fn commit(sb: &Sandbox, m: &str) -> Value {
    let r = sb.run(&["--json", "apply", m, "--commit"]);
    r.expect(0);
    r.json()
}

fn assert_applied(sb: &Sandbox) {
    let t = sb.tree();
    for (name, dest) in [
        ("ls", "../lib/alt/ls"),
        ("cat", "../lib/alt/cat"),
        ("new", "../lib/alt/new"),
    ] {
        let e = t.get(&format!("usr/bin/{name}"));
        assert_eq!(e.kind, "symlink", "usr/bin/{name}");
        assert_eq!(e.link_dest.as_deref(), Some(dest));
    }
}

#[test]
fn help_is_the_manual_and_exits_0() {
    let r = run(&["--help".into()], &[]);
    r.expect(0);
    for s in [
        "MANIFEST",
        "[[link_dir]]",
        "EXIT CODES",
        "E_RECOVERY",
        "--state-dir",
        "demo",
    ] {
        assert!(r.stdout.contains(s), "--help lacks {s}");
    }
    for cmd in [
        "plan",
        "preflight",
        "apply",
        "rollback",
        "status",
        "recover",
        "doctor",
        "demo",
        "completions",
    ] {
        run(&[cmd.into(), "--help".into()], &[]).expect(0);
    }
    run(&["--version".into()], &[]).expect(0);
}

#[test]
fn completions_for_each_shell() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let r = run(&["completions".into(), shell.into()], &[]);
        r.expect(0);
        assert!(r.stdout.contains("switchyard"), "{shell}");
    }
}

#[test]
fn plan_json_shape_and_deterministic_ids_d1() {
    let a = Sandbox::new();
    let b = Sandbox::new();
    let before = a.snapshot();
    let ra = a.run(&["--json", "plan", &standard(&a)]);
    ra.expect(0);
    let rb = b.run(&["--json", "plan", &standard(&b)]);
    let (ja, jb) = (ra.json(), rb.json());
    assert_eq!(keys(&ja), ["actions", "plan_id"].map(String::from).into());
    assert_eq!(ja, jb, "same manifest, same plan on another root (D1)");
    let acts = ja["actions"].as_array().unwrap();
    assert_eq!(acts.len(), 3);
    for a in acts {
        assert_eq!(
            keys(a),
            ["action_id", "kind", "source", "target"]
                .map(String::from)
                .into()
        );
        assert_eq!(a["kind"], "link");
    }
    let targets: Vec<_> = acts.iter().map(|a| a["target"].as_str().unwrap()).collect();
    assert_eq!(targets, ["usr/bin/cat", "usr/bin/ls", "usr/bin/new"]);
    assert_eq!(a.snapshot(), before, "plan never mutates");
}

#[test]
fn names_cannot_spoof_the_terminal_s10() {
    // A name in both directories that retitles the window, rings the bell and clears
    // the screen; and one with a right-to-left override.
    let sb = Sandbox::new();
    let evil = "x\u{1b}]0;PWNED\u{7}\u{1b}[2J";
    let rtl = "y\u{202e}exe.txt";
    for n in [evil, rtl] {
        sb.write(&format!("usr/bin/{n}"), b"#!/bin/sh\n", 0o755);
        sb.write(&format!("usr/lib/alt/{n}"), b"#!/bin/sh\n", 0o755);
    }
    let m = sb.manifest(
        "m.toml",
        dev_manifest("[[link_dir]]\ntargets = \"usr/bin\"\nsources = \"usr/lib/alt\"\n"),
    );
    let m = m.display().to_string();
    let shown_evil = "x\\u{1b}]0;PWNED\\u{7}\\u{1b}[2J";
    let shown_rtl = "y\\u{202e}exe.txt";
    for args in [
        vec!["plan", m.as_str()],
        vec!["preflight", m.as_str()],
        vec!["apply", m.as_str()],
        vec!["apply", m.as_str(), "--commit"],
        vec!["status"],
        vec!["rollback", "--last"],
    ] {
        let r = sb.run(&args);
        r.expect(0);
        assert!(
            !r.stdout.contains('\u{1b}')
                && !r.stdout.contains('\u{7}')
                && !r.stdout.contains('\u{202e}'),
            "{args:?} printed a raw control character: {:?}",
            r.stdout
        );
        assert!(
            r.stdout.contains(shown_evil) && r.stdout.contains(shown_rtl),
            "{args:?} does not show the names escaped: {}",
            r.stdout
        );
    }
    // JSON keeps every name exactly.
    let j = sb.run(&["--json", "status"]).json();
    let paths: Vec<&str> = j["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["path"].as_str().unwrap())
        .collect();
    assert!(
        paths.contains(&format!("usr/bin/{evil}").as_str()),
        "{paths:?}"
    );
    assert!(
        paths.contains(&format!("usr/bin/{rtl}").as_str()),
        "{paths:?}"
    );
}

#[test]
fn link_dir_expands_to_names_present_in_both() {
    let sb = Sandbox::new();
    let m = sb.manifest(
        "m.toml",
        dev_manifest("[[link_dir]]\ntargets = \"usr/bin\"\nsources = \"/usr/lib/alt/\"\n"),
    );
    let r = sb.run(&["--json", "plan", &m.display().to_string()]);
    r.expect(0);
    let j = r.json();
    let pairs: Vec<(String, String)> = j["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["target"].as_str().unwrap().to_owned(),
                a["source"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    // `new` is only in the sources, `gnu-cat`/`true` only in the targets.
    assert_eq!(
        pairs,
        [
            ("usr/bin/cat".into(), "usr/lib/alt/cat".into()),
            ("usr/bin/ls".into(), "usr/lib/alt/ls".into()),
        ]
    );
    // After a commit the names are still there: re-applying is a no-op (D3), and the
    // hidden backups are not mistaken for names.
    let c = commit(&sb, &m.display().to_string());
    assert_eq!(c["changed"], true);
    let again = commit(&sb, &m.display().to_string());
    assert_eq!(again["changed"], false);
}

#[test]
fn preflight_table_json_and_exit_10_on_stop() {
    let sb = Sandbox::new();
    let ok = sb.run(&["--json", "preflight", &standard(&sb)]);
    ok.expect(0);
    let j = ok.json();
    has_keys(&j, &["plan_id", "ok", "exit_code", "error_id", "rows"]);
    assert_eq!(j["ok"], true);
    assert!(j["error_id"].is_null());
    for row in j["rows"].as_array().unwrap() {
        has_keys(
            row,
            &[
                "path",
                "action_id",
                "kind",
                "current_kind",
                "planned_kind",
                "verdict",
                "notes",
            ],
        );
        assert_eq!(row["verdict"], "ok");
    }
    let m = sb.manifest(
        "stop.toml",
        dev_manifest(&format!(
            "{STANDARD_LINKS}[[link]]\ntarget = \"etc/x\"\nsource = \"usr/lib/alt/ls\"\n"
        )),
    );
    let before = sb.snapshot();
    let stop = sb.run(&["--json", "preflight", &m.display().to_string()]);
    stop.expect(10);
    let j = stop.json();
    assert_eq!(j["ok"], false);
    assert_eq!(j["error_id"], "E_POLICY");
    assert_eq!(j["exit_code"], 10);
    let stops: Vec<_> = j["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["verdict"] == "stop")
        .collect();
    assert_eq!(stops.len(), 1);
    assert_eq!(stops[0]["path"], "etc/x");
    let human = sb.run(&["preflight", &m.display().to_string()]);
    human.expect(10);
    assert!(human.stdout.contains("STOP"));
    assert!(human.stdout.contains("not under any allow_roots entry"));
    assert_eq!(human.stderr.lines().count(), 1);
    assert_eq!(sb.snapshot(), before, "preflight never mutates");
}

#[test]
fn apply_is_dry_run_by_default_d2() {
    let sb = Sandbox::new();
    let before = sb.snapshot();
    let r = sb.run(&["--json", "apply", &standard(&sb)]);
    r.expect(0);
    let j = r.json();
    has_keys(
        &j,
        &[
            "run_id",
            "plan_id",
            "changed",
            "exit_code",
            "error_id",
            "facts",
            "actions",
        ],
    );
    assert_eq!(j["dry_run"], true);
    assert_eq!(j["changed"], true);
    assert!(j["facts"].is_null(), "dry-runs write no facts file");
    assert!(j["error_id"].is_null());
    assert_eq!(sb.snapshot(), before, "a dry-run changes nothing (D2)");
    let human = sb.run(&["apply", &standard(&sb)]);
    human.expect(0);
    assert!(human.stdout.contains("would change"));
    assert!(human.stdout.contains("--commit"));
}

#[test]
fn apply_commit_json_facts_and_idempotence_d3() {
    let sb = Sandbox::new();
    let m = standard(&sb);
    let j = commit(&sb, &m);
    assert_eq!(j["changed"], true);
    assert_eq!(j["exit_code"], 0);
    assert!(j["error_id"].is_null());
    assert_eq!(j["dry_run"], false);
    let run_id = j["run_id"].as_str().unwrap();
    let facts = std::path::PathBuf::from(j["facts"].as_str().unwrap());
    assert_eq!(
        facts,
        sb.state().join("runs").join(run_id).join("facts.jsonl")
    );
    let text = std::fs::read_to_string(&facts).unwrap();
    assert!(text.lines().count() >= 4);
    for l in text.lines() {
        let f: Value = serde_json::from_str(l).unwrap();
        assert_eq!(f["run_id"], run_id);
    }
    let acts = j["actions"].as_array().unwrap();
    assert_eq!(acts.len(), 3);
    for a in acts {
        has_keys(
            a,
            &[
                "action_id",
                "kind",
                "target",
                "before_kind",
                "after_kind",
                "before_hash",
                "after_hash",
                "backup",
                "noop",
            ],
        );
    }
    assert_applied(&sb);
    // D3: the same manifest again changes nothing and exits 0.
    let again = commit(&sb, &m);
    assert_eq!(again["changed"], false);
    assert!(again["facts"].is_string());
    let human = sb.run(&["apply", &m, "--commit"]);
    human.expect(0);
    assert!(human.stdout.contains("already in effect"));
}

#[test]
fn status_json_and_human_after_apply() {
    let sb = Sandbox::new();
    let empty = sb.run(&["--json", "status"]);
    empty.expect(0);
    let j = empty.json();
    assert_eq!(j["targets"], serde_json::json!([]));
    assert_eq!(j["pending_journal"], false);
    assert!(!sb.state().exists(), "status does not create the state dir");

    let run_id = commit(&sb, &standard(&sb))["run_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = sb.run(&["--json", "status"]);
    r.expect(0);
    let j = r.json();
    has_keys(&j, &["targets", "pending_journal"]);
    let ts = j["targets"].as_array().unwrap();
    assert_eq!(ts.len(), 3);
    for t in ts {
        assert_eq!(
            keys(t),
            [
                "backup",
                "backup_current",
                "kind",
                "link_dest",
                "package",
                "path",
                "rolling_back",
                "run_id",
                "state",
                "version"
            ]
            .map(String::from)
            .into()
        );
        assert_eq!(t["run_id"], run_id.as_str());
        assert_eq!(t["kind"], "symlink");
        assert_eq!(t["state"], "in_effect", "M4");
        assert!(t["rolling_back"].is_null(), "R8: no rollback pending");
    }
    let ls = ts.iter().find(|t| t["path"] == "usr/bin/ls").unwrap();
    assert_eq!(ls["link_dest"], "../lib/alt/ls");
    let backup = ls["backup"].as_str().unwrap();
    assert!(backup.starts_with(".switchyard/"), "R6/S8 store: {backup}");
    assert!(sb.host("usr/bin").join(backup).exists());
    let new = ts.iter().find(|t| t["path"] == "usr/bin/new").unwrap();
    assert!(new["backup"].is_null(), "an absent target has no backup");
    let human = sb.run(&["status"]);
    human.expect(0);
    assert!(human.stdout.contains("usr/bin/ls"));
    assert!(human.stdout.contains(&run_id));
    assert!(human.stdout.contains("pending journal: no"));
}

#[test]
fn rollback_by_id_restores_exactly_and_is_idempotent_r2_r3_r7() {
    let sb = Sandbox::new();
    let before = sb.tree();
    let run_id = commit(&sb, &standard(&sb))["run_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Dry-run first: nothing changes.
    let applied = sb.snapshot();
    let dry = sb.run(&["--json", "rollback", &run_id]);
    dry.expect(0);
    let j = dry.json();
    has_keys(
        &j,
        &[
            "run_id",
            "plan_id",
            "changed",
            "exit_code",
            "error_id",
            "facts",
            "actions",
        ],
    );
    assert_eq!(j["dry_run"], true);
    assert!(j["facts"].is_null());
    assert_eq!(j["target_run_id"], run_id.as_str());
    assert_eq!(j["actions"].as_array().unwrap().len(), 3);
    assert_eq!(sb.snapshot(), applied);

    let r = sb.run(&["--json", "rollback", &run_id, "--commit"]);
    r.expect(0);
    let j = r.json();
    assert_eq!(j["changed"], true);
    assert_eq!(j["idempotent_noop"], false);
    assert!(j["plan_id"].is_string());
    assert!(std::path::Path::new(j["facts"].as_str().unwrap()).is_file());
    assert_eq!(sb.tree(), before, "R2/R6: the exact prior tree, no litter");

    let again = sb.run(&["--json", "rollback", &run_id, "--commit"]);
    again.expect(0);
    let j = again.json();
    assert_eq!(j["changed"], false);
    assert_eq!(j["idempotent_noop"], true, "R3");
    assert_eq!(sb.tree(), before);
    let human = sb.run(&["rollback", &run_id, "--commit"]);
    human.expect(0);
    assert!(human.stdout.contains("nothing left to undo"));
}

/// M6: `usr/bin/editor -> /etc/alternatives/editor -> /usr/bin/vim.basic` stops
/// `preflight` and `apply --commit` with exit 10 and a reason naming
/// `update-alternatives --set`; with `allow_alternatives_takeover = true` in the
/// manifest it applies, and rollback puts the alternatives symlink back exactly.
#[test]
fn alternatives_target_exits_10_unless_the_manifest_allows_takeover_m6() {
    let sb = Sandbox::new();
    sb.write("usr/bin/vim.basic", b"#!/bin/sh\necho vim\n", 0o755);
    sb.write("usr/lib/alt/editor", b"#!/bin/sh\necho alt-editor\n", 0o755);
    std::fs::create_dir_all(sb.host("etc/alternatives")).unwrap();
    std::os::unix::fs::symlink("/usr/bin/vim.basic", sb.host("etc/alternatives/editor")).unwrap();
    std::os::unix::fs::symlink("/etc/alternatives/editor", sb.host("usr/bin/editor")).unwrap();
    let link = "[[link]]\ntarget = \"usr/bin/editor\"\nsource = \"usr/lib/alt/editor\"\n";
    let m = sb.manifest("m.toml", dev_manifest(link));
    let m = m.display().to_string();
    let before = sb.snapshot();

    let pre = sb.run(&["preflight", &m]);
    pre.expect(10);
    assert!(pre.stdout.contains("STOP"), "{}", pre.stdout);
    let reason = "usr/bin/editor is managed by update-alternatives (etc/alternatives/editor); \
                  use `update-alternatives --set editor <path>` or allow takeover with policy \
                  `allow_alternatives_takeover`";
    assert!(pre.stderr.contains(reason), "{}", pre.stderr);
    assert_eq!(pre.stderr.lines().count(), 1, "{}", pre.stderr);
    let json = sb.run(&["--json", "preflight", &m]);
    json.expect(10);
    assert_eq!(json.json()["error_id"], "E_POLICY");
    let apply = sb.run(&["apply", &m, "--commit"]);
    apply.expect(10);
    assert!(apply.stderr.contains("update-alternatives --set editor"));
    assert_eq!(sb.snapshot(), before, "a stopped preflight changes nothing");

    let tree = sb.tree();
    let allow = sb.manifest(
        "allow.toml",
        dev_manifest(&format!("allow_alternatives_takeover = true\n{link}")),
    );
    let allow = allow.display().to_string();
    sb.run(&["preflight", &allow]).expect(0);
    let j = commit(&sb, &allow);
    assert_eq!(j["changed"], true);
    assert_eq!(
        std::fs::read_link(sb.host("usr/bin/editor")).unwrap(),
        std::path::Path::new("../lib/alt/editor")
    );
    sb.run(&["rollback", "--last", "--commit"]).expect(0);
    assert_eq!(
        sb.tree(),
        tree,
        "R2: usr/bin/editor -> /etc/alternatives/editor again"
    );
}

#[test]
fn rollback_last_and_unknown_run() {
    let sb = Sandbox::new();
    let before = sb.tree();
    commit(&sb, &standard(&sb));
    let r = sb.run(&["rollback", "--last", "--commit"]);
    r.expect(0);
    assert!(r.stdout.contains("3 targets restored"));
    assert_eq!(sb.tree(), before);
    let unknown = sb.run(&[
        "--json",
        "rollback",
        "01a20142-3a8a-7419-a14f-be09b3104dca",
        "--commit",
    ]);
    unknown.expect(60);
    let j = unknown.json();
    assert_eq!(j["error_id"], "E_BACKUP_MISSING");
    assert_eq!(j["exit_code"], 60);
    assert_eq!(unknown.stderr.lines().count(), 1);
    // A failed rollback's document keeps every key of a rollback document, the
    // selector included even when it is `--last` (null).
    let none_left = sb.run(&["--json", "rollback", "--last", "--commit"]);
    none_left.expect(60);
    let j = none_left.json();
    has_keys(
        &j,
        &[
            "run_id",
            "plan_id",
            "target_run_id",
            "dry_run",
            "changed",
            "idempotent_noop",
            "facts",
            "actions",
            "exit_code",
            "error_id",
            "summary_error_ids",
            "message",
            "remediation",
        ],
    );
    assert!(j["target_run_id"].is_null());
}

#[test]
fn restore_puts_back_the_backup() {
    let sb = Sandbox::new();
    let before = sb.tree();
    commit(&sb, &standard(&sb));
    let m = sb.manifest(
        "restore.toml",
        dev_manifest("[[restore]]\ntarget = \"usr/bin/ls\"\n"),
    );
    let j = commit(&sb, &m.display().to_string());
    assert_eq!(j["changed"], true);
    assert_eq!(j["actions"][0]["kind"], "restore");
    let t = sb.tree();
    assert_eq!(t.get("usr/bin/ls"), before.get("usr/bin/ls"));
}

#[test]
fn quiet_prints_nothing_on_success_but_errors_still_show() {
    let sb = Sandbox::new();
    let m = standard(&sb);
    for args in [
        vec!["--quiet", "plan", &m],
        vec!["--quiet", "preflight", &m],
        vec!["-q", "apply", &m, "--commit"],
        vec!["--quiet", "status"],
        vec!["--quiet", "rollback", "--last"],
        vec!["--quiet", "recover"],
        vec!["--quiet", "doctor"],
    ] {
        let r = sb.run(&args);
        r.expect(0);
        assert_eq!(r.stdout, "", "{args:?}");
        assert_eq!(r.stderr, "", "{args:?}");
    }
    assert_applied(&sb);
    let bad = sb.manifest("bad.toml", "preset = 1\n");
    let r = sb.run(&["--quiet", "plan", &bad.display().to_string()]);
    r.expect(2);
    assert_eq!(r.stdout, "");
    assert_eq!(r.stderr.lines().count(), 1);
}

#[test]
fn colour_only_when_asked_and_never_with_no_color() {
    let sb = Sandbox::new();
    let m = standard(&sb);
    // Not a terminal: no colour by default.
    let plain = sb.run(&["preflight", &m]);
    assert!(!plain.stdout.contains('\x1b'));
    let forced = sb.run(&["--color", "always", "preflight", &m]);
    assert!(forced.stdout.contains("\x1b["), "{}", forced.stdout);
    let no_color = sb.run_env(
        &["--color", "always", "preflight", &m],
        &[("NO_COLOR", "1")],
    );
    assert!(!no_color.stdout.contains('\x1b'));
    let bad = sb.manifest("bad.toml", "preset = 1\n");
    let err = sb.run_env(
        &["--color", "always", "plan", &bad.display().to_string()],
        &[("NO_COLOR", "1")],
    );
    assert!(!err.stderr.contains('\x1b'));
}

#[test]
fn smoke_failure_rolls_back_and_exits_80_h3() {
    let sb = Sandbox::new();
    let before = sb.tree();
    let m = sb.manifest(
        "m.toml",
        dev_manifest(&format!(
            "{STANDARD_LINKS}[[smoke.check]]\nargv = [\"usr/bin/ls\"]\nexpect_stdout = \"gnu-ls\"\ntimeout_ms = 5000\n"
        )),
    );
    let r = sb.run(&["--json", "apply", &m.display().to_string(), "--commit"]);
    r.expect(80);
    let j = r.json();
    assert_eq!(j["error_id"], "E_SMOKE");
    assert_eq!(j["exit_code"], 80);
    assert_eq!(j["changed"], false);
    assert!(j["run_id"].is_string());
    let facts = j["facts"]
        .as_str()
        .expect("a failed commit keeps its facts");
    // The run's facts hold the failed check itself (H4), even though it was undone.
    let smoke: Vec<Value> = std::fs::read_to_string(facts)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|f| f["event"] == "smoke")
        .collect();
    assert_eq!(smoke.len(), 1, "{smoke:?}");
    assert_eq!(smoke[0]["decision"], "failure", "{smoke:?}");
    assert_eq!(smoke[0]["error_id"], "E_SMOKE", "{smoke:?}");
    assert!(
        smoke[0]["check"].as_str().unwrap().contains("usr/bin/ls"),
        "{smoke:?}"
    );
    assert!(r.stderr.contains("stdout does not contain \"gnu-ls\""));
    assert_eq!(sb.tree(), before, "H3: rolled back");
    assert_eq!(r.stderr.lines().count(), 1);
}

#[test]
fn smoke_check_argv0_is_resolved_inside_the_root() {
    let sb = Sandbox::new();
    let m = sb.manifest(
        "m.toml",
        dev_manifest(&format!(
            "{STANDARD_LINKS}[smoke]\ngeneric = false\n[[smoke.check]]\nargv = [\"usr/bin/ls\"]\nexpect_stdout = \"alt-ls\"\n"
        )),
    );
    let j = commit(&sb, &m.display().to_string());
    assert_eq!(j["changed"], true);
    assert_applied(&sb);
}

#[test]
fn production_preset_needs_smoke_checks_h6() {
    let sb = Sandbox::new();
    let m = sb.manifest(
        "m.toml",
        format!("preset = \"production\"\n[policy]\nstrict_source_ownership = false\n{STANDARD_LINKS}[[smoke.check]]\nargv = [\"usr/bin/ls\"]\nexpect_stdout = \"alt-ls\"\n"),
    );
    let j = commit(&sb, &m.display().to_string());
    assert_eq!(j["changed"], true);
}

/// The lock is held through an open file description of this process. Under `cargo
/// test` any sibling test thread's `Command::spawn` duplicates it into a child until
/// that child execs (O_CLOEXEC acts only at exec), so `flock` can still be held after
/// `drop(lock)` and doctor then says `held`: the test runs alone in its own process
/// (T2, T6).
#[test]
fn lock_held_gives_e_locking_30_and_doctor_names_the_holder_l2() {
    switchyard_testkit::in_own_process(|_| {
        let sb = Sandbox::new();
        std::fs::create_dir_all(sb.state()).unwrap();
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(sb.state().join("lock"))
            .unwrap();
        lock.lock().unwrap();
        std::fs::write(sb.state().join("lock"), format!("{}\n", std::process::id())).unwrap();
        let m = sb.manifest(
            "m.toml",
            format!(
                "preset = \"dev\"\n[policy]\nallow_roots = [\"usr/bin\"]\nlock_timeout_ms = 100\n{STANDARD_LINKS}"
            ),
        );
        let before = sb.tree();
        let r = sb.run(&["--json", "apply", &m.display().to_string(), "--commit"]);
        r.expect(30);
        assert_eq!(r.json()["error_id"], "E_LOCKING");
        assert!(r.stderr.contains("lock not acquired"));
        assert_eq!(sb.tree(), before);

        let d = sb.run(&["--json", "doctor"]);
        d.expect(0);
        let j = d.json();
        assert_eq!(j["lock"]["state"], "held");
        assert_eq!(j["lock"]["pid"], std::process::id());
        let human = sb.run(&["doctor"]);
        assert!(human
            .stdout
            .contains(&format!("held by pid {}", std::process::id())));
        drop(lock);
        let j = sb.run(&["--json", "doctor"]).json();
        assert_eq!(j["lock"]["state"], "free");
    });
}

/// Turns a committed apply run into an interrupted one: its record is removed and
/// its journal put back, as if the process died after the swaps (A3).
fn interrupt(sb: &Sandbox, run_id: &str) {
    let run_dir = sb.state().join("runs").join(run_id);
    let mut rec: Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("record.json")).unwrap())
            .unwrap();
    rec["status"] = "pending".into();
    std::fs::create_dir_all(sb.state().join("journal")).unwrap();
    std::fs::write(
        sb.state().join("journal").join(format!("{run_id}.json")),
        serde_json::to_vec_pretty(&rec).unwrap(),
    )
    .unwrap();
    std::fs::remove_dir_all(run_dir).unwrap();
}

#[test]
fn doctor_and_recover_settle_an_interrupted_run_a3() {
    let sb = Sandbox::new();
    let before = sb.tree();
    let healthy = sb.run(&["--json", "doctor"]);
    healthy.expect(0);
    assert_eq!(healthy.json()["state_dir"]["exists"], false);
    assert!(!sb.state().exists(), "doctor never creates the state dir");

    let run_id = commit(&sb, &standard(&sb))["run_id"]
        .as_str()
        .unwrap()
        .to_owned();
    sb.run(&["doctor"]).expect(0);
    interrupt(&sb, &run_id);

    let d = sb.run(&["--json", "doctor"]);
    d.expect(90);
    let j = d.json();
    assert_eq!(j["error_id"], "E_RECOVERY");
    assert_eq!(j["pending_journals"][0]["run_id"], run_id.as_str());
    assert_eq!(j["recover"][0]["outcome"], "undone");
    let human = sb.run(&["doctor"]);
    human.expect(90);
    assert!(human.stdout.contains("FIX"));
    assert!(human.stdout.contains(&format!("undo run {run_id}")));
    assert_eq!(human.stderr.lines().count(), 1);

    let st = sb.run(&["--json", "status"]).json();
    assert_eq!(st["pending_journal"], true);

    let dry = sb.run(&["--json", "recover"]);
    dry.expect(0);
    let j = dry.json();
    assert_eq!(j["dry_run"], true);
    assert_eq!(j["actions"][0]["run_id"], run_id.as_str());
    assert_eq!(j["actions"][0]["outcome"], "undone");
    assert_applied(&sb);

    let r = sb.run(&["--json", "recover", "--commit"]);
    r.expect(0);
    let j = r.json();
    has_keys(
        &j,
        &[
            "run_id",
            "plan_id",
            "changed",
            "exit_code",
            "error_id",
            "facts",
            "actions",
        ],
    );
    assert_eq!(j["changed"], true);
    assert!(std::path::Path::new(j["facts"].as_str().unwrap()).is_file());
    assert_eq!(sb.tree(), before, "A3: the pre-plan state");
    sb.run(&["doctor"]).expect(0);
    let again = sb.run(&["recover", "--commit"]);
    again.expect(0);
    assert!(again.stdout.contains("nothing to recover"));
}

#[test]
fn a_mutating_command_recovers_first_a3() {
    let sb = Sandbox::new();
    let m = standard(&sb);
    let run_id = commit(&sb, &m)["run_id"].as_str().unwrap().to_owned();
    interrupt(&sb, &run_id);
    // apply --commit settles the interrupted run, then applies again.
    let j = commit(&sb, &m);
    assert_eq!(j["changed"], true);
    assert_applied(&sb);
    assert_eq!(
        sb.run(&["--json", "status"]).json()["pending_journal"],
        false
    );
}

#[test]
fn state_dir_outside_the_root() {
    let sb = Sandbox::new();
    let state = sb.base.join("state");
    let s = state.display().to_string();
    let m = standard(&sb);
    let r = sb.run(&["--state-dir", &s, "--json", "apply", &m, "--commit"]);
    r.expect(0);
    let facts = r.json()["facts"].as_str().unwrap().to_owned();
    assert!(facts.starts_with(&s), "{facts}");
    assert!(!sb.host("var").exists());
    let st = sb.run(&["--state-dir", &s, "--json", "status"]).json();
    assert_eq!(st["targets"].as_array().unwrap().len(), 3);
    // Without --state-dir, nothing is known about that run.
    let other = sb.run(&["--json", "status"]).json();
    assert_eq!(other["targets"], serde_json::json!([]));
    sb.run(&["--state-dir", &s, "rollback", "--last", "--commit"])
        .expect(0);
}

#[test]
fn a_state_dir_with_dotdot_is_the_directory_it_names_s9() {
    // S9 (`--state-dir` host paths): `x/../state` names `state`. Creating it used to
    // drop the `..` and create `x/state`, where no later command looked: `status`
    // showed nothing managed and `rollback --last` found no run.
    let sb = Sandbox::new();
    std::fs::create_dir(sb.base.join("x")).unwrap();
    let s = sb.base.join("x/../state").display().to_string();
    let m = standard(&sb);
    sb.run(&["--state-dir", &s, "apply", &m, "--commit"])
        .expect(0);
    assert!(sb.base.join("state/runs").is_dir(), "state not at {s}");
    assert!(
        !sb.base.join("x/state").exists(),
        "state created beside {s}"
    );
    let st = sb.run(&["--state-dir", &s, "--json", "status"]).json();
    assert_eq!(st["targets"].as_array().unwrap().len(), 3);
    sb.run(&["--state-dir", &s, "rollback", "--last", "--commit"])
        .expect(0);
}

#[test]
fn root_must_exist() {
    let sb = Sandbox::new();
    let missing = sb.base.join("missing").display().to_string();
    let r = run(&["--root".into(), missing.clone(), "status".into()], &[]);
    r.expect(2);
    assert!(r.stderr.contains(&format!("--root {missing}")));
    let r = run(
        &["--root".into(), missing, "--json".into(), "status".into()],
        &[],
    );
    r.expect(2);
    assert_eq!(r.json()["error_id"], "E_USAGE");
}

#[test]
fn a_world_writable_state_dir_is_refused_and_doctor_says_why_s9() {
    use std::os::unix::fs::PermissionsExt;
    let sb = Sandbox::new();
    commit(&sb, &standard(&sb));
    std::fs::set_permissions(sb.state(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let st = sb.run(&["status"]);
    st.expect(10);
    assert!(
        st.stderr.contains("writable by group or others"),
        "{}",
        st.stderr
    );
    let r = sb.run(&["--json", "doctor"]);
    r.expect(1);
    let j = r.json();
    assert_eq!(j["error_id"], "E_GENERIC");
    assert!(j["problems"][0]
        .as_str()
        .unwrap()
        .contains("writable by group or others"));
    let human = sb.run(&["doctor"]);
    human.expect(1);
    assert!(human.stdout.contains("FIX"));
    assert_eq!(human.stderr.lines().count(), 1);
}

#[test]
fn embedder_plan_is_the_cli_plan() {
    // Library first, D1: an embedder reading the same manifest through
    // `switchyard::Manifest` gets the plan `switchyard plan` prints: same plan_id and
    // same actions (IDs, kinds, targets, sources). The manifest has [[link]],
    // [[link_dir]], [[restore]] and policy overrides; the library's own test
    // (crates/switchyard/tests/manifest.rs) pins this plan_id for the same file.
    const TEXT: &str = include_str!("../../switchyard/tests/fixtures/embedder.toml");
    let sb = Sandbox::empty();
    // The same tree as the library's test: one file per line of the fixture.
    for f in include_str!("../../switchyard/tests/fixtures/embedder.files").lines() {
        sb.write(f, b"#!/bin/sh\n", 0o755);
    }
    let path = sb.manifest("m.toml", TEXT);
    let r = sb.run(&["--json", "plan", &path.display().to_string()]);
    r.expect(0);
    let cli = r.json();

    let m = switchyard::Manifest::load(&path).unwrap();
    let sy = switchyard::Switchyard::builder(m.policy().clone())
        .root(sb.root())
        .build()
        .unwrap();
    let plan = m.plan(&sy).unwrap();
    assert_eq!(cli["plan_id"], plan.plan_id.to_string());
    assert_eq!(cli["plan_id"], "e05155bc-55d4-5e1b-84ae-f3e1ea1e26e1");
    let lib: Vec<Value> = plan
        .actions
        .iter()
        .map(|a| {
            serde_json::json!({
                "action_id": a.action_id.to_string(),
                "kind": a.kind.as_str(),
                "target": a.target.as_str(),
                "source": a.source.as_ref().map(|s| s.as_str()),
            })
        })
        .collect();
    assert_eq!(cli["actions"], Value::Array(lib));
    assert_eq!(cli["actions"].as_array().unwrap().len(), 4);
}

#[test]
fn preflight_and_apply_agree_on_a_restore_without_backup_d4_o8() {
    // D4/O8: one question, one answer. A restore with no backup stops preflight; the
    // `preflight` command and `apply` (dry-run and commit) all report the library's
    // verdict, E_BACKUP_MISSING, exit 60 (preflight used to say E_POLICY, exit 10).
    let sb = Sandbox::new();
    let m = sb
        .manifest(
            "m.toml",
            dev_manifest("[[restore]]\ntarget = \"usr/bin/ls\"\n"),
        )
        .display()
        .to_string();
    let before = sb.snapshot();
    let pre = sb.run(&["--json", "preflight", &m]);
    pre.expect(60);
    let pj = pre.json();
    assert_eq!(pj["ok"], false);
    assert_eq!(pj["error_id"], "E_BACKUP_MISSING");
    assert_eq!(pj["exit_code"], 60);
    assert!(
        pre.stderr.contains("error[E_BACKUP_MISSING]"),
        "{}",
        pre.stderr
    );
    for args in [vec!["apply", &m], vec!["apply", &m, "--commit"]] {
        let mut full = vec!["--json"];
        full.extend(args.iter().copied());
        let r = sb.run(&full);
        r.expect(pj["exit_code"].as_i64().unwrap() as i32);
        assert_eq!(r.json()["error_id"], pj["error_id"], "{args:?}");
    }
    let human = sb.run(&["preflight", &m]);
    human.expect(60);
    assert_eq!(human.stderr.lines().count(), 1);
    assert!(human
        .stderr
        .contains("preflight stopped 1 of 1 actions; first: usr/bin/ls:"));
    assert_eq!(sb.snapshot(), before, "nothing was changed");
}

/// Issue 8 #5 (L1, A4): a plan holds one descriptor per directory, not per action. A
/// 1 200-link `[[link_dir]]` applies and rolls back exactly under `prlimit --nofile=64`
/// (it stopped with "Too many open files" at the common default of 1024 before).
#[test]
fn a_large_plan_runs_at_a_small_open_file_limit() {
    let sb = Sandbox::empty();
    for i in 0..1200 {
        sb.write(&format!("usr/bin/t{i:04}"), b"#!/bin/sh\n", 0o755);
        sb.write(
            &format!("usr/lib/alt/t{i:04}"),
            b"#!/bin/sh\necho alt\n",
            0o755,
        );
    }
    let m = sb.manifest(
        "m.toml",
        dev_manifest("[[link_dir]]\ntargets = \"usr/bin\"\nsources = \"usr/lib/alt\"\n"),
    );
    let before = sb.tree();
    let limited = |args: &[&str]| {
        sb.run_limited(64, args).expect(0);
    };
    limited(&["apply", m.to_str().unwrap(), "--commit"]);
    assert_eq!(
        std::fs::read_link(sb.host("usr/bin/t0999")).unwrap(),
        std::path::Path::new("../lib/alt/t0999")
    );
    limited(&["rollback", "--last", "--commit"]);
    assert_eq!(sb.tree(), before, "R2/R6");
}

/// O10, O2: `--facts-out` writes any command's facts, dry-runs included, so a user can
/// check that a dry-run predicts its commit: the two streams are equal once redacted
/// (times, IDs and `dry_run` removed). A `--json` dry-run names the file. A path that
/// cannot be written is a usage error (exit 2) naming the option, with nothing changed.
#[test]
fn facts_out_shows_a_dry_run_predicts_its_commit_o10_o2() {
    let sb = Sandbox::new();
    let m = standard(&sb);
    let dry = sb.base.join("dry.jsonl");
    let done = sb.base.join("commit.jsonl");
    let r = sb.run(&["--facts-out", dry.to_str().unwrap(), "--json", "apply", &m]);
    r.expect(0);
    assert_eq!(
        r.json()["facts"],
        dry.display().to_string(),
        "the dry-run names its file"
    );
    sb.run(&[
        "--facts-out",
        done.to_str().unwrap(),
        "apply",
        &m,
        "--commit",
    ])
    .expect(0);
    let redacted = |p: &std::path::Path| -> Vec<Value> {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .map(|l| switchyard::facts::redact(&serde_json::from_str(l).unwrap()))
            .collect()
    };
    let (d, c) = (redacted(&dry), redacted(&done));
    assert!(
        d.len() >= 5,
        "plan, attempt, per-action and summary facts: {d:?}"
    );
    assert_eq!(d, c, "O2: the dry-run's facts predict the commit's");

    let before = sb.snapshot();
    let r = sb.run(&[
        "--facts-out",
        "/nonexistent/dir/f.jsonl",
        "apply",
        &m,
        "--commit",
    ]);
    r.expect(2);
    assert!(
        r.stderr.contains("--facts-out /nonexistent/dir/f.jsonl"),
        "{}",
        r.stderr
    );
    assert_eq!(sb.snapshot(), before, "nothing changed");
}

/// H7/H8, O6: a smoke check runs in a fixed environment — none of the caller's
/// variables (a secret in the caller's environment never reaches it), LC_ALL=C, TZ=UTC
/// and a PATH of the root's own directories.
#[test]
fn smoke_checks_run_in_a_fixed_environment_not_the_callers_h7() {
    let sb = Sandbox::new();
    let probe = r#"echo "[$SY_TEST_SECRET][$LC_ALL][$TZ][$PATH]""#;
    let m = sb.manifest(
        "m.toml",
        dev_manifest(&format!(
            "{STANDARD_LINKS}[smoke]\ngeneric = false\n[[smoke.check]]\nargv = [\"/bin/sh\", \"-c\", {probe:?}]\nexpect_stdout = \"[][C][UTC][{}/usr/local/sbin:\"\n",
            sb.root().display()
        )),
    );
    let r = sb.run_env(
        &["--json", "apply", m.to_str().unwrap(), "--commit"],
        &[
            ("SY_TEST_SECRET", "hunter2"),
            ("LC_ALL", "de_DE.UTF-8"),
            ("TZ", "Asia/Tokyo"),
        ],
    );
    r.expect(0);
    assert!(!r.stdout.contains("hunter2") && !r.stderr.contains("hunter2"));
}

/// Issue 8 #4: running out of descriptors while inspecting a plan (one per target
/// directory: 300 directories at `prlimit --nofile=64`) fails the run as what it is —
/// E_GENERIC, "Too many open files" — not as a policy verdict (exit 10), with nothing
/// changed.
#[test]
fn running_out_of_descriptors_is_reported_as_that_not_a_policy_stop() {
    let sb = Sandbox::empty();
    sb.write("usr/lib/alt/t", b"#!/bin/sh\n", 0o755);
    let mut body = String::new();
    for i in 0..300 {
        sb.write(&format!("usr/bin/d{i:03}/t"), b"#!/bin/sh\n", 0o755);
        body.push_str(&format!(
            "[[link]]\ntarget = \"usr/bin/d{i:03}/t\"\nsource = \"usr/lib/alt/t\"\n"
        ));
    }
    let m = sb.manifest("m.toml", dev_manifest(&body));
    let before = sb.snapshot();
    let r = sb.run_limited(64, &["apply", m.to_str().unwrap(), "--commit"]);
    let stderr = &r.stderr;
    assert_eq!(r.code, 1, "{stderr}");
    assert!(
        stderr.contains("Too many open files") && stderr.contains("E_GENERIC"),
        "{stderr}"
    );
    assert_eq!(sb.snapshot(), before, "nothing changed");
}

/// O9, R4, A3: a commit that runs out of file descriptors part-way — a plan over 40
/// directories at `prlimit --nofile=64` (each directory costs descriptors for itself
/// and its backup store) — fails having left nothing in effect: the tree is exactly
/// as before, no journal is pending, and `--json` says `changed: false` truthfully.
/// It used to exit 1 with "its record could not be discarded, so nothing was undone"
/// (the undo needed descriptors the failed run still held), leaving the targets it
/// had swapped in effect until a later command recovered them (at the usual limit of
/// 1024 the same happens to a plan over 300 directories).
#[test]
fn a_commit_that_runs_out_of_descriptors_leaves_nothing_in_effect_o9_r4() {
    let sb = Sandbox::empty();
    let mut body = String::new();
    for i in 0..40 {
        sb.write(&format!("usr/bin/d{i:03}/t"), b"#!/bin/sh\n", 0o755);
        sb.write(
            &format!("usr/lib/alt/d{i:03}/t"),
            b"#!/bin/sh\necho alt\n",
            0o755,
        );
        body.push_str(&format!(
            "[[link]]\ntarget = \"usr/bin/d{i:03}/t\"\nsource = \"usr/lib/alt/d{i:03}/t\"\n"
        ));
    }
    let m = sb.manifest("m.toml", dev_manifest(&body));
    let before = sb.tree();
    let r = sb.run_limited(64, &["--json", "apply", m.to_str().unwrap(), "--commit"]);
    let (out, err) = (&r.stdout, &r.stderr);
    let ctx = format!("exit {}\n{out}\n{err}", r.code);
    let doc: serde_json::Value = serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {ctx}"));
    let pending = sb.run(&["--json", "status"]).json()["pending_journal"].clone();
    if r.code == 0 {
        // Fits after all: then it must be exactly applied, and roll back exactly.
        assert_eq!(doc["changed"], true, "{ctx}");
        assert_eq!(pending, false, "{ctx}");
        sb.run(&["rollback", "--last", "--commit"]).expect(0);
    } else {
        assert_eq!(doc["changed"], false, "{ctx}");
        assert_eq!(pending, false, "a failed run leaves nothing pending: {ctx}");
    }
    assert_eq!(
        sb.tree(),
        before,
        "O9: a failed run left nothing in effect: {ctx}"
    );
}

/// R8, M4: while a rollback that could not finish is pending, `status` shows the run as
/// partly rolled back — per target, naming the pending rollback — rather than calling
/// the targets it already restored "drifted" and advising to apply the manifest again
/// (which would first have to finish that rollback); `--json` says the same
/// (`rolling_back`), and `doctor` does not advise re-applying them either.
#[test]
fn status_shows_a_partly_rolled_back_run_r8() {
    let sb = Sandbox::new();
    let m = sb.manifest("m.toml", dev_manifest(STANDARD_LINKS));
    sb.run(&["apply", m.to_str().unwrap(), "--commit"])
        .expect(0);
    // Someone else's file where our link was: the rollback refuses it and stays pending.
    std::fs::remove_file(sb.host("usr/bin/ls")).unwrap();
    sb.write("usr/bin/ls", b"someone else's", 0o755);
    let failed = sb.run(&["--json", "rollback", "--last", "--commit"]);
    failed.expect(70);
    let rb = failed.json()["run_id"].as_str().unwrap().to_owned();
    let human = sb.run(&["status"]);
    human.expect(0);
    assert!(
        !human.stdout.contains("apply its manifest again"),
        "{}",
        human.stdout
    );
    for t in ["usr/bin/ls", "usr/bin/cat", "usr/bin/new"] {
        assert!(
            human
                .stdout
                .lines()
                .any(|l| l.starts_with(&format!("{t}: partly rolled back")) && l.contains(&rb)),
            "{t}: {}",
            human.stdout
        );
    }
    let json = sb.run(&["--json", "status"]).json();
    for t in json["targets"].as_array().unwrap() {
        assert_eq!(t["rolling_back"], rb.as_str(), "{t}");
    }
    let doctor = sb.run(&["doctor"]);
    assert_ne!(doctor.code, 0);
    assert!(
        doctor.stdout.contains("partly rolled back")
            && !doctor.stdout.contains("apply the manifest again"),
        "{}",
        doctor.stdout
    );
}
