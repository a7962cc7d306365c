//! Property: for random initial trees (regular files with odd modes and xattrs,
//! symlinks — dangling or not — and absent targets) and random plans over them,
//! apply then rollback restores the identical tree (R1, R2, R6), and applying twice
//! changes nothing the second time (D3).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use proptest::prelude::*;
use switchyard::{ApplyMode, PlanInput, Policy, RunSelector};
use switchyard_testkit::{engine_with, sp, Fixture, Tree};

#[derive(Debug, Clone)]
enum Init {
    Absent,
    File {
        body: Vec<u8>,
        mode: u32,
        xattr: Option<Vec<u8>>,
    },
    Symlink(String),
}

fn init() -> impl Strategy<Value = Init> {
    prop_oneof![
        Just(Init::Absent),
        (
            proptest::collection::vec(any::<u8>(), 0..64),
            prop::sample::select(vec![
                0o755u32, 0o700, 0o4755, 0o2711, 0o644, 0o600, 0o1777, 0o000
            ]),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 1..16)),
        )
            .prop_map(|(body, mode, xattr)| Init::File { body, mode, xattr }),
        prop::sample::select(vec![
            "gnu",
            "../lib/alt/t0",
            "/usr/bin/gnu",
            "missing",
            "../../../../etc"
        ])
        .prop_map(|s| Init::Symlink(s.to_owned())),
    ]
}

fn build(inits: &[Init]) -> Fixture {
    let f = Fixture::new();
    for (i, init) in inits.iter().enumerate() {
        let rel = format!("usr/bin/t{i}");
        match init {
            Init::Absent => {}
            Init::File { body, mode, xattr } => {
                f.write(&rel, body, *mode);
                if let Some(x) = xattr {
                    rustix::fs::lsetxattr(
                        f.host(&rel),
                        "user.prop",
                        x,
                        rustix::fs::XattrFlags::empty(),
                    )
                    .unwrap();
                }
            }
            Init::Symlink(d) => std::os::unix::fs::symlink(d, f.host(&rel)).unwrap(),
        }
        f.write(
            &format!("usr/lib/alt/t{i}"),
            format!("alt {i}").as_bytes(),
            0o755,
        );
    }
    f
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

    #[test]
    fn apply_rollback_is_identity_and_apply_is_idempotent(
        inits in proptest::collection::vec(init(), 1..6),
        chosen in proptest::collection::vec(any::<bool>(), 6),
        fallback in any::<bool>(),
    ) {
        let f = build(&inits);
        let before = f.tree();
        let (sy, _) = engine_with(f.path(), Policy::dev(), fallback);
        let mut input = PlanInput::default();
        for i in (0..inits.len()).filter(|i| chosen[*i]) {
            input = input.link(sp(&format!("usr/bin/t{i}")), sp(&format!("usr/lib/alt/t{i}")));
        }
        prop_assume!(!input.links.is_empty());
        let plan = sy.plan(&input).unwrap();
        let already = input.links.iter().all(|l| {
            std::fs::read_link(f.host(l.target.as_str())).ok().and_then(|d| d.to_str().map(str::to_owned))
                == Some(l.target.relative_link_to(&l.source))
        });
        let first = sy.apply(&plan, ApplyMode::Commit).unwrap();
        prop_assert_eq!(first.changed, !already, "D3: changed iff something was not yet in effect");
        for l in &input.links {
            let dest = std::fs::read_link(f.host(l.target.as_str())).unwrap();
            let want = l.target.relative_link_to(&l.source);
            prop_assert_eq!(dest.to_str(), Some(want.as_str()));
        }
        let applied = f.tree();
        let second = sy.apply(&plan, ApplyMode::Commit).unwrap();
        prop_assert!(!second.changed);
        prop_assert_eq!(&f.tree(), &applied);
        sy.rollback(RunSelector::Id(first.run_id), ApplyMode::Commit).unwrap();
        let after: Tree = f.tree();
        prop_assert_eq!(after, before);
    }
}
