//! The manifest as an embedder uses it (library first; `docs/GUARANTEES.md`, "The
//! manifest"): the same text gives the same policy, smoke checks and plan as the CLI —
//! the CLI's
//! `embedder_plan_is_the_cli_plan` test pins the same `plan_id` for the same manifest
//! and tree (D1) — and the same one-line `file:line:col: field: message` errors.
#![cfg(feature = "manifest")]
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;
use switchyard::RESERVED_PREFIX;
use switchyard::{CommandCheck, ErrorId, Manifest, PlanInput, Policy, SafePath, Switchyard};

/// `[[link]]`, `[[link_dir]]`, `[[restore]]`, policy overrides and a smoke check.
/// The CLI's test reads the same file.
const EMBEDDER_MANIFEST: &str = include_str!("fixtures/embedder.toml");

/// The `plan_id` of [`EMBEDDER_MANIFEST`] over [`embedder_tree`] (D1: on any machine;
/// the CLI before the manifest moved into the library printed this same ID).
const EMBEDDER_PLAN_ID: &str = "e05155bc-55d4-5e1b-84ae-f3e1ea1e26e1";

fn write(root: &Path, rel: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, b"#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// `tests/fixtures/embedder.files`, one file per line (the CLI's test builds the same
/// tree): usr/bin and usr/lib/alt share `cat` and `ls` (and a reserved name, which
/// `[[link_dir]]` must skip); `true` is only in usr/bin.
fn embedder_tree(root: &Path) {
    for f in include_str!("fixtures/embedder.files").lines() {
        write(root, f);
    }
    assert!(
        include_str!("fixtures/embedder.files").contains(&format!("usr/bin/{RESERVED_PREFIX}.cat")),
        "the fixture keeps its reserved name"
    );
}

fn p(s: &str) -> SafePath {
    SafePath::new(s).unwrap()
}

fn engine(m: &Manifest, root: &Path) -> Switchyard {
    Switchyard::builder(m.policy().clone())
        .root(root)
        .build()
        .unwrap()
}

#[test]
fn embedder_gets_policy_checks_and_plan_from_the_text() {
    let dir = tempfile::tempdir().unwrap();
    embedder_tree(dir.path());
    let m = Manifest::parse("m.toml", EMBEDDER_MANIFEST).unwrap();
    assert_eq!(m.name(), "m.toml");

    let mut want = Policy::dev();
    want.allow_roots = vec![p("usr/bin"), p("usr/sbin")];
    want.forbid_paths = vec![p("usr/sbin/fsck")];
    want.strict_source_ownership = true;
    want.lock_timeout_ms = 1234;
    want.max_plan_actions = 8;
    assert_eq!(m.policy(), &want);
    assert_eq!(
        m.smoke_checks(),
        [CommandCheck {
            argv: vec!["usr/bin/true".into(), "--version".into()],
            expect_exit: 0,
            expect_stdout: Some("ok".into()),
            timeout: Duration::from_millis(500),
        }]
    );

    let sy = engine(&m, dir.path());
    let plan = m.plan(&sy).unwrap();
    // The same plan as the requests written out by hand (link_dir: names in both
    // directories, reserved names skipped).
    let by_hand = PlanInput::default()
        .link(p("usr/sbin/dd"), p("opt/alt/dd"))
        .link(p("usr/bin/cat"), p("usr/lib/alt/cat"))
        .link(p("usr/bin/ls"), p("usr/lib/alt/ls"))
        .restore(p("usr/sbin/fsck"));
    assert_eq!(plan, sy.plan(&by_hand).unwrap());
    assert_eq!(plan, sy.plan(&m.plan_input(&sy).unwrap()).unwrap());
    let actions: Vec<_> = plan
        .actions
        .iter()
        .map(|a| {
            (
                a.kind.as_str(),
                a.target.as_str(),
                a.source.as_ref().map(SafePath::as_str),
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            ("link", "usr/bin/cat", Some("usr/lib/alt/cat")),
            ("link", "usr/bin/ls", Some("usr/lib/alt/ls")),
            ("link", "usr/sbin/dd", Some("opt/alt/dd")),
            ("restore", "usr/sbin/fsck", None),
        ]
    );
    assert_eq!(plan.plan_id.to_string(), EMBEDDER_PLAN_ID);
}

#[test]
fn load_reads_the_file_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("m.toml");
    std::fs::write(&file, EMBEDDER_MANIFEST).unwrap();
    let m = Manifest::load(&file).unwrap();
    assert_eq!(m.name(), file.display().to_string());
    assert_eq!(m.policy().max_plan_actions, 8);
    let e = Manifest::load(&dir.path().join("absent.toml")).unwrap_err();
    assert_eq!(e.id(), ErrorId::Usage);
    assert!(e
        .message()
        .ends_with("absent.toml: cannot read manifest: No such file or directory (os error 2)"));
}

#[test]
fn plan_rule_errors_name_the_entries() {
    let dev = |body: &str| format!("preset = \"dev\"\n{body}");
    let msg = |text: String| {
        Manifest::parse("m.toml", text)
            .unwrap_err()
            .message()
            .to_owned()
    };
    let link = |t: &str, s: &str| format!("[[link]]\ntarget = \"{t}\"\nsource = \"{s}\"\n");
    assert_eq!(
        msg(dev(&format!("{}{}", link("a", "b"), link("/a", "c")))),
        "m.toml:6:10: link[1].target: duplicate target a (already link[0].target at 3:10)"
    );
    assert_eq!(
        msg(dev(&format!(
            "{}[[restore]]\ntarget = \"a\"\n",
            link("a", "b")
        ))),
        "m.toml:6:10: restore[0].target: duplicate target a (already link[0].target at 3:10)"
    );
    assert_eq!(
        msg(dev(&link("a", "/a"))),
        "m.toml:3:10: link[0].target: a links to itself"
    );
    assert_eq!(
        msg(dev(&format!("{}{}", link("a", "b"), link("b", "c")))),
        "m.toml:3:10: link[0].source: b is the source of a and also a target (link[1].target at 6:10)"
    );
}

#[test]
fn link_dir_overlap_is_found_after_expansion() {
    let dir = tempfile::tempdir().unwrap();
    embedder_tree(dir.path());
    let text = "preset = \"dev\"\n[[restore]]\ntarget = \"usr/bin/ls\"\n\
                [[link_dir]]\ntargets = \"usr/bin\"\nsources = \"usr/lib/alt\"\n";
    let m = Manifest::parse("m.toml", text).unwrap();
    let e = m.plan_input(&engine(&m, dir.path())).unwrap_err();
    assert_eq!(e.id(), ErrorId::Usage);
    assert_eq!(
        e.message(),
        "m.toml:5:11: link_dir[0].targets (ls): duplicate target usr/bin/ls \
         (already restore[0].target at 3:10)"
    );
}

#[test]
fn link_dir_refuses_a_common_name_that_is_not_utf8_s10() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    embedder_tree(dir.path());
    let odd = std::ffi::OsStr::from_bytes(b"x\xff\x1b[2J");
    let only = std::ffi::OsStr::from_bytes(b"only\xfe");
    for d in ["usr/bin", "usr/lib/alt"] {
        std::fs::write(dir.path().join(d).join(odd), b"#!/bin/sh\n").unwrap();
    }
    std::fs::write(dir.path().join("usr/bin").join(only), b"#!/bin/sh\n").unwrap();
    let text = "preset = \"dev\"\n[[link_dir]]\ntargets = \"usr/bin\"\nsources = \"usr/lib/alt\"\n";
    let m = Manifest::parse("m.toml", text).unwrap();
    let e = m.plan_input(&engine(&m, dir.path())).unwrap_err();
    assert_eq!(e.id(), ErrorId::Usage);
    // Named, escaped (no raw control byte), never skipped silently.
    assert_eq!(
        e.message(),
        "m.toml:3:11: link_dir[0].targets: usr/bin/x\\xff\\x1b[2J is in both directories \
         but its name is not valid UTF-8; rename it or leave it out of [[link_dir]]"
    );
    // A name that is only on one side is no action, so it stops nothing.
    std::fs::remove_file(dir.path().join("usr/lib/alt").join(odd)).unwrap();
    let input = m.plan_input(&engine(&m, dir.path())).unwrap();
    assert_eq!(input.links.len(), 2, "cat and ls");
}

#[test]
fn link_dir_through_a_symlink_is_a_policy_error_s1() {
    let dir = tempfile::tempdir().unwrap();
    embedder_tree(dir.path());
    std::os::unix::fs::symlink("lib/alt", dir.path().join("usr/alt")).unwrap();
    let text = "preset = \"dev\"\n[[link_dir]]\ntargets = \"usr/bin\"\nsources = \"usr/alt\"\n";
    let m = Manifest::parse("m.toml", text).unwrap();
    let e = m.plan_input(&engine(&m, dir.path())).unwrap_err();
    assert_eq!(e.id(), ErrorId::Policy);
    assert_eq!(e.exit_code(), 10);
    assert_eq!(
        e.message(),
        "m.toml:3:11: link_dir[0].sources: usr/alt is or contains a symlink; refusing to follow it (S1)"
    );
}

#[test]
fn planning_errors_carry_the_manifest_name() {
    let dir = tempfile::tempdir().unwrap();
    embedder_tree(dir.path());
    let text = EMBEDDER_MANIFEST.replace("max_plan_actions = 8", "max_plan_actions = 2");
    let m = Manifest::parse("m.toml", text).unwrap();
    let e = m.plan(&engine(&m, dir.path())).unwrap_err();
    assert_eq!(e.id(), ErrorId::Usage);
    assert_eq!(
        e.message(),
        "m.toml: plan has 4 actions, more than the limit of 2 (policy max_plan_actions)"
    );
}
