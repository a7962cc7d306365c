//! Facts (O1–O3, O5, O8): one JSON line per step, with a versioned schema.
//!
//! Contract:
//! - Every fact carries the v2 envelope of SPEC §5.1; [`Emitter`] fills it, numbering
//!   `seq` from 0 per run.
//! - [`Fact`] is the schema: `schema/facts.schema.json` is generated from it (a test
//!   fails if the committed file differs) and unknown fields are rejected.
//! - Facts name paths root-relative, never by host path, so streams from different
//!   temp roots are comparable.
//! - [`redact`] is the canonical redaction of SPEC §5.3; after it, a dry-run stream
//!   equals the commit stream minus `smoke` events (O2).

use crate::error::{Error, ErrorId};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use uuid::Uuid;

/// Version of the fact schema (`schema_version`).
pub const SCHEMA_VERSION: u32 = 2;

/// Which step a fact describes (SPEC §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Stage {
    #[serde(rename = "plan")]
    Plan,
    #[serde(rename = "preflight")]
    Preflight,
    #[serde(rename = "preflight.summary")]
    PreflightSummary,
    #[serde(rename = "apply.attempt")]
    ApplyAttempt,
    #[serde(rename = "apply.result")]
    ApplyResult,
    #[serde(rename = "smoke")]
    Smoke,
    #[serde(rename = "rollback")]
    Rollback,
    #[serde(rename = "rollback.summary")]
    RollbackSummary,
    #[serde(rename = "recovery")]
    Recovery,
    #[serde(rename = "recovery.summary")]
    RecoverySummary,
}

/// `success`, `failure` or `warn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    #[default]
    Success,
    Failure,
    Warn,
}

/// Time spent per phase of an apply, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct Perf {
    pub hash_ms: u64,
    pub backup_ms: u64,
    pub swap_ms: u64,
    pub fsync_ms: u64,
}

/// The `error` object of a failure fact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FactError {
    pub kind: ErrorId,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errno: Option<i32>,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remediation: Option<String>,
}

macro_rules! fact_struct {
    ($( $(#[$m:meta])* $name:ident : $ty:ty ),* $(,)?) => {
        /// One fact. Envelope fields first; the rest appear on the stages that use them.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
        #[serde(deny_unknown_fields)]
        #[schemars(title = "Switchyard fact", description = "One line of a Switchyard facts.jsonl (schema_version 2)")]
        pub struct Fact {
            pub schema_version: u32,
            /// RFC 3339 UTC.
            pub ts: String,
            pub event: Stage,
            pub run_id: String,
            pub event_id: String,
            /// Position in the run's stream, from 0.
            pub seq: u64,
            #[serde(skip_serializing_if = "Option::is_none")]
            pub plan_id: Option<String>,
            pub dry_run: bool,
            pub switchyard_version: String,
            pub decision: Decision,
            $( $(#[$m])* #[serde(default, skip_serializing_if = "Option::is_none")] pub $name: Option<$ty>, )*
        }

        impl Fact {
            /// A fact of `event` with an empty envelope ([`Emitter::emit`] fills it).
            pub fn new(event: Stage, decision: Decision) -> Fact {
                Fact {
                    schema_version: SCHEMA_VERSION,
                    ts: String::new(),
                    event,
                    run_id: String::new(),
                    event_id: String::new(),
                    seq: 0,
                    plan_id: None,
                    dry_run: false,
                    switchyard_version: String::new(),
                    decision,
                    $( $name: None, )*
                }
            }
        }
    };
}

fact_struct! {
    /// Per-action events: the action's ID.
    action_id: String,
    /// Per-action events: root-relative target path.
    path: String,
    /// `link` or `restore`.
    kind: String,
    /// Root-relative source of a link.
    source: String,
    /// Number of actions (plan, summaries).
    action_count: u64,
    /// Preflight: what the target is now.
    current_kind: String,
    /// Preflight: what the target will be.
    planned_kind: String,
    /// Preflight: `ok`, `warn` or `stop`.
    verdict: String,
    /// Preflight: reasons behind the verdict.
    notes: Vec<String>,
    /// Preflight summary: rows that stop the plan.
    stops: u64,
    /// Preflight summary: rows with warnings.
    warnings: u64,
    /// `flock` or `none`.
    lock_backend: String,
    lock_wait_ms: u64,
    lock_attempts: u64,
    before_kind: String,
    after_kind: String,
    /// SHA-256 of what the path resolved to before (O5).
    before_hash: String,
    /// SHA-256 of what the path resolves to after (O5).
    after_hash: String,
    /// Always `sha256`.
    hash_alg: String,
    /// Name of the backup beside the target.
    backup: String,
    backup_durable: bool,
    degraded: bool,
    degraded_reason: String,
    /// Whether the plan was already in effect for this action.
    noop: bool,
    duration_ms: u64,
    perf: Perf,
    /// Summaries: whether anything on disk changed.
    changed: bool,
    /// Summaries: directories fsynced.
    fsync_count: u64,
    /// Smoke: the check's name.
    check: String,
    /// Rollback/recovery: the run being undone or settled.
    target_run_id: String,
    /// Rollback summary: nothing left to undo (R3).
    idempotent_noop: bool,
    /// Recovery summary: `none`, `undone` or `completed`.
    outcome: String,
    error_id: ErrorId,
    exit_code: i32,
    summary_error_ids: Vec<ErrorId>,
    error: FactError,
}

impl Fact {
    /// Marks this fact as the failure `e` (O8).
    pub fn failed(mut self, e: &Error) -> Fact {
        self.decision = Decision::Failure;
        self.error_id = Some(e.id());
        self.exit_code = Some(e.exit_code());
        self.summary_error_ids = Some(e.summary_error_ids());
        self.error = Some(FactError {
            kind: e.id(),
            errno: e.errno(),
            message: e.message().to_owned(),
            remediation: e.remediation().map(str::to_owned),
        });
        self
    }

    /// Sets the per-action fields.
    pub fn for_action(mut self, action_id: &Uuid, path: &str) -> Fact {
        self.action_id = Some(action_id.to_string());
        self.path = Some(path.to_owned());
        self
    }
}

/// Where facts go. Implementations must be cheap per call and thread-safe.
pub trait FactSink: Send + Sync {
    /// Records one fact.
    fn emit(&self, fact: &Fact) -> io::Result<()>;
    /// Makes everything recorded so far durable (or at least flushed).
    fn flush(&self) -> io::Result<()> {
        Ok(())
    }
}

/// Appends facts as JSON lines to a file.
pub struct JsonlSink {
    out: Mutex<BufWriter<std::fs::File>>,
}

impl JsonlSink {
    /// Creates (truncating) `path`.
    pub fn create(path: &Path) -> io::Result<JsonlSink> {
        Ok(JsonlSink {
            out: Mutex::new(BufWriter::new(std::fs::File::create(path)?)),
        })
    }

    /// Appends to `path`, creating it if needed.
    pub fn append(path: &Path) -> io::Result<JsonlSink> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(JsonlSink {
            out: Mutex::new(BufWriter::new(f)),
        })
    }
}

impl FactSink for JsonlSink {
    fn emit(&self, fact: &Fact) -> io::Result<()> {
        let mut out = self
            .out
            .lock()
            .map_err(|_| io::Error::other("facts sink poisoned"))?;
        serde_json::to_writer(&mut *out, fact)?;
        out.write_all(b"\n")
    }

    fn flush(&self) -> io::Result<()> {
        let mut out = self
            .out
            .lock()
            .map_err(|_| io::Error::other("facts sink poisoned"))?;
        out.flush()?;
        out.get_ref().sync_data()
    }
}

/// Keeps facts in memory (for embedding and tests).
#[derive(Clone, Default)]
pub struct MemorySink {
    facts: Arc<Mutex<Vec<Fact>>>,
}

impl MemorySink {
    /// Everything recorded so far.
    pub fn facts(&self) -> Vec<Fact> {
        self.facts.lock().map(|f| f.clone()).unwrap_or_default()
    }

    /// Forgets everything recorded so far.
    pub fn clear(&self) {
        if let Ok(mut f) = self.facts.lock() {
            f.clear();
        }
    }
}

impl FactSink for MemorySink {
    fn emit(&self, fact: &Fact) -> io::Result<()> {
        self.facts
            .lock()
            .map_err(|_| io::Error::other("facts sink poisoned"))?
            .push(fact.clone());
        Ok(())
    }
}

/// Fills the envelope and hands facts of one run to every sink, keeping a copy for
/// the run's `facts.jsonl`.
pub(crate) struct Emitter {
    sinks: Vec<Arc<dyn FactSink>>,
    pub(crate) run_id: Uuid,
    pub(crate) plan_id: Option<Uuid>,
    dry_run: bool,
    seq: u64,
    pub(crate) log: Vec<Fact>,
    /// The first sink error, if any (reported, never silently dropped).
    pub(crate) sink_error: Option<String>,
}

impl Emitter {
    pub(crate) fn new(
        sinks: Vec<Arc<dyn FactSink>>,
        plan_id: Option<Uuid>,
        dry_run: bool,
    ) -> Emitter {
        Emitter {
            sinks,
            run_id: Uuid::now_v7(),
            plan_id,
            dry_run,
            seq: 0,
            log: Vec::new(),
            sink_error: None,
        }
    }

    pub(crate) fn emit(&mut self, mut f: Fact) {
        f.ts = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
        f.run_id = self.run_id.to_string();
        f.event_id = Uuid::new_v5(&self.run_id, &self.seq.to_be_bytes()).to_string();
        f.seq = self.seq;
        f.plan_id = self.plan_id.map(|p| p.to_string());
        f.dry_run = self.dry_run;
        f.switchyard_version = env!("CARGO_PKG_VERSION").to_owned();
        self.seq += 1;
        for s in &self.sinks {
            if let Err(e) = s.emit(&f) {
                self.sink_error
                    .get_or_insert_with(|| format!("facts sink: {e}"));
            }
        }
        self.log.push(f);
    }

    pub(crate) fn flush(&mut self) {
        for s in &self.sinks {
            if let Err(e) = s.flush() {
                self.sink_error
                    .get_or_insert_with(|| format!("facts sink: {e}"));
            }
        }
    }

    /// The run's facts as JSON lines.
    pub(crate) fn jsonl(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for f in &self.log {
            if serde_json::to_writer(&mut out, f).is_ok() {
                out.push(b'\n');
            }
        }
        out
    }
}

/// Fields removed by [`redact`]: durations, perf, lock timing and `dry_run`.
const REDACTED_AWAY: &[&str] = &[
    "duration_ms",
    "perf",
    "lock_wait_ms",
    "lock_attempts",
    "dry_run",
];
const NIL: &str = "00000000-0000-0000-0000-000000000000";

/// The canonical redaction of SPEC §5.3: `ts` to the epoch, run and event IDs to a
/// fixed value, timing fields and `dry_run` removed.
pub fn redact(fact: &Value) -> Value {
    let mut v = fact.clone();
    if let Value::Object(m) = &mut v {
        for k in REDACTED_AWAY {
            m.remove(*k);
        }
        for (k, val) in m.iter_mut() {
            if k == "ts" {
                *val = Value::from("1970-01-01T00:00:00Z");
            } else if (k == "event_id" || k.ends_with("run_id")) && val.is_string() {
                *val = Value::from(NIL);
            }
        }
    }
    v
}

/// Fields each stage must carry, beyond the envelope. Per-action events (those with
/// an `action_id`) and summaries (without) of one stage are told apart by `action_id`.
const REQUIRED: &[(&str, Option<bool>, &[&str])] = &[
    ("plan", None, &["action_id", "path", "kind"]),
    (
        "preflight",
        None,
        &[
            "action_id",
            "path",
            "kind",
            "current_kind",
            "planned_kind",
            "verdict",
            "notes",
        ],
    ),
    (
        "preflight.summary",
        None,
        &["action_count", "stops", "warnings"],
    ),
    (
        "apply.attempt",
        None,
        &["lock_backend", "lock_wait_ms", "lock_attempts"],
    ),
    (
        "apply.result",
        Some(true),
        &[
            "path",
            "kind",
            "before_kind",
            "after_kind",
            "hash_alg",
            "backup_durable",
            "degraded",
            "noop",
        ],
    ),
    ("apply.result", Some(false), &["action_count", "changed"]),
    ("smoke", None, &["check"]),
    (
        "rollback",
        None,
        &["action_id", "path", "kind", "after_kind", "hash_alg"],
    ),
    (
        "rollback.summary",
        None,
        &[
            "target_run_id",
            "action_count",
            "changed",
            "idempotent_noop",
        ],
    ),
    (
        "recovery",
        None,
        &["action_id", "path", "kind", "after_kind"],
    ),
    ("recovery.summary", None, &["target_run_id"]),
];

/// The JSON Schema of [`Fact`], as committed in `schema/facts.schema.json`: the
/// generated type schema plus, per stage, the fields it must carry, and for every
/// failed summary the O8 error fields.
pub fn json_schema() -> Value {
    let mut schema = serde_json::to_value(schemars::schema_for!(Fact)).unwrap_or(Value::Null);
    let mut rules: Vec<Value> = REQUIRED
        .iter()
        .map(|(event, per_action, fields)| {
            let mut cond = serde_json::json!({"properties": {"event": {"const": event}}, "required": ["event"]});
            match per_action {
                Some(true) => cond["required"] = serde_json::json!(["event", "action_id"]),
                Some(false) => cond["not"] = serde_json::json!({"required": ["action_id"]}),
                None => {}
            }
            serde_json::json!({"if": cond, "then": {"required": fields}})
        })
        .collect();
    rules.push(serde_json::json!({
        "if": {
            "properties": {"decision": {"const": "failure"}},
            "required": ["decision"],
            "not": {"required": ["action_id"]}
        },
        "then": {"required": ["error_id", "exit_code", "summary_error_ids", "error"]}
    }));
    if let Value::Object(m) = &mut schema {
        m.insert("allOf".into(), Value::Array(rules));
    }
    schema
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_is_canonical() {
        let mut f = Fact::new(Stage::ApplyResult, Decision::Success);
        f.duration_ms = Some(5);
        f.target_run_id = Some(Uuid::now_v7().to_string());
        let mut e = Emitter::new(vec![], None, true);
        e.emit(f);
        let v = redact(&serde_json::to_value(&e.log[0]).unwrap());
        assert_eq!(v["ts"], "1970-01-01T00:00:00Z");
        assert_eq!(v["run_id"], NIL);
        assert_eq!(v["target_run_id"], NIL);
        assert_eq!(v["event_id"], NIL);
        assert!(v.get("duration_ms").is_none() && v.get("dry_run").is_none());
        assert_eq!(v["seq"], 0);
    }
}
