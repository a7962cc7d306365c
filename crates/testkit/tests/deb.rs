//! The package test kit against the real tools (T7): packages built with dpkg-deb,
//! installed, upgraded, diverted and queried by the real dpkg over a temp root. These
//! tests also pin the dpkg behaviours the M1–M5 design relies on:
//!
//! - a `--no-rename` diversion of a packaged path to `usr/bin/.switchyard/NAME.1.bak`
//!   makes an upgrade write the new file to the backup path, leaving the target (the
//!   swapped-in symlink, or whatever is there) untouched, and leaves no `.dpkg-new`
//!   or `.dpkg-tmp` name in the 0700 backup store (M2);
//! - on a merged-/usr root, dpkg matches diversions against the path *as the package
//!   ships it*: a package shipping `/bin/gamma` ignores a diversion of `/usr/bin/gamma`
//!   (and overwrites `usr/bin/gamma` through the `bin -> usr/bin` link), while a
//!   diversion of `/bin/gamma` applies (DEP17); and `dpkg -S /usr/bin/gamma` does not
//!   name the package (M1's aliasing has to be Switchyard's own);
//! - `dpkg --verify` and `dpkg --audit` report problems on stdout and exit 0.
//!
//! Root-only tests are ignored in a non-root build and fail loudly in CI (T3).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use switchyard_testkit::{assert_root, get_cap, run_as_nobody, set_cap, Deb, DpkgRoot, Tree};

const PKG: &str = "sy-test";

/// Version `v` of the test package: `usr/bin/alpha` (0755), `usr/bin/beta` (setuid
/// root, 04755) and, when `merged`, `bin/gamma` (shipped under `/bin`, as bookworm's
/// coreutils ships `/bin/ls`).
fn pkg(v: u32, merged: bool) -> Deb {
    let mut b = Deb::builder(PKG, &format!("{v}.0"))
        .file(
            "usr/bin/alpha",
            format!("#!/bin/sh\necho alpha v{v}\n").as_bytes(),
            0o755,
        )
        .file(
            "usr/bin/beta",
            format!("#!/bin/sh\necho beta v{v}\n").as_bytes(),
            0o4755,
        );
    if merged {
        b = b.file(
            "bin/gamma",
            format!("#!/bin/sh\necho gamma v{v}\n").as_bytes(),
            0o755,
        );
    }
    b.build()
}

fn body(name: &str, v: u32) -> Vec<u8> {
    format!("#!/bin/sh\necho {name} v{v}\n").into_bytes()
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()))
        .mode()
        & 0o7777
}

/// Entry names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// What the engine does for a package-owned target (M2, §7 step 3), done by hand:
/// the root-only store, the diversion of `packaged` (the path as the package ships
/// it) to the backup path, the original moved there, a symlink to an alternative in
/// its place. Returns the backup's host path.
fn swap_by_hand(r: &DpkgRoot, name: &str, packaged: &str) -> std::path::PathBuf {
    let store = r.host("usr/bin/.switchyard");
    if !store.exists() {
        std::fs::create_dir(&store).unwrap();
        std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    let alt = r.host(&format!("usr/lib/alt/{name}"));
    std::fs::create_dir_all(alt.parent().unwrap()).unwrap();
    std::fs::write(&alt, format!("#!/bin/sh\necho alt-{name}\n")).unwrap();
    std::fs::set_permissions(&alt, std::fs::Permissions::from_mode(0o755)).unwrap();
    r.divert_add(packaged, &format!("/usr/bin/.switchyard/{name}.1.bak"));
    let bak = store.join(format!("{name}.1.bak"));
    let target = r.host(&format!("usr/bin/{name}"));
    std::fs::rename(&target, &bak).unwrap();
    std::os::unix::fs::symlink(format!("../lib/alt/{name}"), &target).unwrap();
    bak
}

/// The package is built with dpkg-deb, every entry root:root, modes as given (setuid
/// kept). dpkg-deb needs no root.
#[test]
fn packages_are_built_root_owned_with_their_modes_t7() {
    let d = pkg(1, true);
    assert!(d.path().is_file(), "{}", d.path().display());
    assert_eq!((d.name(), d.version()), (PKG, "1.0"));
    let c = d.contents();
    let line = |p: &str| {
        c.iter()
            .find(|l| l.ends_with(p))
            .unwrap_or_else(|| panic!("{p} not in {c:#?}"))
            .clone()
    };
    assert!(
        line("./usr/bin/beta").starts_with("-rwsr-xr-x root/root"),
        "{c:#?}"
    );
    assert!(
        line("./usr/bin/alpha").starts_with("-rwxr-xr-x root/root"),
        "{c:#?}"
    );
    assert!(
        line("./bin/gamma").starts_with("-rwxr-xr-x root/root"),
        "{c:#?}"
    );
    assert!(
        line("./usr/bin/").starts_with("drwxr-xr-x root/root"),
        "{c:#?}"
    );
    assert!(
        c.iter().all(|l| l.contains(" root/root ")),
        "every entry root:root: {c:#?}"
    );
}

/// Install, search, verify, upgrade on a plain root; verify sees tampering (so a
/// clean verify in the other tests means something).
#[test]
#[cfg_attr(
    testkit_not_root,
    ignore = "needs root: dpkg --root installs root-owned files"
)]
fn install_search_verify_and_upgrade_t7_m1() {
    assert_root("install_search_verify_and_upgrade_t7_m1");
    let r = DpkgRoot::new();
    assert!(r.divert_list().is_empty());
    assert!(r.verify().lines().is_empty());
    assert_eq!(
        r.search("/usr/bin/alpha").code(),
        1,
        "nothing installed yet"
    );

    r.install(&pkg(1, false));
    assert_eq!(r.status_of(PKG), "install ok installed");
    assert_eq!(r.version_of(PKG), "1.0");
    let s = r.search("/usr/bin/alpha");
    assert_eq!(
        (s.code(), s.lines()),
        (0, vec![format!("{PKG}: /usr/bin/alpha")])
    );
    let v = r.verify();
    assert_eq!((v.code(), v.lines()), (0, Vec::<String>::new()), "{v:?}");
    assert!(r.audit().lines().is_empty());
    let beta = std::fs::symlink_metadata(r.host("usr/bin/beta")).unwrap();
    assert_eq!(
        (beta.mode() & 0o7777, beta.uid(), beta.gid()),
        (0o4755, 0, 0)
    );
    assert_eq!(read(&r.host("usr/bin/alpha")), body("alpha", 1));
    assert_eq!(
        names(&r.host("var/lib/dpkg/info")),
        ["format", "sy-test.list", "sy-test.md5sums"]
    );

    r.install(&pkg(2, false));
    assert_eq!(r.version_of(PKG), "2.0");
    assert_eq!(read(&r.host("usr/bin/alpha")), body("alpha", 2));
    assert_eq!(read(&r.host("usr/bin/beta")), body("beta", 2));
    assert_eq!(mode(&r.host("usr/bin/beta")), 0o4755);
    assert!(r.verify().lines().is_empty());
    assert_eq!(names(&r.host("usr/bin")), ["alpha", "beta"], "no litter");

    // Tampering and a missing file are reported — on stdout, with exit status 0.
    std::fs::write(r.host("usr/bin/alpha"), b"tampered").unwrap();
    std::fs::remove_file(r.host("usr/bin/beta")).unwrap();
    let v = r.verify();
    assert_eq!(
        v.lines(),
        ["??5??????   /usr/bin/alpha", "missing     /usr/bin/beta"],
        "{v:?}"
    );
    assert_eq!(
        v.code(),
        0,
        "dpkg 1.21 --verify exits 0 when it reports problems"
    );
}

/// M2's premise: with a `--no-rename` diversion of the target to its backup path,
/// an upgrade writes the new packaged file to the backup (mode and owner as packaged,
/// setuid included) and leaves the target — here the swapped-in symlink — exactly
/// as it was. It also covers the diversion of a path still holding its file: the
/// file stays, and the upgrade creates the diverted-to file. No `.dpkg-new` or
/// `.dpkg-tmp` name is left in the 0700 store, which stays 0700.
#[test]
#[cfg_attr(testkit_not_root, ignore = "needs root: dpkg --root, dpkg-divert")]
fn a_diversion_sends_upgrades_to_the_backup_t7_m2() {
    assert_root("a_diversion_sends_upgrades_to_the_backup_t7_m2");
    let r = DpkgRoot::new();
    r.install(&pkg(1, false));
    // alpha: swapped the way the engine swaps (diversion, original to the store,
    // symlink in its place).
    let alpha_bak = swap_by_hand(&r, "alpha", "/usr/bin/alpha");
    // beta: only diverted, the v1 file left where it is.
    r.divert_add("/usr/bin/beta", "/usr/bin/.switchyard/beta.1.bak");
    assert_eq!(
        r.divert_list(),
        [
            "diversion of /usr/bin/alpha to /usr/bin/.switchyard/alpha.1.bak by switchyard",
            "diversion of /usr/bin/beta to /usr/bin/.switchyard/beta.1.bak by switchyard",
        ]
    );
    let s = r.search("/usr/bin/alpha");
    assert_eq!(
        s.lines(),
        [
            "diversion by switchyard from: /usr/bin/alpha",
            "diversion by switchyard to: /usr/bin/.switchyard/alpha.1.bak",
            "sy-test: /usr/bin/alpha",
        ],
        "{s:?}"
    );
    // dpkg verifies the diverted-to path, and names it: the moved original
    // verifies; beta's v1 file is not where dpkg now looks.
    assert_eq!(
        r.verify().lines(),
        ["missing     /usr/bin/.switchyard/beta.1.bak"],
        "verify looks at the diverted-to path"
    );
    let before = Tree::capture(r.path(), &["var", "usr/bin/.switchyard"]);

    r.install(&pkg(2, false));
    assert_eq!(r.version_of(PKG), "2.0");
    let after = Tree::capture(r.path(), &["var", "usr/bin/.switchyard"]);
    assert_eq!(
        before, after,
        "the upgrade changed nothing outside the backup store: the symlink \
         usr/bin/alpha and beta's v1 file are untouched"
    );
    assert_eq!(read(&r.host("usr/bin/beta")), body("beta", 1));
    assert_eq!(
        read(&alpha_bak),
        body("alpha", 2),
        "v2 written to the backup"
    );
    assert_eq!(mode(&alpha_bak), 0o755);
    let beta_bak = r.host("usr/bin/.switchyard/beta.1.bak");
    assert_eq!(read(&beta_bak), body("beta", 2));
    let m = std::fs::symlink_metadata(&beta_bak).unwrap();
    assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o4755, 0, 0));
    assert_eq!(
        names(&r.host("usr/bin/.switchyard")),
        ["alpha.1.bak", "beta.1.bak"],
        "no .dpkg-new/.dpkg-tmp left in the store"
    );
    assert_eq!(
        mode(&r.host("usr/bin/.switchyard")),
        0o700,
        "S8 store stays 0700"
    );
    assert!(r.verify().lines().is_empty(), "{:?}", r.verify());

    // Removing the diversion while the symlink is in place: verify sees the target
    // is not the packaged file (what M2's undo must avoid leaving behind).
    r.divert_remove("/usr/bin/alpha");
    assert_eq!(r.verify().lines(), ["?M5??????   /usr/bin/alpha"]);
}

/// Merged-/usr (DEP17): a package shipping `/bin/gamma` is not affected by a
/// diversion of `/usr/bin/gamma` — the upgrade replaces the swapped-in symlink at
/// `usr/bin/gamma` (through `bin -> usr/bin`) with the new file and leaves the
/// backup as it was. `dpkg -S /usr/bin/gamma` does not find the package either.
#[test]
#[cfg_attr(testkit_not_root, ignore = "needs root: dpkg --root, dpkg-divert")]
fn merged_usr_a_diversion_of_the_usr_path_does_not_apply_t7_m1_m2() {
    assert_root("merged_usr_a_diversion_of_the_usr_path_does_not_apply_t7_m1_m2");
    let r = DpkgRoot::merged_usr();
    r.install(&pkg(1, true));
    let g = std::fs::symlink_metadata(r.host("usr/bin/gamma")).unwrap();
    assert!(g.is_file(), "installed through the bin -> usr/bin link");
    assert_eq!(
        std::fs::read_link(r.host("bin")).unwrap(),
        Path::new("usr/bin"),
        "dpkg kept the merged-/usr link"
    );
    assert_eq!(r.search("/bin/gamma").lines(), ["sy-test: /bin/gamma"]);
    let s = r.search("/usr/bin/gamma");
    assert_eq!(
        s.code(),
        1,
        "dpkg -S does not alias /usr/bin to /bin: {s:?}"
    );
    assert!(r.verify().lines().is_empty());

    let bak = swap_by_hand(&r, "gamma", "/usr/bin/gamma");
    assert_eq!(read(&bak), body("gamma", 1));
    r.install(&pkg(2, true));
    let g = std::fs::symlink_metadata(r.host("usr/bin/gamma")).unwrap();
    assert!(
        g.is_file(),
        "the upgrade replaced the swapped-in symlink with the packaged file"
    );
    assert_eq!(read(&r.host("usr/bin/gamma")), body("gamma", 2));
    assert_eq!(read(&bak), body("gamma", 1), "the backup was not updated");
    assert_eq!(names(&r.host("usr/bin/.switchyard")), ["gamma.1.bak"]);
    assert!(
        r.verify().lines().is_empty(),
        "dpkg is content: it wrote /bin/gamma"
    );
}

/// Merged-/usr: a diversion of `/bin/gamma` (the path as packaged) applies — the
/// upgrade writes the backup and leaves the symlink at `usr/bin/gamma` alone, no
/// litter in the store. A second diversion of `/usr/bin/gamma` to the same backup
/// path is refused by dpkg-divert as a clash.
#[test]
#[cfg_attr(testkit_not_root, ignore = "needs root: dpkg --root, dpkg-divert")]
fn merged_usr_a_diversion_of_the_packaged_path_applies_t7_m1_m2() {
    assert_root("merged_usr_a_diversion_of_the_packaged_path_applies_t7_m1_m2");
    let r = DpkgRoot::merged_usr();
    r.install(&pkg(1, true));
    let bak = swap_by_hand(&r, "gamma", "/bin/gamma");
    assert!(r.verify().lines().is_empty(), "{:?}", r.verify());
    let clash = r.divert(&[
        "--no-rename",
        "--package",
        "switchyard",
        "--divert",
        "/usr/bin/.switchyard/gamma.1.bak",
        "--add",
        "/usr/bin/gamma",
    ]);
    assert_eq!(clash.code(), 2, "{clash:?}");
    assert!(clash.stderr.contains("clashes with"), "{clash:?}");
    assert_eq!(
        r.divert_list(),
        ["diversion of /bin/gamma to /usr/bin/.switchyard/gamma.1.bak by switchyard"]
    );
    // Everything but the store and the (undiverted, upgraded) alpha and beta.
    let skip = [
        "var",
        "usr/bin/.switchyard",
        "usr/bin/alpha",
        "usr/bin/beta",
    ];
    let link = Tree::capture(r.path(), &skip);

    r.install(&pkg(2, true));
    assert_eq!(read(&r.host("usr/bin/alpha")), body("alpha", 2), "upgraded");
    assert_eq!(
        Tree::capture(r.path(), &skip),
        link,
        "the upgrade left usr/bin/gamma (and the bin link) alone"
    );
    assert_eq!(
        std::fs::read_link(r.host("usr/bin/gamma")).unwrap(),
        Path::new("../lib/alt/gamma")
    );
    assert_eq!(read(&bak), body("gamma", 2));
    assert_eq!(names(&r.host("usr/bin/.switchyard")), ["gamma.1.bak"]);
    assert!(r.verify().lines().is_empty());
}

/// `set_state` makes a package half-configured / half-installed the way dpkg records
/// it, and dpkg itself reads it back so (M3's refusal tests rely on this).
#[test]
#[cfg_attr(testkit_not_root, ignore = "needs root: dpkg --root")]
fn set_state_is_what_dpkg_reports_t7_m3() {
    assert_root("set_state_is_what_dpkg_reports_t7_m3");
    let r = DpkgRoot::new();
    r.install(&pkg(1, false));
    r.set_state(PKG, "half-configured");
    assert_eq!(r.status_of(PKG), "install ok half-configured");
    let a = r.audit();
    assert!(
        a.stdout.contains("only half configured") && a.stdout.contains(PKG),
        "{a:?}"
    );
    assert_eq!(
        a.code(),
        0,
        "dpkg 1.21 --audit exits 0 when it reports problems"
    );

    let r = DpkgRoot::new();
    r.install(&pkg(1, false));
    r.set_state(PKG, "half-installed");
    assert_eq!(r.status_of(PKG), "install reinstreq half-installed");
    let a = r.audit();
    assert!(
        a.stdout.contains("in a mess") && a.stdout.contains(PKG),
        "{a:?}"
    );
}

/// The S8 helpers: `run_as_nobody` really drops to uid/gid 65534 without groups
/// before the exec, so it is refused a program — an ELF binary or a script — inside a
/// 0700 directory, and runs the same program outside it (a bare `setpriv -- PATH`
/// would run the ELF one: setpriv execs with root's capabilities still held);
/// `set_cap` / `get_cap` round-trip file capabilities.
#[test]
#[cfg_attr(testkit_not_root, ignore = "needs root: setpriv, setcap")]
fn nobody_and_capability_helpers_t7_s8() {
    assert_root("nobody_and_capability_helpers_t7_s8");
    let id = run_as_nobody("id", &[]);
    assert_eq!(
        (id.code(), id.stdout.trim()),
        (
            0,
            "uid=65534(nobody) gid=65534(nogroup) groups=65534(nogroup)"
        ),
        "{id:?}"
    );
    let r = DpkgRoot::new();
    r.install(&pkg(1, false));
    let beta = r.host("usr/bin/beta");
    let ok = run_as_nobody(beta.to_str().unwrap(), &[]);
    assert_eq!((ok.code(), ok.stdout.as_str()), (0, "beta v1\n"), "{ok:?}");
    let bak = swap_by_hand(&r, "beta", "/usr/bin/beta");
    let refused = run_as_nobody(bak.to_str().unwrap(), &[]);
    assert_eq!(refused.code(), 126, "{refused:?}");
    assert!(refused.stderr.contains("Permission denied"), "{refused:?}");
    assert!(refused.stdout.is_empty(), "{refused:?}");
    // An ELF program: runs from usr/bin, refused from the 0700 store.
    let elf = std::fs::read("/usr/bin/true").unwrap();
    for p in ["usr/bin/true", "usr/bin/.switchyard/true"] {
        std::fs::write(r.host(p), &elf).unwrap();
        std::fs::set_permissions(r.host(p), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let free = run_as_nobody(r.host("usr/bin/true").to_str().unwrap(), &[]);
    assert_eq!(free.code(), 0, "{free:?}");
    let kept = run_as_nobody(r.host("usr/bin/.switchyard/true").to_str().unwrap(), &[]);
    assert_eq!(kept.code(), 126, "{kept:?}");

    let alpha = r.host("usr/bin/alpha");
    assert_eq!(get_cap(&alpha), None);
    set_cap(&alpha, "cap_net_raw+ep");
    assert_eq!(get_cap(&alpha).as_deref(), Some("cap_net_raw=ep"));
}
