//! `doctor`: the lock, pending journals, the state directory's health, and what
//! `recover` would do. Read-only (it never creates the state directory or the lock
//! file); exits 90 (`E_RECOVERY`) when an interrupted run is pending, 1 when anything
//! else needs attention.

use crate::commands::{CmdResult, Ctx, Failure};
use crate::output::{Out, Paint};
use serde_json::{json, Value};
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use switchyard::adapters::lock::{probe, LOCK_FILE};
use switchyard::journal::RunKind;
use switchyard::{ApplyMode, Error, ErrorId, Outcome, Policy};

fn kind_str(k: RunKind) -> &'static str {
    match k {
        RunKind::Apply => "apply",
        RunKind::Rollback => "rollback",
        RunKind::Recovery => "recovery",
    }
}

struct Report {
    lines: Vec<(Paint, String, String)>,
    problems: Vec<String>,
    pending: bool,
}

impl Report {
    fn ok(&mut self, what: &str, s: impl Into<String>) {
        self.lines.push((Paint::Green, what.into(), s.into()));
    }
    fn info(&mut self, what: &str, s: impl Into<String>) {
        self.lines.push((Paint::Yellow, what.into(), s.into()));
    }
    fn bad(&mut self, what: &str, s: impl Into<String>) {
        let s = s.into();
        self.problems.push(format!("{what}: {s}"));
        self.lines.push((Paint::Red, what.into(), s));
    }
}

/// `doctor`.
pub fn doctor(ctx: &Ctx) -> CmdResult {
    let mut r = Report {
        lines: Vec::new(),
        problems: Vec::new(),
        pending: false,
    };
    let mut doc = json!({});
    let state_path = match &ctx.state {
        Some(p) => p.clone(),
        None => ctx.root.join("var/lib/switchyard"),
    };
    doc["state_dir"] = json!({"path": state_path.display().to_string()});
    doc["lock"] = json!({"state": "absent", "pid": null});
    doc["pending_journals"] = json!([]);
    doc["recover"] = json!([]);
    match ctx.open_state() {
        Err(e) => {
            r.bad(
                "state directory",
                format!("{} cannot be opened: {}", state_path.display(), e.message()),
            );
            doc["state_dir"]["exists"] = json!(true);
        }
        Ok(None) => {
            r.ok(
                "state directory",
                format!(
                    "{} does not exist yet (nothing has been committed here)",
                    state_path.display()
                ),
            );
            r.ok("lock", "free (no lock file yet)");
            doc["state_dir"]["exists"] = json!(false);
        }
        Ok(Some(sd)) => {
            doc["state_dir"]["exists"] = json!(true);
            match std::fs::symlink_metadata(&state_path) {
                Ok(md) if md.mode() & 0o022 != 0 => r.bad(
                    "state directory",
                    format!(
                        "{} is group/world-writable (mode {:o}): anyone could forge records; run `chmod go-w` on it",
                        state_path.display(),
                        md.mode() & 0o7777
                    ),
                ),
                Ok(_) => r.ok("state directory", state_path.display().to_string()),
                Err(e) => r.bad("state directory", format!("{}: {e}", state_path.display())),
            }
            let lock_exists =
                rustix::fs::statat(sd.fd(), LOCK_FILE, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
                    .is_ok();
            if !lock_exists {
                r.ok("lock", "free (no lock file yet)");
            } else {
                match probe(sd.fd().as_fd()) {
                    Ok(None) => {
                        r.ok("lock", "free");
                        doc["lock"] = json!({"state": "free", "pid": null});
                    }
                    Ok(Some(pid)) => {
                        let who = if pid == 0 {
                            "an unknown process".to_owned()
                        } else {
                            format!("pid {pid}")
                        };
                        r.info(
                            "lock",
                            format!("held by {who}: a switchyard run is in progress"),
                        );
                        doc["lock"] = json!({"state": "held", "pid": (pid != 0).then_some(pid)});
                    }
                    Err(e) => {
                        r.bad("lock", format!("cannot be probed: {e}"));
                        doc["lock"] = json!({"state": "unknown", "pid": null});
                    }
                }
            }
            match sd.records() {
                Ok(recs) => {
                    r.ok(
                        "run records",
                        format!(
                            "{} readable under {}/runs",
                            recs.len(),
                            state_path.display()
                        ),
                    );
                    doc["state_dir"]["records"] = json!(recs.len());
                }
                Err(e) => r.bad("run records", e.message().to_owned()),
            }
            match sd.pending() {
                Ok(p) if p.is_empty() => r.ok("pending journal", "none"),
                Ok(p) => {
                    r.pending = true;
                    let list: Vec<String> = p
                        .iter()
                        .map(|j| format!("{} ({})", j.run_id, kind_str(j.kind)))
                        .collect();
                    r.bad(
                        "pending journal",
                        format!("interrupted run(s): {}", list.join(", ")),
                    );
                    doc["pending_journals"] = json!(p
                        .iter()
                        .map(|j| json!({"run_id": j.run_id.to_string(), "kind": kind_str(j.kind)}))
                        .collect::<Vec<_>>());
                }
                Err(e) => {
                    r.pending = true;
                    r.bad("pending journal", e.message().to_owned());
                }
            }
        }
    }
    // What recovery would do (a dry-run never mutates).
    match ctx
        .engine(Policy::production(), Vec::new())
        .and_then(|sy| sy.recover(ApplyMode::DryRun))
    {
        Ok(rep) if rep.settled.is_empty() => r.ok("recover would", "do nothing"),
        Ok(rep) => {
            let list: Vec<String> = rep
                .settled
                .iter()
                .map(|(id, o)| match o {
                    Outcome::Completed => format!("complete run {id} (it had committed)"),
                    Outcome::Undone => format!("undo run {id}"),
                })
                .collect();
            r.info(
                "recover would",
                format!("{} — run `switchyard recover --commit`", list.join("; ")),
            );
            doc["recover"] = json!(rep
                .settled
                .iter()
                .map(
                    |(id, o)| json!({"run_id": id.to_string(), "outcome": match o {
                        Outcome::Completed => "completed",
                        Outcome::Undone => "undone",
                    }})
                )
                .collect::<Vec<_>>());
        }
        Err(e) => r.bad("recover would", format!("fail: {}", e.message())),
    }
    let err = if r.pending {
        Some(
            Error::new(
                ErrorId::Recovery,
                format!("needs attention: {}", r.problems.join("; ")),
            )
            .with_remediation("run `switchyard recover --commit`"),
        )
    } else if !r.problems.is_empty() {
        Some(Error::new(
            ErrorId::Generic,
            format!("needs attention: {}", r.problems.join("; ")),
        ))
    } else {
        None
    };
    doc["problems"] = json!(r.problems);
    doc["exit_code"] = json!(err.as_ref().map_or(0, |e| e.exit_code()));
    doc["error_id"] = err.as_ref().map_or(Value::Null, |e| json!(e.id().as_str()));
    let out: &Out = &ctx.out;
    out.json(&doc);
    let width = r.lines.iter().map(|(_, w, _)| w.len()).max().unwrap_or(0);
    let mut s = String::new();
    for (p, what, text) in &r.lines {
        let mark = match p {
            Paint::Green => out.paint(Paint::Green, "ok  "),
            Paint::Red => out.paint(Paint::Red, "FIX "),
            _ => out.paint(Paint::Yellow, "note"),
        };
        s.push_str(&format!("{mark}  {what:<width$}  {text}\n"));
    }
    if err.is_some() && !out.json {
        // Print the report even though the command fails: it is the diagnosis.
        let _ = std::io::stdout().lock().write_all(s.as_bytes());
    } else {
        out.say(&s);
    }
    match err {
        Some(e) => Err(Failure {
            error: e,
            json_printed: true,
        }),
        None => Ok(0),
    }
}
