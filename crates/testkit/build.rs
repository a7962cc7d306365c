//! Marks builds made by a non-root user with `cfg(testkit_not_root)`, so tests that
//! need root (tmpfs mounts, chattr) are `#[ignore = "needs root: ..."]` there —
//! reported as ignored, never as passed — and run, failing loudly on any missing
//! precondition, when built as root (CI, T3). A binary built as root but run by
//! another user panics in `switchyard_testkit::assert_root`.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(testkit_not_root)");
    println!("cargo::rerun-if-changed=build.rs");
    // Rebuild when the user (probably) changed; `assert_root` catches the rest.
    for var in ["USER", "LOGNAME", "HOME", "SUDO_UID"] {
        println!("cargo::rerun-if-env-changed={var}");
    }
    if !effective_uid_is_root() {
        println!("cargo::rustc-cfg=testkit_not_root");
    }
}

/// The effective uid from `/proc/self/status` (`Uid: real effective saved fs`).
fn effective_uid_is_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_else(|e| panic!("reading /proc/self/status: {e}"));
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or_else(|| panic!("no effective uid in /proc/self/status"));
    uid == "0"
}
