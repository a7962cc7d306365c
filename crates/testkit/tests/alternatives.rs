//! M6: a target managed by update-alternatives — its symlink chain passes through
//! `etc/alternatives` — stops preflight with a reason naming `update-alternatives
//! --set`, unless policy `allow_alternatives_takeover` lets Switchyard take it over;
//! then apply and rollback restore the alternatives symlink exactly (R2).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use switchyard::{ApplyMode, ErrorId, PlanInput, Policy, RunSelector, Verdict};
use switchyard_testkit::{sp, Fixture};

const EDITOR_STOP: &str = "usr/bin/editor is managed by update-alternatives \
    (etc/alternatives/editor); use `update-alternatives --set editor <path>` or allow \
    takeover with policy `allow_alternatives_takeover`";

/// The fixture plus an alternatives setup as Debian's: `etc/alternatives/editor ->
/// /usr/bin/vim.basic`, `usr/bin/editor -> /etc/alternatives/editor` (absolute link
/// text, resolved inside the root), and `usr/bin/view -> ../../etc/alternatives/view`
/// (relative); an alternative provider `usr/lib/alt/{editor,view}`.
fn alternatives_root() -> Fixture {
    let f = Fixture::new();
    f.write("usr/bin/vim.basic", b"#!/bin/sh\necho vim\n", 0o755);
    std::fs::create_dir_all(f.host("etc/alternatives")).unwrap();
    let ln = |dest: &str, at: &str| std::os::unix::fs::symlink(dest, f.host(at)).unwrap();
    ln("/usr/bin/vim.basic", "etc/alternatives/editor");
    ln("/usr/bin/vim.basic", "etc/alternatives/view");
    ln("/etc/alternatives/editor", "usr/bin/editor");
    ln("../../etc/alternatives/view", "usr/bin/view");
    for n in ["editor", "view"] {
        f.write(
            &format!("usr/lib/alt/{n}"),
            format!("#!/bin/sh\necho alt-{n}\n").as_bytes(),
            0o755,
        );
    }
    f
}

fn input() -> PlanInput {
    PlanInput::default()
        .link(sp("usr/bin/editor"), sp("usr/lib/alt/editor"))
        .link(sp("usr/bin/view"), sp("usr/lib/alt/view"))
        // A symlink that does not go through etc/alternatives, and a file.
        .link(sp("usr/bin/cat"), sp("usr/lib/alt/cat"))
        .link(sp("usr/bin/ls"), sp("usr/lib/alt/ls"))
}

#[test]
fn a_target_resolving_through_etc_alternatives_stops_preflight_m6() {
    let f = alternatives_root();
    let before = f.tree();
    let (sy, _) = f.engine();
    assert!(!sy.policy().allow_alternatives_takeover, "off in dev");
    let plan = sy.plan(&input()).unwrap();
    let pre = sy.preflight(&plan).unwrap();
    let rows: Vec<_> = pre
        .rows
        .iter()
        .map(|r| (r.path.as_str(), r.verdict, r.error_id, r.notes.clone()))
        .collect();
    assert_eq!(
        rows,
        [
            ("usr/bin/cat", Verdict::Ok, None, vec![]),
            (
                "usr/bin/editor",
                Verdict::Stop,
                Some(ErrorId::Policy),
                vec![EDITOR_STOP.to_owned()]
            ),
            ("usr/bin/ls", Verdict::Ok, None, vec![]),
            (
                "usr/bin/view",
                Verdict::Stop,
                Some(ErrorId::Policy),
                vec![EDITOR_STOP.replace("editor", "view")]
            ),
        ]
    );
    let e = pre.error().unwrap();
    assert_eq!((e.id(), e.exit_code()), (ErrorId::Policy, 10));
    // Apply fails the same way and changes nothing (D4).
    let err = sy.apply(&plan, ApplyMode::Commit).unwrap_err();
    assert_eq!(err.id(), ErrorId::Policy);
    assert!(
        err.message().contains("update-alternatives --set editor"),
        "{err}"
    );
    assert_eq!(f.tree(), before);
}

#[test]
fn production_preset_stops_it_too_m6() {
    let f = alternatives_root();
    let mut policy = Policy::production();
    policy.strict_source_ownership = false; // the fixture's sources are the test user's
    assert!(!policy.allow_alternatives_takeover, "off in production");
    let (sy, _) = f.engine_with(policy);
    let plan = sy
        .plan(&PlanInput::default().link(sp("usr/bin/editor"), sp("usr/lib/alt/editor")))
        .unwrap();
    let pre = sy.preflight(&plan).unwrap();
    assert_eq!(pre.rows[0].verdict, Verdict::Stop);
    assert_eq!(pre.rows[0].notes, [EDITOR_STOP]);
}

#[test]
fn takeover_allowed_applies_and_rollback_restores_the_alternatives_link_m6_r2() {
    let f = alternatives_root();
    let before = f.tree();
    let mut policy = Policy::dev();
    policy.allow_alternatives_takeover = true;
    let (sy, _) = f.engine_with(policy);
    let plan = sy.plan(&input()).unwrap();
    let pre = sy.preflight(&plan).unwrap();
    assert!(pre.ok(), "{pre:?}");
    let editor = pre
        .rows
        .iter()
        .find(|r| r.path.as_str() == "usr/bin/editor")
        .unwrap();
    assert_eq!(
        editor.notes,
        [
            "usr/bin/editor is managed by update-alternatives (etc/alternatives/editor); \
          taken over (allow_alternatives_takeover)"
        ]
    );

    let rep = sy.apply(&plan, ApplyMode::Commit).unwrap();
    assert!(rep.changed);
    let now = f.tree();
    assert_eq!(
        now.get("usr/bin/editor").link_dest.as_deref(),
        Some("../lib/alt/editor")
    );
    let kept = now.get("usr/bin/.switchyard/editor.1.bak");
    assert_eq!(
        (kept.kind.as_str(), kept.link_dest.as_deref()),
        ("symlink", Some("/etc/alternatives/editor")),
        "the alternatives symlink itself is kept, not what it resolves to"
    );
    assert_eq!(
        now.get("etc/alternatives/editor"),
        before.get("etc/alternatives/editor"),
        "etc/alternatives is not touched"
    );

    let back = sy
        .rollback(RunSelector::Id(rep.run_id), ApplyMode::Commit)
        .unwrap();
    assert!(back.changed);
    assert_eq!(
        f.tree(),
        before,
        "R2: the alternatives symlinks are back exactly"
    );
}

/// A link already in effect is not stopped, even when its new chain passes through
/// etc/alternatives (its source does): re-applying changes nothing (D3).
#[test]
fn a_link_already_in_effect_through_alternatives_is_a_noop_d3_m6() {
    let f = alternatives_root();
    let (sy, _) = f.engine();
    // usr/bin/ls (a file) becomes a link to usr/bin/editor, an alternatives link.
    let plan = sy
        .plan(&PlanInput::default().link(sp("usr/bin/ls"), sp("usr/bin/editor")))
        .unwrap();
    assert!(sy.preflight(&plan).unwrap().ok());
    assert!(sy.apply(&plan, ApplyMode::Commit).unwrap().changed);
    let pre = sy.preflight(&plan).unwrap();
    assert!(pre.ok(), "{pre:?}");
    assert_eq!(pre.rows[0].notes, ["already in effect; nothing to do"]);
    assert!(!sy.apply(&plan, ApplyMode::Commit).unwrap().changed);
}
