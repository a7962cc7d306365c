//! `doctor`: renders the library's health report ([`switchyard::Switchyard::doctor`]):
//! the state directory, the lock, pending journals and what `recover` would do.
//! Read-only; exits 90 (`E_RECOVERY`) when an interrupted run is pending, 1 when
//! anything else needs attention — the report's verdict.

use crate::commands::{CmdResult, Ctx, Failure};
use crate::output::{shown, Out, Paint};
use std::io::Write;
use switchyard::{Area, Health, LockState, Outcome, Policy};

/// The report's lines: (colour, area, text).
fn lines(h: &Health) -> Vec<(Paint, &'static str, String)> {
    let path = h.state_dir.path.display();
    let mut v = Vec::new();
    for area in Area::ALL {
        let name = area.as_str();
        let mut bad = false;
        for p in h.problems_in(area) {
            bad = true;
            v.push((Paint::Red, name, p.message.clone()));
        }
        let line = match area {
            Area::StateDir if !h.state_dir.exists => Some((
                Paint::Green,
                format!("{path} does not exist yet (nothing has been committed here)"),
            )),
            Area::StateDir => Some((Paint::Green, path.to_string())),
            Area::Lock => match (h.lock.state, h.lock.pid) {
                (LockState::Absent, _) => Some((Paint::Green, "free (no lock file yet)".into())),
                (LockState::Free, _) => Some((Paint::Green, "free".into())),
                (LockState::Held, pid) => {
                    let who = pid.map_or("an unknown process".to_owned(), |p| format!("pid {p}"));
                    Some((
                        Paint::Yellow,
                        format!("held by {who}: a switchyard run is in progress"),
                    ))
                }
                (LockState::Unknown, _) if bad => None,
                (LockState::Unknown, _) => Some((Paint::Yellow, "state unknown".into())),
            },
            Area::RunRecords => h
                .state_dir
                .records
                .map(|n| (Paint::Green, format!("{n} readable under {path}/runs"))),
            Area::PendingJournal if h.state_dir.opened => Some((Paint::Green, "none".into())),
            Area::PendingJournal => None,
            Area::Targets if bad => None,
            Area::Targets => h
                .managed_targets
                .map(|n| (Paint::Green, format!("{n} managed, all in effect"))),
            Area::Recover if h.recover.is_empty() => Some((Paint::Green, "do nothing".into())),
            Area::Recover => {
                let list: Vec<String> = h
                    .recover
                    .iter()
                    .map(|s| match s.outcome {
                        Outcome::Completed => {
                            format!("complete run {} (it had committed)", s.run_id)
                        }
                        // A rollback's journal is rolled forward: recovery finishes it.
                        Outcome::Undone
                            if h.pending_journals.iter().any(|p| {
                                p.run_id == s.run_id && p.kind == switchyard::RunKind::Rollback
                            }) =>
                        {
                            format!("finish rollback {}", s.run_id)
                        }
                        Outcome::Undone => format!("undo run {}", s.run_id),
                    })
                    .collect();
                Some((
                    Paint::Yellow,
                    format!("{} — run `switchyard recover --commit`", list.join("; ")),
                ))
            }
        };
        match line {
            // A problem replaces the area's "ok" line; notes (what recover would do)
            // are shown beside problems.
            Some((Paint::Green, _)) if bad => {}
            Some((p, text)) => v.push((p, name, text)),
            None => {}
        }
    }
    v
}

/// `doctor`.
pub fn doctor(ctx: &Ctx) -> CmdResult {
    let sy = ctx.engine(Policy::default(), Vec::new())?;
    let h = sy.doctor();
    let err = h.error();
    let out: &Out = &ctx.out;
    out.json(&serde_json::to_value(&h).unwrap_or_default());
    let lines = lines(&h);
    let width = lines.iter().map(|(_, w, _)| w.len()).max().unwrap_or(0);
    let mut s = String::new();
    for (p, what, text) in &lines {
        let mark = match p {
            Paint::Green => out.paint(Paint::Green, "ok  "),
            Paint::Red => out.paint(Paint::Red, "FIX "),
            _ => out.paint(Paint::Yellow, "note"),
        };
        s.push_str(&format!("{mark}  {what:<width$}  {}\n", shown(text)));
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
