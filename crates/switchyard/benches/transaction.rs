//! Cost of one committed transaction: apply + rollback of N links, on the working
//! disk (real fsyncs) and on tmpfs (`/dev/shm`, fsync is free: pure syscall cost).
//! Run with `cargo bench -p switchyard`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // bench code

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::path::Path;
use switchyard::{ApplyMode, FileLock, PlanInput, Policy, RunSelector, SafePath, Switchyard};

fn setup(base: &Path, n: usize) -> (tempfile::TempDir, Switchyard, switchyard::Plan) {
    let dir = tempfile::tempdir_in(base).unwrap();
    let root = dir.path();
    for d in ["usr/bin", "usr/lib/alt", "var/lib"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let mut input = PlanInput::default();
    for i in 0..n {
        std::fs::write(root.join(format!("usr/bin/t{i}")), vec![b'g'; 64 * 1024]).unwrap();
        std::fs::write(
            root.join(format!("usr/lib/alt/t{i}")),
            vec![b'a'; 64 * 1024],
        )
        .unwrap();
        let p = |s: String| SafePath::new(&s).unwrap();
        input = input.link(p(format!("usr/bin/t{i}")), p(format!("usr/lib/alt/t{i}")));
    }
    let mut policy = Policy::dev();
    policy.allow_roots = vec![SafePath::new("usr/bin").unwrap()];
    let sy = Switchyard::builder(policy)
        .root(root)
        .with_lock_manager(FileLock::new())
        .build()
        .unwrap();
    let plan = sy.plan(&input).unwrap();
    (dir, sy, plan)
}

fn bench(c: &mut Criterion) {
    let shm = Path::new("/dev/shm");
    let disk = std::env::temp_dir();
    let mut bases = vec![("disk", disk.as_path())];
    if shm.is_dir() {
        bases.push(("tmpfs", shm));
    }
    for (label, base) in bases {
        let mut g = c.benchmark_group(format!("apply+rollback/{label}"));
        g.sample_size(20);
        for n in [1usize, 10, 100, 1000] {
            let (_dir, sy, plan) = setup(base, n);
            g.throughput(Throughput::Elements(n as u64));
            g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
                b.iter(|| {
                    let rep = sy.apply(&plan, ApplyMode::Commit).unwrap();
                    assert!(rep.changed);
                    sy.rollback(RunSelector::Id(rep.run_id), ApplyMode::Commit)
                        .unwrap();
                })
            });
        }
        g.finish();
        let mut g = c.benchmark_group(format!("dry-run/{label}"));
        g.sample_size(20);
        let (_dir, sy, plan) = setup(base, 100);
        g.bench_function("100", |b| {
            b.iter(|| sy.apply(&plan, ApplyMode::DryRun).unwrap())
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
