//! A2 observer: while the engine swaps one target back and forth 20 000 times
//! (10 000 apply/rollback pairs), a second thread lstat()s and stat()s it without
//! pause. It must never see ENOENT, nor a dangling link.
//!
//! The root lives on /dev/shm (tmpfs) when present, so the run measures rename
//! atomicity rather than disk fsync latency; the rename paths are the same.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use switchyard::{ApplyMode, PlanInput, Policy, RunSelector};
use switchyard_testkit::{engine_for, sp};

const SWAPS: usize = 20_000;

#[test]
fn concurrent_stat_never_sees_a_missing_target_a2() {
    let base = std::path::Path::new("/dev/shm");
    let dir = if base.is_dir() {
        tempfile::tempdir_in(base)
    } else {
        tempfile::tempdir()
    }
    .unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("usr/bin")).unwrap();
    std::fs::create_dir_all(root.join("usr/lib/alt")).unwrap();
    std::fs::create_dir_all(root.join("var/lib")).unwrap();
    std::fs::write(root.join("usr/bin/ls"), b"gnu").unwrap();
    std::fs::write(root.join("usr/lib/alt/ls"), b"alt").unwrap();
    let (sy, _) = engine_for(root, Policy::dev());
    let plan = sy
        .plan(&PlanInput::default().link(sp("usr/bin/ls"), sp("usr/lib/alt/ls")))
        .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let (looks, missing, other) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let target = root.join("usr/bin/ls");
    let observer = {
        let (stop, looks, missing, other) =
            (stop.clone(), looks.clone(), missing.clone(), other.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for r in [
                    std::fs::symlink_metadata(&target),
                    std::fs::metadata(&target),
                ] {
                    looks.fetch_add(1, Ordering::Relaxed);
                    match r {
                        Ok(_) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                            missing.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => {
                            other.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        })
    };
    for _ in 0..SWAPS / 2 {
        let rep = sy.apply(&plan, ApplyMode::Commit).unwrap();
        assert!(rep.changed);
        sy.rollback(RunSelector::Id(rep.run_id), ApplyMode::Commit)
            .unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    observer.join().unwrap();
    let (n, miss, oth) = (
        looks.load(Ordering::Relaxed),
        missing.load(Ordering::Relaxed),
        other.load(Ordering::Relaxed),
    );
    eprintln!("A2 observer: {SWAPS} swaps, {n} stats, {miss} ENOENT, {oth} other errors");
    assert!(n > 1000, "observer barely ran ({n} looks)");
    assert_eq!(
        (miss, oth),
        (0, 0),
        "target was missing or broken during swaps"
    );
    assert_eq!(std::fs::read(root.join("usr/bin/ls")).unwrap(), b"gnu");
}
