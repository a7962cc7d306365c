//! The crash child: runs one Switchyard operation with one failpoint armed, in its
//! own process, so a test can SIGKILL it at exactly that point (T1) or see the
//! injected error's effect. Its only input is the JSON [`Scenario`] in argv[1].

use std::io::Write;
use std::sync::atomic::{AtomicU32, Ordering};
use switchyard::{ApplyMode, PlanInput, Policy, RunSelector};
use switchyard_testkit::{engine_with, sp, ChildEnd, Scenario, HIT_MARKER};

fn main() {
    let arg = std::env::args().nth(1).unwrap_or_default();
    let sc: Scenario = serde_json::from_str(&arg).unwrap_or_else(|e| panic!("bad scenario: {e}"));
    let nth = sc.nth;
    match sc.mode.as_str() {
        "kill" => {
            let hits = AtomicU32::new(0);
            fail::cfg_callback(sc.failpoint.clone(), move || {
                if hits.fetch_add(1, Ordering::SeqCst) + 1 == nth {
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "{HIT_MARKER}");
                    let _ = out.flush();
                    loop {
                        std::thread::sleep(std::time::Duration::from_secs(1));
                    }
                }
            })
        }
        "error" => fail::cfg(sc.failpoint.clone(), &format!("{}*off->return", nth - 1)),
        m => panic!("unknown mode {m}"),
    }
    .unwrap_or_else(|e| panic!("arming failpoint: {e}"));
    let (sy, _) = engine_with(&sc.root, Policy::dev(), sc.fallback);
    let result = match sc.op.as_str() {
        "apply" => {
            let input = sc
                .links
                .iter()
                .fold(PlanInput::default(), |i, (t, s)| i.link(sp(t), sp(s)));
            let plan = sy.plan(&input).unwrap_or_else(|e| panic!("plan: {e}"));
            sy.apply(&plan, ApplyMode::Commit)
                .map(|r| (r.changed, r.warnings))
        }
        "rollback" => {
            let id = sc
                .run
                .as_deref()
                .and_then(|r| r.parse().ok())
                .unwrap_or_else(|| panic!("rollback needs a run"));
            sy.rollback(RunSelector::Id(id), ApplyMode::Commit)
                .map(|r| (r.changed, r.warnings))
        }
        "recover" => sy
            .recover(ApplyMode::Commit)
            .map(|r| (r.changed, Vec::new())),
        op => panic!("unknown op {op}"),
    };
    let end = match result {
        Ok((_, warnings)) if !warnings.is_empty() => ChildEnd::Warned(warnings),
        r => ChildEnd::Finished(
            r.map(|(changed, _)| changed)
                .map_err(|e| e.id().as_str().to_owned()),
        ),
    };
    println!("{}", serde_json::to_string(&end).unwrap_or_default());
}
