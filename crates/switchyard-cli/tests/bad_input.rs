//! Bad input (`docs/GUARANTEES.md`: CLI contract, exit codes): every row feeds the binary
//! one bad manifest, file situation or argument list, and asserts the documented exit code (2 for
//! usage/manifest, 10 for policy, 60 for a missing backup), ONE line on stderr
//! containing the expected text (file, line:column and field where there is one),
//! and — by snapshotting the whole sandbox (root and manifests: every entry's kind,
//! bytes, mode, owner, mtime and link text, directories included) before and after —
//! that nothing changed. Manifest rows run `apply --commit`, the most dangerous
//! command; a few rows run `plan`/`preflight`/`rollback` for what only they take.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;
use common::*;

type Setup = Box<dyn Fn(&Sandbox) -> Vec<String>>;

struct Case {
    name: &'static str,
    setup: Setup,
    code: i32,
    /// Expected substring of the stderr line.
    msg: String,
    /// clap's usage errors are several lines (usage + tip); ours are one.
    one_line: bool,
}

fn s(p: &std::path::Path) -> String {
    p.display().to_string()
}

/// `apply m.toml --commit` on the raw manifest bytes.
fn raw(body: impl AsRef<[u8]> + 'static) -> Setup {
    Box::new(move |sb: &Sandbox| {
        let m = sb.manifest("m.toml", body.as_ref());
        vec!["apply".into(), s(&m), "--commit".into()]
    })
}

/// `apply m.toml --commit` on a dev manifest (allow_roots usr/bin) + `body`.
fn dev(body: impl Into<String>) -> Setup {
    raw(dev_manifest(&body.into()))
}

fn link(target: &str, source: &str) -> String {
    format!("[[link]]\ntarget = \"{target}\"\nsource = \"{source}\"\n")
}

fn case(name: &'static str, setup: Setup, code: i32, msg: impl Into<String>) -> Case {
    Case {
        name,
        setup,
        code,
        msg: msg.into(),
        one_line: true,
    }
}

fn clap_case(name: &'static str, args: &'static [&'static str], msg: &'static str) -> Case {
    Case {
        name,
        setup: Box::new(move |_| args.iter().map(|a| a.to_string()).collect()),
        code: 2,
        msg: msg.into(),
        one_line: false,
    }
}

const LS: &str = "[[link]]\ntarget = \"usr/bin/ls\"\nsource = \"usr/lib/alt/ls\"\n";

fn cases() -> Vec<Case> {
    let long_name = "x".repeat(4096);
    let long_path = "a/".repeat(2100);
    vec![
        // --- malformed TOML (exit 2, file:line:col) ---
        case("toml_unclosed_table_header", dev("[[link]\ntarget = \"a\"\n"), 2, "m.toml:4:"),
        case("toml_unterminated_string", dev("[[link]]\ntarget = \"usr/bin/ls\nsource = \"x\"\n"), 2, "m.toml:5:21: target: invalid basic string"),
        case("toml_missing_value", dev("[[link]]\ntarget =\nsource = \"x\"\n"), 2, "m.toml:5:"),
        case("toml_duplicate_key", dev("[[link]]\ntarget = \"usr/bin/ls\"\ntarget = \"usr/bin/ls\"\nsource = \"x\"\n"), 2, "m.toml:6:"),
        case("toml_literal_nul_byte", raw(b"preset = \"dev\"\n[[link]]\ntarget = \"usr/bin/l\x00s\"\nsource = \"x\"\n"), 2, "m.toml:3:"),
        case("toml_non_utf8_byte", raw(b"preset = \"dev\"\n[[link]]\ntarget = \"usr/bin/\xff\"\nsource = \"x\"\n"), 2, "m.toml:3:19: target: manifest is not valid UTF-8 (byte 0xff)"),
        // --- unknown keys (deny_unknown_fields) ---
        case("unknown_top_level_key", raw(format!("preset = \"dev\"\nbogus = 1\n{LS}")), 2, "m.toml:2:1: bogus: unknown field `bogus`"),
        case("unknown_link_key", dev("[[link]]\ntarget = \"usr/bin/ls\"\nsourc = \"usr/lib/alt/ls\"\n"), 2, "m.toml:6:1: link[0].sourc: unknown field `sourc`"),
        case("unknown_policy_key", raw(format!("preset = \"dev\"\n[policy]\nallow_root = [\"usr/bin\"]\n{LS}")), 2, "m.toml:3:1: policy.allow_root: unknown field"),
        case("unknown_smoke_key", dev(format!("{LS}[smoke]\nsuite = true\n")), 2, "smoke.suite: unknown field `suite`"),
        case("unknown_smoke_check_key", dev(format!("{LS}[[smoke.check]]\nargv = [\"usr/bin/true\"]\nexpect_stderr = \"x\"\n")), 2, "smoke.check[0].expect_stderr: unknown field"),
        case("link_from_dir_nested_form_is_unknown", dev("[[link]]\ntarget = \"usr/bin/ls\"\nsource = \"usr/lib/alt/ls\"\n[[link.from_dir]]\ntargets = \"usr/bin\"\n"), 2, "link[0].from_dir: unknown field"),
        // --- wrong types ---
        case("wrong_type_source_integer", dev("[[link]]\ntarget = \"usr/bin/ls\"\nsource = 5\n"), 2, "m.toml:6:10: link[0].source: invalid type: integer `5`, expected a string"),
        case("wrong_type_allow_roots_string", raw(format!("preset = \"dev\"\n[policy]\nallow_roots = \"usr/bin\"\n{LS}")), 2, "m.toml:3:15: policy.allow_roots: invalid type: string"),
        case("wrong_type_lock_timeout_negative", raw(format!("preset = \"dev\"\n[policy]\nlock_timeout_ms = -1\n{LS}")), 2, "policy.lock_timeout_ms: invalid value: integer `-1`"),
        case("wrong_type_bool_as_string", raw(format!("preset = \"dev\"\n[policy]\nstrict_ownership = \"yes\"\n{LS}")), 2, "policy.strict_ownership: invalid type: string"),
        case("wrong_type_link_is_table_not_array", dev("[link]\ntarget = \"usr/bin/ls\"\nsource = \"usr/lib/alt/ls\"\n"), 2, "link: invalid type"),
        case("unknown_preset", raw(format!("preset = \"devv\"\n{LS}")), 2, "m.toml:1:10: preset: unknown variant `devv`"),
        case("missing_required_source", dev("[[link]]\ntarget = \"usr/bin/ls\"\n"), 2, "missing field `source`"),
        // --- paths (S1) ---
        case("dotdot_in_target", dev("[[link]]\ntarget = \"usr/bin/../../etc/passwd\"\nsource = \"usr/lib/alt/ls\"\n"), 2, "m.toml:5:10: link[0].target: path contains a `..` component"),
        case("dotdot_in_source", dev("[[link]]\ntarget = \"usr/bin/ls\"\nsource = \"../../bin/sh\"\n"), 2, "m.toml:6:10: link[0].source: path contains a `..` component"),
        case("dotdot_in_allow_roots", raw(format!("preset = \"dev\"\n[policy]\nallow_roots = [\"usr/../etc\"]\n{LS}")), 2, "policy.allow_roots[0]: path contains a `..`"),
        case("nul_escape_in_target", dev("[[link]]\ntarget = \"usr/bin/l\\u0000s\"\nsource = \"usr/lib/alt/ls\"\n"), 2, "link[0].target: path contains a NUL byte"),
        case("name_of_4096_bytes", raw(dev_manifest(&link(&format!("usr/bin/{long_name}"), "usr/lib/alt/ls"))), 2, "link[0].target: path component is longer than 255 bytes"),
        case("path_longer_than_path_max", raw(dev_manifest(&link(&format!("usr/bin/{long_path}x"), "usr/lib/alt/ls"))), 2, "link[0].target: path is longer than 4095 bytes"),
        case("empty_target", dev("[[link]]\ntarget = \"\"\nsource = \"usr/lib/alt/ls\"\n"), 2, "link[0].target: path is empty"),
        case("target_is_the_root", dev("[[link]]\ntarget = \"/\"\nsource = \"usr/lib/alt/ls\"\n"), 2, "link[0].target: path is empty"),
        // --- plan shape ---
        case("duplicate_targets", raw(dev_manifest(&format!("{LS}{}", link("/usr/bin/ls", "usr/lib/alt/cat")))), 2, "m.toml:8:10: link[1].target: duplicate target usr/bin/ls (already link[0].target at 5:10)"),
        case("duplicate_link_and_restore", dev("[[link]]\ntarget = \"usr/bin/ls\"\nsource = \"usr/lib/alt/ls\"\n[[restore]]\ntarget = \"usr/bin/ls\"\n"), 2, "restore[0].target: duplicate target usr/bin/ls"),
        case("target_is_also_a_source", raw(dev_manifest(&format!("{}{}", link("usr/bin/ls", "usr/bin/cat"), link("usr/bin/cat", "usr/lib/alt/cat")))), 2, "link[0].source: usr/bin/cat is the source of usr/bin/ls and also a target"),
        case("self_link", raw(dev_manifest(&link("usr/bin/ls", "/usr/bin/ls"))), 2, "link[0].target: usr/bin/ls links to itself"),
        case("nothing_to_do", raw("preset = \"dev\"\n"), 2, "declares nothing to do"),
        case("max_plan_actions_exceeded", raw(format!("preset = \"dev\"\n[policy]\nallow_roots = [\"usr/bin\"]\nmax_plan_actions = 1\n{STANDARD_LINKS}")), 2, "m.toml: plan has 3 actions, more than the limit of 1"),
        case("max_plan_actions_zero", raw(format!("preset = \"dev\"\n[policy]\nmax_plan_actions = 0\n{LS}")), 2, "policy.max_plan_actions: must be at least 1"),
        // --- link_dir ---
        case("link_dir_missing_directory", dev("[[link_dir]]\ntargets = \"usr/bin\"\nsources = \"usr/lib/none\"\n"), 2, "link_dir[0].sources: cannot list directory usr/lib/none"),
        case("link_dir_empty_match_no_common_name", Box::new(|sb: &Sandbox| {
            sb.write("opt/other/zzz", b"z", 0o755);
            let m = sb.manifest("m.toml", dev_manifest("[[link_dir]]\ntargets = \"usr/bin\"\nsources = \"opt/other\"\n"));
            vec!["apply".into(), s(&m), "--commit".into()]
        }), 2, "m.toml:5:11: link_dir[0].targets: no file name is present in both usr/bin and opt/other"),
        case("link_dir_same_dir", dev("[[link_dir]]\ntargets = \"usr/bin\"\nsources = \"/usr/bin/\"\n"), 2, "link_dir[0].sources: usr/bin is also the targets directory"),
        case("link_dir_overlaps_link", dev("[[link]]\ntarget = \"usr/bin/ls\"\nsource = \"usr/lib/alt/cat\"\n[[link_dir]]\ntargets = \"usr/bin\"\nsources = \"usr/lib/alt\"\n"), 2, "link_dir[0].targets (ls): duplicate target usr/bin/ls"),
        // --- smoke ---
        case("smoke_generic_not_available", dev(format!("{LS}[smoke]\ngeneric = true\n")), 2, "m.toml:8:11: smoke.generic: the built-in generic smoke suite (H2) is not available"),
        case("smoke_empty_argv", dev(format!("{LS}[[smoke.check]]\nargv = []\n")), 2, "smoke.check[0].argv: argv is empty"),
        case("smoke_zero_timeout", dev(format!("{LS}[[smoke.check]]\nargv = [\"usr/bin/true\"]\ntimeout_ms = 0\n")), 2, "smoke.check[0].timeout_ms: must be at least 1"),
        case("smoke_argv0_dotdot", dev(format!("{LS}[[smoke.check]]\nargv = [\"../bin/sh\"]\n")), 2, "smoke.check[0].argv[0]: path contains a `..`"),
        // --- the manifest file itself ---
        case("manifest_is_a_directory", Box::new(|sb: &Sandbox| {
            std::fs::create_dir(sb.base.join("m.toml")).unwrap();
            vec!["apply".into(), s(&sb.base.join("m.toml")), "--commit".into()]
        }), 2, "m.toml: is a directory, not a manifest file"),
        case("manifest_missing", Box::new(|sb: &Sandbox| {
            vec!["apply".into(), s(&sb.base.join("absent.toml")), "--commit".into()]
        }), 2, "absent.toml: cannot read manifest: No such file or directory"),
        case("manifest_dangling_symlink", Box::new(|sb: &Sandbox| {
            std::os::unix::fs::symlink("nowhere.toml", sb.base.join("m.toml")).unwrap();
            vec!["apply".into(), s(&sb.base.join("m.toml")), "--commit".into()]
        }), 2, "m.toml: cannot read manifest: No such file or directory"),
        case("manifest_unreadable_socket", Box::new(|sb: &Sandbox| {
            // Unreadable even for root (tests run as root in CI; mode 000 would not do).
            let p = sb.base.join("m.toml");
            std::mem::forget(std::os::unix::net::UnixListener::bind(&p).unwrap());
            vec!["apply".into(), s(&p), "--commit".into()]
        }), 2, "m.toml: is not a regular file"),
        // --- policy (exit 10): preflight stops, nothing is created, not even state ---
        case("missing_source", dev("[[link]]\ntarget = \"usr/bin/ls\"\nsource = \"usr/lib/alt/missing\"\n"), 10, "usr/bin/ls: source usr/lib/alt/missing is not usable"),
        case("absolute_target_outside_allow_roots", Box::new(|sb: &Sandbox| {
            sb.write("etc/hosts", b"127.0.0.1 localhost\n", 0o644);
            let m = sb.manifest("m.toml", dev_manifest(&link("/etc/hosts", "usr/lib/alt/ls")));
            vec!["apply".into(), s(&m), "--commit".into()]
        }), 10, "etc/hosts is not under any allow_roots entry"),
        case("forbid_paths_wins", raw(format!("preset = \"dev\"\n[policy]\nallow_roots = [\"usr/bin\"]\nforbid_paths = [\"usr/bin/ls\"]\n{LS}")), 10, "usr/bin/ls is under forbid_paths entry usr/bin/ls"),
        case("symlinked_parent_directory", Box::new(|sb: &Sandbox| {
            std::os::unix::fs::symlink("bin", sb.host("usr/sbin")).unwrap();
            let m = sb.manifest("m.toml", format!("preset = \"dev\"\n[policy]\nallow_roots = [\"usr/sbin\"]\n{}", link("usr/sbin/ls", "usr/lib/alt/ls")));
            vec!["apply".into(), s(&m), "--commit".into()]
        }), 10, "parent directory usr/sbin is or contains a symlink"),
        case("link_dir_through_symlink", Box::new(|sb: &Sandbox| {
            std::os::unix::fs::symlink("lib/alt", sb.host("usr/alt")).unwrap();
            let m = sb.manifest("m.toml", dev_manifest("[[link_dir]]\ntargets = \"usr/bin\"\nsources = \"usr/alt\"\n"));
            vec!["apply".into(), s(&m), "--commit".into()]
        }), 10, "link_dir[0].sources: usr/alt is or contains a symlink"),
        case("target_is_a_directory", Box::new(|sb: &Sandbox| {
            std::fs::create_dir(sb.host("usr/bin/dir")).unwrap();
            let m = sb.manifest("m.toml", dev_manifest(&link("usr/bin/dir", "usr/lib/alt/ls")));
            vec!["apply".into(), s(&m), "--commit".into()]
        }), 10, "target is a dir"),
        case("source_not_executable", Box::new(|sb: &Sandbox| {
            sb.write("usr/lib/alt/plain", b"data", 0o644);
            let m = sb.manifest("m.toml", dev_manifest(&link("usr/bin/ls", "usr/lib/alt/plain")));
            vec!["apply".into(), s(&m), "--commit".into()]
        }), 10, "target is executable but source usr/lib/alt/plain is not"),
        case("production_without_smoke_checks", raw(format!("preset = \"production\"\n[policy]\nstrict_source_ownership = false\n{LS}")), 10, "refuses to commit without a smoke runner (H6)"),
        case("preflight_command_stops", Box::new(|sb: &Sandbox| {
            let m = sb.manifest("m.toml", dev_manifest(&link("usr/bin/ls", "usr/lib/alt/missing")));
            vec!["preflight".into(), s(&m)]
        }), 10, "preflight stopped 1 of 1 actions"),
        case("restore_without_backup", dev("[[restore]]\ntarget = \"usr/bin/ls\"\n"), 60, "no backup of this target to restore"),
        case("rollback_unknown_run", Box::new(|_| {
            vec!["rollback".into(), "01a20142-3a8a-7419-a14f-be09b3104dca".into(), "--commit".into()]
        }), 60, "no runs recorded"),
        // --- plan reads the manifest the same way ---
        case("plan_unknown_key", Box::new(|sb: &Sandbox| {
            let m = sb.manifest("m.toml", format!("preset = \"dev\"\nallow_roots = []\n{LS}"));
            vec!["plan".into(), s(&m)]
        }), 2, "m.toml:2:1: allow_roots: unknown field `allow_roots`"),
        // --- arguments (clap; exit 2) ---
        clap_case("clap_no_command", &[], "Usage:"),
        clap_case("clap_unknown_flag", &["apply", "m.toml", "--comit"], "unexpected argument '--comit'"),
        clap_case("clap_missing_manifest", &["apply"], "required arguments were not provided"),
        clap_case("clap_bad_run_id", &["rollback", "not-a-uuid"], "invalid value 'not-a-uuid'"),
        clap_case("clap_run_id_and_last", &["rollback", "01a20142-3a8a-7419-a14f-be09b3104dca", "--last"], "cannot be used with"),
        clap_case("clap_json_and_quiet", &["--json", "--quiet", "status"], "cannot be used with"),
        clap_case("clap_bad_shell", &["completions", "tcsh"], "invalid value 'tcsh'"),
    ]
}

#[test]
fn bad_inputs_exit_with_documented_code_one_line_and_change_nothing() {
    let cases = cases();
    assert!(cases.len() >= 30, "the table must hold at least 30 inputs");
    let mut failures = Vec::new();
    for c in &cases {
        let sb = Sandbox::new();
        let args = (c.setup)(&sb);
        let before = Tree::capture_exact(&sb.base);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = sb.run(&args);
        let after = Tree::capture_exact(&sb.base);
        // The table, for the record: `cargo nextest run -p switchyard-cli --no-capture`.
        println!(
            "{} -> exit {} -> {}",
            c.name,
            r.code,
            r.stderr.lines().next().unwrap_or_default()
        );
        let mut why = Vec::new();
        if r.code != c.code {
            why.push(format!("exit {} (want {})", r.code, c.code));
        }
        if !r.stderr.contains(c.msg.as_str()) {
            why.push(format!("stderr lacks {:?}", c.msg));
        }
        if c.one_line && r.stderr.lines().count() != 1 {
            why.push("stderr is not exactly one line".to_owned());
        }
        if !r.stdout.is_empty() && c.name != "preflight_command_stops" {
            why.push("stdout is not empty".to_owned());
        }
        if before != after {
            let changed: Vec<_> = after
                .0
                .iter()
                .filter(|(k, v)| before.0.get(*k) != Some(v))
                .map(|(k, _)| k.clone())
                .chain(
                    before
                        .0
                        .keys()
                        .filter(|k| !after.0.contains_key(*k))
                        .cloned(),
                )
                .collect();
            why.push(format!("the sandbox changed: {changed:?}"));
        }
        if !why.is_empty() {
            failures.push(format!(
                "{}: {}\n  stderr: {}",
                c.name,
                why.join("; "),
                r.stderr.trim_end()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn bad_input_with_json_prints_the_error_document_too() {
    let sb = Sandbox::new();
    let m = sb.manifest(
        "m.toml",
        dev_manifest("[[link]]\ntarget = \"a/../b\"\nsource = \"x\"\n"),
    );
    let r = sb.run(&["--json", "apply", &m.display().to_string(), "--commit"]);
    r.expect(2);
    let j = r.json();
    assert_eq!(j["exit_code"], 2);
    assert_eq!(j["error_id"], "E_USAGE");
    assert!(j["message"].as_str().unwrap().contains("link[0].target"));
    assert_eq!(r.stderr.lines().count(), 1);
}

#[test]
fn policy_stop_with_json_names_error_and_no_facts() {
    // D2/O8: a stopped commit reports E_POLICY with its summary ids; nothing ran.
    let sb = Sandbox::new();
    let m = sb.manifest(
        "m.toml",
        dev_manifest(&link("usr/bin/ls", "usr/lib/alt/missing")),
    );
    let r = sb.run(&["--json", "apply", &m.display().to_string(), "--commit"]);
    r.expect(10);
    let j = r.json();
    assert_eq!(j["error_id"], "E_POLICY");
    assert_eq!(j["exit_code"], 10);
    assert_eq!(j["changed"], false);
    assert!(j["facts"].is_null());
    assert!(j["plan_id"].is_string());
    assert_eq!(j["summary_error_ids"], serde_json::json!(["E_POLICY"]));
    assert!(
        !sb.state().exists(),
        "a stopped commit must not create the state dir"
    );
}
