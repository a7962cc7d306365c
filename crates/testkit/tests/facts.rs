//! Facts: the committed schema matches the types (O3), every fact validates, golden
//! redacted streams (T4), and dry-run predicts commit exactly (O2).
//!
//! Regenerate the schema and goldens after an intended change with:
//!     UPDATE_GOLDENS=1 cargo nextest run -p switchyard-testkit -E 'test(golden) | test(schema)'

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::path::Path;
use switchyard::{ApplyMode, FileLock, MemorySink, Policy, RunSelector, Switchyard};
use switchyard_testkit::{
    assert_facts_valid, engine_for, redacted_lines, run_child, schema_path, sp, standard_input,
    standard_links, ChildEnd, FixedSmoke, Fixture, Scenario,
};

/// Regeneration mode. Never counts as comparing: refused in CI (T4), and a file it
/// writes is still compared below like any other.
fn update() -> bool {
    let update = std::env::var_os("UPDATE_GOLDENS").is_some();
    assert!(
        !(update && std::env::var_os("CI").is_some()),
        "UPDATE_GOLDENS is set in CI: goldens would be rewritten, not checked (T4)"
    );
    update
}

fn golden(name: &str, actual: &str) {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if update() {
        std::fs::write(&p, actual).unwrap();
    }
    let want = std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("{}: {e} (regenerate: see file docs)", p.display()));
    assert!(
        want == actual,
        "golden {name} differs\n--- want\n{want}\n--- got\n{actual}"
    );
}

#[test]
fn schema_file_matches_the_types_o3() {
    let generated = serde_json::to_string_pretty(&switchyard::facts::json_schema()).unwrap() + "\n";
    if update() {
        std::fs::write(schema_path(), &generated).unwrap();
    }
    let committed = std::fs::read_to_string(schema_path()).unwrap();
    assert!(
        committed == generated,
        "schema/facts.schema.json is stale; regenerate it"
    );
}

#[test]
fn golden_plan_preflight_apply_rollback_streams_t4() {
    let f = Fixture::new();
    let (sy, sink) = engine_for(f.path(), Policy::dev());
    let plan = sy.plan(&standard_input()).unwrap();
    golden("plan.jsonl", &redacted_lines(&sink.facts(), false));
    assert_facts_valid(&sink.facts());
    sink.clear();
    sy.preflight(&plan).unwrap();
    golden("preflight.jsonl", &redacted_lines(&sink.facts(), false));
    assert_facts_valid(&sink.facts());
    sink.clear();
    let rep = sy.apply(&plan, ApplyMode::Commit).unwrap();
    golden("apply.jsonl", &redacted_lines(&sink.facts(), false));
    assert_facts_valid(&sink.facts());
    // The run's own facts file holds the same stream.
    let file = std::fs::read_to_string(rep.facts_path.unwrap()).unwrap();
    let from_file: Vec<switchyard::Fact> = file
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(from_file, sink.facts());
    sink.clear();
    sy.rollback(RunSelector::Id(rep.run_id), ApplyMode::Commit)
        .unwrap();
    golden("rollback.jsonl", &redacted_lines(&sink.facts(), false));
    assert_facts_valid(&sink.facts());
}

#[test]
fn golden_recovery_stream_t4() {
    let f = Fixture::new();
    let sc = Scenario::kill(
        f.path(),
        "apply",
        switchyard::failpoints::APPLY_BEFORE_SYNC,
        None,
        standard_links(),
    );
    assert_eq!(
        run_child(env!("CARGO_BIN_EXE_crashchild").as_ref(), &sc),
        ChildEnd::Killed
    );
    let (sy, sink) = engine_for(f.path(), Policy::dev());
    sy.recover(ApplyMode::Commit).unwrap();
    golden("recovery.jsonl", &redacted_lines(&sink.facts(), false));
    assert_facts_valid(&sink.facts());
}

#[test]
fn golden_failure_stream_carries_error_ids_o8() {
    let f = Fixture::new();
    let sink = MemorySink::default();
    let mut policy = Policy::dev();
    policy.allow_roots = vec![sp("usr/bin")];
    let sy = Switchyard::builder(policy)
        .root(f.path())
        .with_lock_manager(FileLock::new())
        .with_smoke_runner(FixedSmoke {
            fail: true,
            ..Default::default()
        })
        .with_facts_sink(sink.clone())
        .build()
        .unwrap();
    let before = f.tree();
    let err = sy
        .apply(&sy.plan(&standard_input()).unwrap(), ApplyMode::Commit)
        .unwrap_err();
    assert_eq!(err.id(), switchyard::ErrorId::Smoke);
    assert_eq!(err.exit_code(), 80);
    assert_eq!(f.tree(), before, "H3: smoke failure rolled back");
    golden(
        "apply-smoke-failure.jsonl",
        &redacted_lines(&sink.facts(), false),
    );
    assert_facts_valid(&sink.facts());
    let last = sink
        .facts()
        .into_iter()
        .rev()
        .find(|f| f.stage() == switchyard::facts::Stage::ApplyResult)
        .unwrap();
    assert_eq!(
        last.failure().map(|f| f.summary_error_ids.clone()),
        Some(vec![switchyard::ErrorId::Smoke])
    );
}

#[test]
fn dry_run_stream_equals_commit_stream_after_redaction_o2() {
    let f = Fixture::new();
    let sink = MemorySink::default();
    let smoke = FixedSmoke::default();
    let mut policy = Policy::dev();
    policy.allow_roots = vec![sp("usr/bin")];
    let sy = Switchyard::builder(policy)
        .root(f.path())
        .with_lock_manager(FileLock::new())
        .with_smoke_runner(smoke.clone())
        .with_facts_sink(sink.clone())
        .build()
        .unwrap();
    let plan = sy.plan(&standard_input()).unwrap();
    sink.clear();
    sy.apply(&plan, ApplyMode::DryRun).unwrap();
    let dry = sink.facts();
    sink.clear();
    sy.apply(&plan, ApplyMode::Commit).unwrap();
    let commit = sink.facts();
    assert_eq!(
        smoke.runs.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "smoke ran in commit only"
    );
    assert!(commit
        .iter()
        .any(|f| f.stage() == switchyard::facts::Stage::Smoke));
    assert!(dry.iter().all(|f| f.envelope.dry_run) && commit.iter().all(|f| !f.envelope.dry_run));
    assert_eq!(redacted_lines(&dry, true), redacted_lines(&commit, true));
    assert_facts_valid(&dry);
    assert_facts_valid(&commit);
}

#[test]
fn schema_rejects_incomplete_facts_o3_o8() {
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(schema_path()).unwrap()).unwrap();
    let v = jsonschema::validator_for(&schema).unwrap();
    let f = Fixture::new();
    let (sy, sink) = engine_for(f.path(), Policy::dev());
    sy.apply(&sy.plan(&standard_input()).unwrap(), ApplyMode::Commit)
        .unwrap();
    let facts: Vec<serde_json::Value> = sink
        .facts()
        .iter()
        .map(|f| serde_json::to_value(f).unwrap())
        .collect();
    let per_action = facts
        .iter()
        .find(|f| f["event"] == "apply.result" && f.get("action_id").is_some())
        .unwrap();
    let summary = facts
        .iter()
        .find(|f| f["event"] == "apply.result" && f.get("action_id").is_none())
        .unwrap();
    assert!(v.is_valid(per_action) && v.is_valid(summary));
    let mut missing = per_action.clone();
    missing.as_object_mut().unwrap().remove("before_kind");
    assert!(
        !v.is_valid(&missing),
        "a per-action result without before_kind must not validate"
    );
    let mut unknown = per_action.clone();
    unknown["surprise"] = serde_json::json!(1);
    assert!(!v.is_valid(&unknown), "unknown fields must not validate");
    let mut failed = summary.clone();
    failed["decision"] = serde_json::json!("failure");
    assert!(
        !v.is_valid(&failed),
        "a failed summary without error_id/exit_code must not validate (O8)"
    );
}

/// A1, F2 (issue 8 #7): where the filesystem rejects renameat2's flags (forced here),
/// the hard-link method reports itself: `link_fallback` on each swapped action's fact;
/// never in a dry-run, never when the flags work.
#[test]
fn the_link_fallback_reports_itself_in_facts_a1() {
    let fallback_flags = |fallback: bool, mode: ApplyMode| -> Vec<(String, bool)> {
        let f = Fixture::new();
        let (sy, sink) = switchyard_testkit::engine_with(f.path(), Policy::dev(), fallback);
        sy.apply(&sy.plan(&standard_input()).unwrap(), mode)
            .unwrap();
        sink.facts()
            .iter()
            .map(|f| serde_json::to_value(f).unwrap())
            .filter(|v| v["event"] == "apply.result" && v.get("path").is_some())
            .map(|v| {
                (
                    v["path"].as_str().unwrap().to_owned(),
                    v["link_fallback"] == true,
                )
            })
            .collect()
    };
    let forced = fallback_flags(true, ApplyMode::Commit);
    assert_eq!(forced.len(), 3);
    assert!(forced.iter().all(|(_, fb)| *fb), "{forced:?}");
    assert!(fallback_flags(true, ApplyMode::DryRun)
        .iter()
        .all(|(_, fb)| !fb));
    assert!(fallback_flags(false, ApplyMode::Commit)
        .iter()
        .all(|(_, fb)| !fb));
}
