//! Synthetic databases for the parser, and the real dpkg tools (T7) for what dpkg
//! itself writes, reads, refuses and locks. Every test has its own temp root.
use super::*;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A temp root with an admin directory: empty `status`, `info/`, `updates/`.
struct TRoot {
    dir: tempfile::TempDir,
}

impl TRoot {
    fn new() -> TRoot {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let t = TRoot { dir };
        for d in ["info", "updates"] {
            std::fs::create_dir_all(t.admin().join(d)).unwrap();
        }
        t.put("var/lib/dpkg/status", "");
        t
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn arg(&self) -> &str {
        self.path().to_str().unwrap()
    }

    fn admin(&self) -> PathBuf {
        self.path().join(ADMIN_DIR)
    }

    fn put(&self, rel: &str, text: &str) {
        let p = self.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path().join(rel)).unwrap()
    }

    fn root(&self) -> Root {
        Root::open(self.path()).unwrap()
    }

    fn load(&self, targets: &[&str]) -> DpkgDb {
        let t: Vec<SafePath> = targets.iter().map(|s| sp(s)).collect();
        let refs: Vec<&SafePath> = t.iter().collect();
        DpkgDb::load(&self.root(), &refs)
            .unwrap()
            .expect("a database")
    }

    fn admin_fd(&self) -> OwnedFd {
        self.root().open_dir(ADMIN_DIR).unwrap()
    }

    /// `dpkg --root R --force-not-root --log=/dev/null ARGS` (runs as non-root too).
    fn dpkg(&self, args: &[&str]) -> Output {
        let mut all = vec!["--root", self.arg(), "--force-not-root", "--log=/dev/null"];
        all.extend_from_slice(args);
        tool("dpkg", &all)
    }

    fn divert(&self, args: &[&str]) -> Output {
        let mut all = vec!["--root", self.arg()];
        all.extend_from_slice(args);
        tool("dpkg-divert", &all)
    }

    fn divert_list(&self) -> Vec<String> {
        let out = self.divert(&["--list"]);
        assert!(out.status.success(), "dpkg-divert --list: {out:?}");
        let mut l: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
        l.sort();
        l
    }
}

/// Test-side shorthands over the engine's accessors.
impl DpkgDb {
    fn owner(&self, target: &SafePath) -> Option<&Owner> {
        self.owners(target).first()
    }

    fn diversions(&self) -> &[Diversion] {
        &self.diversions
    }
}

fn sp(s: &str) -> SafePath {
    SafePath::new(s).unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A command with a fixed environment: `LC_ALL=C`, a fixed `PATH`, none of the
/// `DPKG_*` variables that would redirect dpkg or skip its frontend lock.
fn command(prog: &str, args: &[&str]) -> Command {
    let mut c = Command::new(prog);
    c.args(args).env("LC_ALL", "C").env(
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    );
    for v in [
        "DPKG_ROOT",
        "DPKG_ADMINDIR",
        "DPKG_FORCE",
        "DPKG_FRONTEND_LOCKED",
    ] {
        c.env_remove(v);
    }
    c
}

/// Runs a real tool (T7); panics naming the Debian package when it is missing.
fn tool(prog: &str, args: &[&str]) -> Output {
    command(prog, args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {prog} (apt-get install dpkg perl): {e}"))
}

/// Builds a package with `dpkg-deb --root-owner-group --build`: `files` (path,
/// content) and maintainer scripts (name, shell body).
fn build_deb(t: &TRoot, name: &str, files: &[(&str, &str)], scripts: &[(&str, &str)]) -> PathBuf {
    build_deb_version(t, name, "1.0-1", files, scripts)
}

fn build_deb_version(
    t: &TRoot,
    name: &str,
    version: &str,
    files: &[(&str, &str)],
    scripts: &[(&str, &str)],
) -> PathBuf {
    let src = t.path().join(format!("build-{name}-{version}"));
    let debian = src.join("DEBIAN");
    std::fs::create_dir_all(&debian).unwrap();
    std::fs::write(
        debian.join("control"),
        format!(
            "Package: {name}\nVersion: {version}\nArchitecture: all\nMaintainer: T <t@example.invalid>\n\
             Description: test package\n"
        ),
    )
    .unwrap();
    for (script, body) in scripts {
        let p = debian.join(script);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    for (path, content) in files {
        let p = src.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }
    for d in walk_dirs(&src) {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let deb = t.path().join(format!("{name}_{version}.deb"));
    let out = tool(
        "dpkg-deb",
        &[
            "--root-owner-group",
            "--build",
            src.to_str().unwrap(),
            deb.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "dpkg-deb: {}", stderr(&out));
    deb
}

fn walk_dirs(p: &Path) -> Vec<PathBuf> {
    let mut out = vec![p.to_path_buf()];
    for e in std::fs::read_dir(p).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            out.extend(walk_dirs(&e.path()));
        }
    }
    out
}

#[test]
fn status_stanzas_and_unsettled_states() {
    let text = "Package: a\nStatus: install ok installed\nVersion: 1\nArchitecture: all\nDescription: x\n continued\n\nPackage: b\nStatus: install ok half-configured\nVersion: 2\n\nPackage: c\nStatus: install reinstreq half-installed\nVersion: 3\n";
    let mut s = BTreeMap::new();
    parse_status(text.as_bytes(), &mut s);
    assert_eq!(s.len(), 3);
    let a = &s[&("a".to_owned(), "all".to_owned())];
    assert_eq!((a.package.as_str(), a.version.as_str()), ("a", "1"));
    let c = &s[&("c".to_owned(), String::new())];
    assert_eq!(c.status, "install reinstreq half-installed");
    assert_eq!(c.words(), ("install", "reinstreq", "half-installed"));
    assert!(c.owns_files());
}

#[test]
fn diversions_round_trip_and_conflicts_are_refused() {
    let text = "/usr/bin/a\n/usr/bin/a.real\n:\n/bin/b\n/usr/bin/.switchyard/b.1.bak\nswitchyard\n";
    let d = parse_diversions(text.as_bytes()).unwrap();
    assert_eq!(d.len(), 2);
    assert_eq!(d[0].holder, None);
    assert!(d[1].is_ours());
    assert!(parse_diversions(b"/a\n/b\n").is_err());
    check_diversions(&d).unwrap();
    let mut twice = d.clone();
    twice.push(Diversion::ours("/usr/bin/a", "/x"));
    assert!(check_diversions(&twice).is_err(), "a path diverted twice");
    let mut chained = d.clone();
    chained.push(Diversion::ours("/usr/bin/a.real", "/y"));
    assert!(
        check_diversions(&chained).is_err(),
        "diverted to a diverted path"
    );
    let mut relative = d;
    relative.push(Diversion::ours("usr/bin/c", "/z"));
    assert!(
        check_diversions(&relative).is_err(),
        "ours must be absolute"
    );
    assert_eq!(
        Diversion::ours("/a", "/b").describe(),
        "diversion of /a to /b by switchyard"
    );
}

#[test]
fn list_file_names_name_package_and_arch() {
    assert_eq!(list_owner("coreutils.list"), Some(("coreutils", None)));
    assert_eq!(
        list_owner("libc6:amd64.list"),
        Some(("libc6", Some("amd64")))
    );
    assert_eq!(list_owner("coreutils.md5sums"), None);
}

const STATUS: &str = "\
Package: coreutils
Essential: yes
Status: install ok installed
Priority: required
Architecture: amd64
Multi-Arch: foreign
Version: 9.1-1
Description: GNU core utilities
 This package contains the basic file, shell and text manipulation
 .
 Version: 0.0 (a continuation line, not a field)

Package: libfoo1
Status: install ok installed
Architecture: amd64
Multi-Arch: same
Version: 2.0-3

Package: libfoo1
Status: install ok installed
Architecture: i386
Multi-Arch: same
Version: 2.0-3

Package: oldpkg
Status: deinstall ok config-files
Architecture: amd64
Version: 0.1
Conffiles:
 /etc/oldpkg.conf 0123456789abcdef0123456789abcdef

Package: brokenpkg
Status: install reinstreq half-installed
Architecture: amd64
Version: 1.0

Package: halfconf
Status: install ok half-configured
Architecture: all
Version: 3

package: unpackedre
status: install reinstreq unpacked
architecture: all
version: 4

Package: gone
Status: purge ok not-installed
Architecture: amd64
";

const LS_MD5: &str = "0123456789abcdef0123456789abcdef";
const CAT_MD5: &str = "fedcba9876543210fedcba9876543210";

/// A merged-/usr root (`bin -> usr/bin`) with the database above.
fn synthetic() -> TRoot {
    let t = TRoot::new();
    t.put("var/lib/dpkg/status", STATUS);
    t.put(
        "var/lib/dpkg/info/coreutils.list",
        "/.\n/bin\n/bin/ls\n/usr\n/usr/bin\n/usr/bin/cat\n",
    );
    t.put(
        "var/lib/dpkg/info/coreutils.md5sums",
        &format!(
            "{LS_MD5}  bin/ls\n{}  usr/bin/cat\n",
            CAT_MD5.to_uppercase()
        ),
    );
    t.put(
        "var/lib/dpkg/info/libfoo1:amd64.list",
        "/usr/lib/x86_64-linux-gnu/libfoo.so.1\n",
    );
    t.put(
        "var/lib/dpkg/info/libfoo1:amd64.md5sums",
        "11111111111111111111111111111111  usr/lib/x86_64-linux-gnu/libfoo.so.1\n",
    );
    t.put(
        "var/lib/dpkg/info/libfoo1:i386.list",
        "/usr/lib/i386-linux-gnu/libfoo.so.1\n",
    );
    // A stale list of a removed package: it owns nothing.
    t.put(
        "var/lib/dpkg/info/oldpkg.list",
        "/usr/bin/cat\n/etc/oldpkg.conf\n",
    );
    t.put("var/lib/dpkg/info/brokenpkg.list", "/usr/bin/broken\n");
    t.put(
        "var/lib/dpkg/diversions",
        "/usr/bin/cat\n/usr/bin/cat.real\n:\n/bin/ls\n/usr/lib/sy/ls\nswitchyard\n",
    );
    std::fs::create_dir_all(t.path().join("usr/bin")).unwrap();
    std::os::unix::fs::symlink("usr/bin", t.path().join("bin")).unwrap();
    t
}

#[test]
fn status_lists_md5sums_and_merged_usr_m1() {
    let t = synthetic();
    let db = t.load(&[
        "usr/bin/ls",
        "usr/bin/cat",
        "usr/lib/x86_64-linux-gnu/libfoo.so.1",
        "usr/lib/i386-linux-gnu/libfoo.so.1",
        "usr/bin/broken",
        "usr/bin/none",
    ]);
    let own = |p: &str| db.owner(&sp(p)).cloned();
    assert_eq!(
        own("usr/bin/ls"),
        Some(Owner {
            package: "coreutils".into(),
            version: "9.1-1".into(),
            db_path: "/bin/ls".into(),
            md5: Some(LS_MD5.into()),
        })
    );
    // The stale list of the config-files package does not make it an owner.
    assert_eq!(db.owners(&sp("usr/bin/cat")).len(), 1);
    assert_eq!(own("usr/bin/cat").unwrap().md5.as_deref(), Some(CAT_MD5));
    let lib = own("usr/lib/x86_64-linux-gnu/libfoo.so.1").unwrap();
    assert_eq!(
        (lib.package.as_str(), lib.version.as_str()),
        ("libfoo1", "2.0-3")
    );
    assert_eq!(lib.md5.as_deref(), Some("11111111111111111111111111111111"));
    let lib32 = own("usr/lib/i386-linux-gnu/libfoo.so.1").unwrap();
    assert_eq!((lib32.package.as_str(), lib32.md5), ("libfoo1", None));
    // A half-installed package's files are on disk: it owns them.
    assert_eq!(own("usr/bin/broken").unwrap().package, "brokenpkg");
    assert_eq!(own("usr/bin/none"), None);
    // A target not asked for is not kept.
    assert_eq!(db.owner(&sp("etc/oldpkg.conf")), None);
    // The alias spelling of a target finds the same owner; canonical maps back.
    assert_eq!(db.owner(&sp("bin/ls")), db.owner(&sp("usr/bin/ls")));
    assert_eq!(db.canonical("/bin/ls"), "usr/bin/ls");
    assert_eq!(db.canonical("/usr/sbin/x"), "usr/sbin/x");
    assert_eq!(
        db.unsettled(),
        [
            ("brokenpkg".to_owned(), "half-installed".to_owned()),
            ("halfconf".to_owned(), "half-configured".to_owned()),
            ("unpackedre".to_owned(), "reinstreq".to_owned()),
        ]
    );
    assert_eq!(
        db.diversions(),
        [
            Diversion {
                from: "/usr/bin/cat".into(),
                to: "/usr/bin/cat.real".into(),
                holder: None
            },
            Diversion::ours("/bin/ls", "/usr/lib/sy/ls"),
        ]
    );
    // Diversions are per database spelling, as in dpkg.
    assert_eq!(db.diversion_of("/bin/ls"), Some(&db.diversions()[1]));
    assert_eq!(db.diversion_of("bin/ls"), Some(&db.diversions()[1]));
    assert_eq!(db.diversion_of("/usr/bin/ls"), None);
    assert_eq!(db.diversion_of("/usr/bin/cat.real"), None);
}

#[test]
fn both_spellings_are_kept_m1() {
    for link in ["usr/bin", "/usr/bin/"] {
        let t = TRoot::new();
        t.put(
            "var/lib/dpkg/status",
            "Package: old\nStatus: install ok installed\nVersion: 1\n\n\
             Package: new\nStatus: install ok installed\nVersion: 2\n",
        );
        t.put("var/lib/dpkg/info/old.list", "/bin/foo\n");
        t.put("var/lib/dpkg/info/new.list", "/usr/bin/foo\n");
        std::fs::create_dir_all(t.path().join("usr/bin")).unwrap();
        std::os::unix::fs::symlink(link, t.path().join("bin")).unwrap();
        let db = t.load(&["usr/bin/foo"]);
        let got: Vec<(&str, &str)> = db
            .owners(&sp("usr/bin/foo"))
            .iter()
            .map(|o| (o.package.as_str(), o.db_path.as_str()))
            .collect();
        // The on-disk spelling first.
        assert_eq!(
            got,
            [("new", "/usr/bin/foo"), ("old", "/bin/foo")],
            "{link}"
        );
        assert_eq!(db.owner(&sp("usr/bin/foo")).unwrap().package, "new");
    }
    // Without the alias `bin` is its own directory: two different paths.
    let t = TRoot::new();
    t.put(
        "var/lib/dpkg/status",
        "Package: old\nStatus: install ok installed\nVersion: 1\n",
    );
    t.put("var/lib/dpkg/info/old.list", "/bin/foo\n");
    std::fs::create_dir_all(t.path().join("bin")).unwrap();
    let db = t.load(&["usr/bin/foo", "bin/foo"]);
    assert_eq!(db.owner(&sp("usr/bin/foo")), None);
    assert_eq!(db.owner(&sp("bin/foo")).unwrap().db_path, "/bin/foo");
    // A link elsewhere than usr/<dir> is not an alias.
    let t = TRoot::new();
    t.put(
        "var/lib/dpkg/status",
        "Package: old\nStatus: install ok installed\nVersion: 1\n",
    );
    t.put("var/lib/dpkg/info/old.list", "/bin/foo\n");
    std::fs::create_dir_all(t.path().join("opt/bin")).unwrap();
    std::os::unix::fs::symlink("opt/bin", t.path().join("bin")).unwrap();
    assert_eq!(t.load(&["opt/bin/foo"]).owner(&sp("opt/bin/foo")), None);
}

#[test]
fn updates_journal_overrides_status_m3() {
    let t = TRoot::new();
    t.put(
        "var/lib/dpkg/status",
        "Package: a\nStatus: install ok installed\nVersion: 1\nArchitecture: all\n",
    );
    t.put("var/lib/dpkg/info/a.list", "/usr/bin/a\n");
    t.put(
        "var/lib/dpkg/updates/0000",
        "Package: a\nStatus: install ok half-configured\nVersion: 2\nArchitecture: all\n",
    );
    t.put(
        "var/lib/dpkg/updates/0001",
        "Package: a\nStatus: install ok half-configured\nVersion: 3\nArchitecture: all\n",
    );
    // dpkg's temporary name is not a journal entry.
    t.put(
        "var/lib/dpkg/updates/tmp.i",
        "Package: a\nStatus: install ok installed\nVersion: 9\nArchitecture: all\n",
    );
    let db = t.load(&["usr/bin/a"]);
    assert_eq!(
        db.unsettled(),
        [("a".to_owned(), "half-configured".to_owned())]
    );
    assert_eq!(db.owner(&sp("usr/bin/a")).unwrap().version, "3");
}

#[test]
fn no_database_is_none_m1() {
    let t = tempfile::tempdir().unwrap();
    let root = Root::open(t.path()).unwrap();
    assert!(DpkgDb::load(&root, &[&sp("usr/bin/ls")]).unwrap().is_none());
    std::fs::create_dir_all(t.path().join(ADMIN_DIR)).unwrap();
    assert!(DpkgDb::load(&root, &[&sp("usr/bin/ls")]).unwrap().is_none());
}

#[test]
fn symlinks_in_the_database_are_not_followed_s1() {
    // A symlinked var/lib/dpkg is refused, not followed out of the root.
    let outside = synthetic();
    let t = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(t.path().join("var/lib")).unwrap();
    std::os::unix::fs::symlink(outside.admin(), t.path().join(ADMIN_DIR)).unwrap();
    let err = DpkgDb::load(&Root::open(t.path()).unwrap(), &[&sp("usr/bin/ls")]).unwrap_err();
    assert_eq!(err.id(), ErrorId::Generic);
    assert_eq!(err.errno(), Some(Errno::LOOP.raw_os_error()), "{err}");
    // So is a symlinked status or list file.
    let t = TRoot::new();
    std::fs::remove_file(t.admin().join("status")).unwrap();
    std::os::unix::fs::symlink(outside.admin().join("status"), t.admin().join("status")).unwrap();
    let err = DpkgDb::load(&t.root(), &[&sp("usr/bin/ls")]).unwrap_err();
    assert!(err.message().contains("status"), "{err}");
    assert_eq!(err.errno(), Some(Errno::LOOP.raw_os_error()), "{err}");
    let t = TRoot::new();
    t.put("var/lib/dpkg/status", STATUS);
    std::os::unix::fs::symlink(
        outside.admin().join("info/coreutils.list"),
        t.admin().join("info/coreutils.list"),
    )
    .unwrap();
    let err = DpkgDb::load(&t.root(), &[&sp("usr/bin/ls")]).unwrap_err();
    assert!(err.message().contains("coreutils.list"), "{err}");
    assert_eq!(err.errno(), Some(Errno::LOOP.raw_os_error()), "{err}");
}

/// Diversions files and whether dpkg reads them (and sees every entry).
fn diversion_cases() -> Vec<(&'static str, String, bool)> {
    let long = |n: usize| format!("/{}", "x".repeat(n - 1));
    vec![
        ("two entries", "/a\n/b\n:\n/c\n/d\npkg\n".into(), true),
        ("empty", String::new(), true),
        ("diverted twice", "/a\n/b\n:\n/a\n/c\npkg\n".into(), false),
        (
            "diverted-to used twice",
            "/a\n/b\n:\n/c\n/b\npkg\n".into(),
            false,
        ),
        (
            "diverted-to diverted again",
            "/a\n/b\n:\n/b\n/c\npkg\n".into(),
            false,
        ),
        (
            "diverted path as diverted-to",
            "/a\n/b\n:\n/c\n/a\npkg\n".into(),
            false,
        ),
        (
            "one path spelled twice",
            "/a\n/b\n:\n./a\n/c\npkg\n".into(),
            false,
        ),
        ("truncated triple", "/a\n/b\n".into(), false),
        ("no final newline", "/a\n/b\n:".into(), false),
        (
            "line of 1023 bytes",
            format!("{}\n/b\n:\n", long(1023)),
            false,
        ),
        (
            "line of 1022 bytes",
            format!("{}\n/b\n:\n", long(1022)),
            true,
        ),
        // dpkg reads it without complaint but the entry is gone from its view.
        ("diverted to itself", "/a\n/a\n:\n".into(), false),
    ]
}

#[test]
fn checker_refuses_what_real_dpkg_refuses_t7_m2() {
    for (name, text, dpkg_reads) in diversion_cases() {
        let t = TRoot::new();
        t.put("var/lib/dpkg/diversions", &text);
        let out = t.divert(&["--list"]);
        let listed = stdout(&out).lines().count();
        let entries = text.matches('\n').count() / 3;
        let dpkg_ok = out.status.success() && listed == entries;
        assert_eq!(dpkg_ok, dpkg_reads, "{name}: real dpkg-divert {out:?}");
        let ours = parse_diversions(text.as_bytes());
        assert_eq!(ours.is_ok(), dpkg_reads, "{name}: {ours:?}");
        let load = DpkgDb::load(&t.root(), &[]);
        assert_eq!(load.is_ok(), dpkg_reads, "{name}: load");
        if !dpkg_reads {
            continue;
        }
        // What dpkg reads, the writer writes back unchanged.
        let entries = ours.unwrap();
        write_diversions(&t.admin_fd(), &entries).unwrap();
        assert_eq!(t.read("var/lib/dpkg/diversions"), text, "{name}");
    }
}

#[test]
fn writer_refuses_conflicts_and_leaves_the_file_m2() {
    let t = TRoot::new();
    t.put("var/lib/dpkg/diversions", "/a\n/b\n:\n");
    for (name, text, dpkg_reads) in diversion_cases() {
        if dpkg_reads || !text.ends_with('\n') || !text.matches('\n').count().is_multiple_of(3) {
            continue;
        }
        let entries: Vec<Diversion> = text
            .trim_end_matches('\n')
            .split('\n')
            .collect::<Vec<_>>()
            .chunks(3)
            .map(|c| Diversion {
                from: c[0].into(),
                to: c[1].into(),
                holder: (c[2] != ":").then(|| c[2].into()),
            })
            .collect();
        let e = write_diversions(&t.admin_fd(), &entries).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{name}");
        assert_eq!(t.read("var/lib/dpkg/diversions"), "/a\n/b\n:\n", "{name}");
        assert!(!t.admin().join("diversions-new").exists(), "{name}");
    }
    let nl = [Diversion::ours("/a\n/b", "/c")];
    assert!(write_diversions(&t.admin_fd(), &nl).is_err());
    // The first diversion of a root: no file to keep as diversions-old (as dpkg).
    let t = TRoot::new();
    let ours = [Diversion::ours("/usr/bin/ls", "/usr/bin/.switchyard/ls")];
    write_diversions(&t.admin_fd(), &ours).unwrap();
    assert!(!t.admin().join("diversions-old").exists());
    assert_eq!(
        t.divert_list(),
        ["diversion of /usr/bin/ls to /usr/bin/.switchyard/ls by switchyard"]
    );
}

#[test]
fn reads_what_dpkg_divert_wrote_t7_m2() {
    let t = TRoot::new();
    for args in [
        &[
            "--no-rename",
            "--package",
            HOLDER,
            "--divert",
            "/usr/lib/sy/ls",
            "--add",
            "/bin/ls",
        ][..],
        &[
            "--no-rename",
            "--local",
            "--divert",
            "/etc/foo.local",
            "--add",
            "/etc/foo",
        ][..],
        &[
            "--no-rename",
            "--package",
            "linux-perf",
            "--divert",
            "/usr/bin/perf.w",
            "--add",
            "/usr/bin/perf",
        ][..],
    ] {
        let out = t.divert(args);
        assert!(
            out.status.success(),
            "dpkg-divert {args:?}: {}",
            stderr(&out)
        );
    }
    let db = t.load(&[]);
    let mut ours: Vec<String> = db.diversions().iter().map(Diversion::describe).collect();
    ours.sort();
    assert_eq!(ours, t.divert_list());
    assert_eq!(ours.len(), 3);
    assert_eq!(
        db.diversion_of("/bin/ls"),
        Some(&Diversion::ours("/bin/ls", "/usr/lib/sy/ls"))
    );
    assert_eq!(
        db.diversion_of("/etc/foo").and_then(|d| d.holder.clone()),
        None
    );
    assert!(db.diversion_of("/usr/lib/sy/ls").is_none());
}

#[test]
fn dpkg_divert_lists_what_we_wrote_t7_m2() {
    let t = TRoot::new();
    let out = t.divert(&[
        "--no-rename",
        "--local",
        "--divert",
        "/etc/foo.local",
        "--add",
        "/etc/foo",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let before = t.read("var/lib/dpkg/diversions");
    let db = t.load(&[]);
    let ours = Diversion::ours("/usr/bin/ls", "/usr/bin/.switchyard/ls");
    let mut new = db.diversions().to_vec();
    new.push(ours.clone());
    write_diversions(db.admin(), &new).unwrap();
    assert_eq!(
        t.divert_list(),
        [
            "diversion of /usr/bin/ls to /usr/bin/.switchyard/ls by switchyard",
            "local diversion of /etc/foo to /etc/foo.local",
        ]
    );
    // dpkg's own view through the diversion: the truename of the path.
    let out = t.divert(&["--truename", "/usr/bin/ls"]);
    assert_eq!(stdout(&out).trim(), "/usr/bin/.switchyard/ls");
    // The previous file is kept as diversions-old; the new one is 0644 like dpkg's.
    assert_eq!(t.read("var/lib/dpkg/diversions-old"), before);
    let meta = std::fs::metadata(t.admin().join("diversions")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o644);
    assert!(!t.admin().join("diversions-new").exists());
    // dpkg-divert can edit what we wrote: it removes ours, keeps the local one.
    let out = t.divert(&[
        "--no-rename",
        "--package",
        HOLDER,
        "--remove",
        "/usr/bin/ls",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        t.divert_list(),
        ["local diversion of /etc/foo to /etc/foo.local"]
    );
    // Our add and remove leave the other entries byte for byte.
    let db = t.load(&[]);
    let mut added = db.diversions().to_vec();
    added.push(ours.clone());
    write_diversions(db.admin(), &added).unwrap();
    let mut removed = read_diversions(db.admin()).unwrap();
    removed.retain(|d| *d != ours);
    write_diversions(db.admin(), &removed).unwrap();
    assert_eq!(t.read("var/lib/dpkg/diversions"), before);
}

/// A perl process (perl-base is Essential on Debian) that takes an fcntl write
/// lock on `file` (`F_SETLK`, as dpkg) and prints `locked`, then holds it until its
/// stdin closes; with `try`, it only tries and exits 0 (got it) or 3 (busy).
const PERL_LOCK: &str = r#"
    use Fcntl;
    my ($mode, $file) = @ARGV;
    open(my $fh, "+<", $file) or die "open $file: $!";
    my $fl = pack("s s x![q] q q i x![q]", F_WRLCK, SEEK_SET, 0, 0, 0);
    if (!fcntl($fh, F_SETLK, $fl)) { exit 3 if $mode eq "try"; die "lock: $!"; }
    exit 0 if $mode eq "try";
    $| = 1; print "locked\n"; <STDIN>;
"#;

fn perl_holding(file: &Path) -> Child {
    let mut child = command("perl", &["-e", PERL_LOCK, "hold", file.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run perl (apt-get install perl-base): {e}"));
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "locked\n", "perl did not take the lock");
    child
}

fn perl_try(file: &Path) -> i32 {
    let out = tool("perl", &["-e", PERL_LOCK, "try", file.to_str().unwrap()]);
    out.status.code().unwrap()
}

#[test]
fn lock_held_by_another_process_is_named_m3() {
    let t = TRoot::new();
    t.put("var/lib/dpkg/lock", "");
    let mut holder = perl_holding(&t.admin().join("lock"));
    let start = Instant::now();
    let e = DpkgLock::acquire(&t.admin_fd(), Duration::from_millis(200)).unwrap_err();
    assert!(start.elapsed() >= Duration::from_millis(200));
    assert_eq!(e.id(), ErrorId::Locking);
    let want = format!(
        "dpkg's lock var/lib/dpkg/lock is held by perl (pid {})",
        holder.id()
    );
    assert!(e.message().contains(&want), "{e}");
    // The frontend lock it had taken was released with the failure.
    assert_eq!(perl_try(&t.admin().join("lock-frontend")), 0);
    drop(holder.stdin.take());
    assert!(holder.wait().unwrap().success());
    // Now it is free: acquired, and another process sees both files locked.
    let guard = DpkgLock::acquire(&t.admin_fd(), Duration::from_millis(200)).unwrap();
    assert_eq!(perl_try(&t.admin().join("lock-frontend")), 3);
    assert_eq!(perl_try(&t.admin().join("lock")), 3);
    drop(guard);
    assert_eq!(perl_try(&t.admin().join("lock-frontend")), 0);
    assert_eq!(perl_try(&t.admin().join("lock")), 0);
}

#[test]
fn real_dpkg_holding_its_lock_is_named_and_ours_stops_dpkg_t7_m3() {
    let t = TRoot::new();
    let (ready, hold) = (t.path().join("ready"), t.path().join("hold"));
    // dpkg holds both locks while it runs the preinst, which waits.
    let body = waiting_script(&ready, &hold);
    let deb = build_deb(
        &t,
        "holder",
        &[("usr/share/holder/f", "x\n")],
        &[("preinst", &body)],
    );
    let mut dpkg = dpkg_in_script(&t, &deb, &ready);
    let e = DpkgLock::acquire(&t.admin_fd(), Duration::from_millis(300)).unwrap_err();
    assert_eq!(e.id(), ErrorId::Locking);
    let want = format!(
        "dpkg's lock var/lib/dpkg/lock-frontend is held by dpkg (pid {})",
        dpkg.id()
    );
    assert!(e.message().contains(&want), "{e}");
    std::fs::remove_file(&hold).unwrap();
    assert!(dpkg.wait().unwrap().success());

    // Ours held: a real dpkg run is refused, naming this process; then it runs.
    let guard = DpkgLock::acquire(&t.admin_fd(), Duration::from_secs(5)).unwrap();
    let out = t.dpkg(&["--configure", "-a"]);
    assert!(!out.status.success(), "dpkg ran under our lock: {out:?}");
    let err = stderr(&out);
    assert!(
        err.contains("lock") && err.contains(&std::process::id().to_string()),
        "{err}"
    );
    drop(guard);
    let out = t.dpkg(&["--configure", "-a"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// A real dpkg installing `deb` whose maintainer script waits (see
/// [`waiting_script`]), started and waited for until the script runs.
fn dpkg_in_script(t: &TRoot, deb: &Path, ready: &Path) -> Child {
    let mut dpkg = command(
        "dpkg",
        &[
            "--root",
            t.arg(),
            "--force-not-root",
            "--log=/dev/null",
            "--force-script-chrootless",
            "--install",
            deb.to_str().unwrap(),
        ],
    )
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .spawn()
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready.exists() {
        assert!(
            dpkg.try_wait().unwrap().is_none(),
            "dpkg ended before its script ran"
        );
        assert!(Instant::now() < deadline, "dpkg's script never ran");
        std::thread::sleep(Duration::from_millis(20));
    }
    dpkg
}

/// A maintainer script (run on the host: --force-script-chrootless) that creates
/// `ready`, then waits for `hold` to go (the temp root's removal ends it too).
fn waiting_script(ready: &Path, hold: &Path) -> String {
    std::fs::write(hold, "").unwrap();
    format!(
        "touch '{}'\nwhile [ -e '{}' ]; do sleep 0.05; done",
        ready.display(),
        hold.display()
    )
}

/// M3 after a crash of dpkg itself: killed in the middle of an upgrade, dpkg has
/// recorded the package's new state only in its journal (`updates/`), while
/// `status` still says installed. dpkg --audit reads the journal, and so must we.
#[test]
fn a_dpkg_killed_mid_upgrade_is_unsettled_t7_m3() {
    let t = TRoot::new();
    let v1 = build_deb_version(&t, "up", "1.0-1", &[("usr/bin/up", "1\n")], &[]);
    let out = t.dpkg(&["--install", v1.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (ready, hold) = (t.path().join("ready"), t.path().join("hold"));
    let body = waiting_script(&ready, &hold);
    let v2 = build_deb_version(
        &t,
        "up",
        "2.0-1",
        &[("usr/bin/up", "2\n")],
        &[("preinst", &body)],
    );
    let mut dpkg = dpkg_in_script(&t, &v2, &ready);
    dpkg.kill().unwrap();
    dpkg.wait().unwrap();
    std::fs::remove_file(&hold).unwrap();
    assert!(
        t.read("var/lib/dpkg/status")
            .contains("Package: up\nStatus: install ok installed\n"),
        "status already records the upgrade; the test shows nothing"
    );
    let db = t.load(&["usr/bin/up"]);
    assert_eq!(
        db.unsettled(),
        [("up".to_owned(), "half-installed".to_owned())]
    );
    let q = tool(
        "dpkg-query",
        &["--root", t.arg(), "--show", "-f", "${Status}", "up"],
    );
    assert_eq!(stdout(&q), "install reinstreq half-installed");
    let audit = stdout(&t.dpkg(&["--audit"]));
    assert!(audit.contains(" up "), "dpkg --audit: {audit}");
    let v = tool(
        "dpkg-query",
        &["--root", t.arg(), "--show", "-f", "${Version}", "up"],
    );
    assert_eq!(db.owner(&sp("usr/bin/up")).unwrap().version, stdout(&v));
}

#[test]
fn unsettled_matches_real_dpkg_audit_t7_m3() {
    let t = TRoot::new();
    let fine = build_deb(&t, "fine", &[("usr/bin/fine", "ok\n")], &[]);
    let halfinst = build_deb(&t, "halfinst", &[("usr/bin/halfinst", "x\n")], &[]);
    // A real failing postinst leaves the package half-configured.
    let failing = build_deb(
        &t,
        "failconf",
        &[("usr/bin/failconf", "x\n")],
        &[("postinst", "exit 1")],
    );
    for deb in [&fine, &halfinst] {
        let out = t.dpkg(&["--install", deb.to_str().unwrap()]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let out = t.dpkg(&[
        "--force-script-chrootless",
        "--install",
        failing.to_str().unwrap(),
    ]);
    assert!(!out.status.success(), "the failing postinst did not fail");
    let q = tool(
        "dpkg-query",
        &["--root", t.arg(), "--show", "-f", "${Status}", "failconf"],
    );
    assert_eq!(stdout(&q), "install ok half-configured");
    // half-installed is what an interrupted unpack leaves; written the way dpkg
    // records it (its status file), then read back by dpkg --audit below.
    let status = t.read("var/lib/dpkg/status");
    let edited = status.replace(
        "Package: halfinst\nStatus: install ok installed",
        "Package: halfinst\nStatus: install reinstreq half-installed",
    );
    assert_ne!(edited, status);
    t.put("var/lib/dpkg/status", &edited);

    let db = t.load(&["usr/bin/fine", "usr/bin/failconf"]);
    assert_eq!(
        db.unsettled(),
        [
            ("failconf".to_owned(), "half-configured".to_owned()),
            ("halfinst".to_owned(), "half-installed".to_owned()),
        ]
    );
    let audit = stdout(&t.dpkg(&["--audit"]));
    for (pkg, _) in db.unsettled() {
        assert!(
            audit.contains(&format!(" {pkg} ")),
            "dpkg --audit misses {pkg}:\n{audit}"
        );
    }
    assert!(!audit.contains(" fine "), "{audit}");
    let own = db.owner(&sp("usr/bin/fine")).unwrap();
    assert_eq!(
        (own.package.as_str(), own.version.as_str()),
        ("fine", "1.0-1")
    );
    // dpkg-deb's md5sums, checked against the real md5sum of the installed file.
    let sum = stdout(&tool(
        "md5sum",
        &[t.path().join("usr/bin/fine").to_str().unwrap()],
    ));
    assert_eq!(own.md5.as_deref(), sum.split_whitespace().next());
}

/// The host's own database (Debian 12 here and in CI): ~100 targets from
/// /usr/bin, every owner cross-checked with `dpkg-query --search` under both
/// spellings. Prints the load time (`--nocapture`).
#[test]
fn host_database_agrees_with_dpkg_query_m1() {
    let mut names: Vec<String> = std::fs::read_dir("/usr/bin")
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names.truncate(98);
    names.extend(["dpkg".to_owned(), "ls".to_owned()]);
    names.sort();
    names.dedup();
    let targets: Vec<SafePath> = names.iter().map(|n| sp(&format!("usr/bin/{n}"))).collect();
    let root = Root::open(Path::new("/")).unwrap();
    let start = Instant::now();
    let refs: Vec<&SafePath> = targets.iter().collect();
    let db = DpkgDb::load(&root, &refs)
        .unwrap()
        .expect("the host has a dpkg database");
    let elapsed = start.elapsed();
    eprintln!(
        "DpkgDb::load of the host database for {} targets: {:.1} ms",
        targets.len(),
        elapsed.as_secs_f64() * 1000.0
    );
    let merged =
        std::fs::read_link("/bin").is_ok_and(|l| dpkg_key(l.to_str().unwrap()) == "usr/bin");
    let mut paths: Vec<String> = names.iter().map(|n| format!("/usr/bin/{n}")).collect();
    if merged {
        paths.extend(names.iter().map(|n| format!("/bin/{n}")));
    }
    let mut args = vec!["--search"];
    args.extend(paths.iter().map(String::as_str));
    let out = tool("dpkg-query", &args);
    let mut theirs: HashMap<String, Vec<(String, String)>> = HashMap::new();
    for line in stdout(&out).lines() {
        if line.starts_with("diversion by") || line.starts_with("local diversion") {
            continue;
        }
        let (pkgs, path) = line.split_once(": ").unwrap();
        let target = db.canonical(path);
        // dpkg-query says `libperl5.36:amd64`; Owner::package has no architecture.
        for p in pkgs.split(", ").map(|p| p.split(':').next().unwrap_or(p)) {
            theirs
                .entry(target.clone())
                .or_default()
                .push((p.to_owned(), path.to_owned()));
        }
    }
    let mut owned = 0;
    for t in &targets {
        let mut ours: Vec<(String, String)> = db
            .owners(t)
            .iter()
            .map(|o| (o.package.clone(), o.db_path.clone()))
            .collect();
        let mut want = theirs.remove(t.as_str()).unwrap_or_default();
        ours.sort();
        want.sort();
        assert_eq!(ours, want, "owners of {t}");
        owned += usize::from(!ours.is_empty());
    }
    assert!(
        owned > 50,
        "only {owned} of {} targets owned",
        targets.len()
    );
    let dpkg = db.owner(&sp("usr/bin/dpkg")).unwrap();
    let v = tool("dpkg-query", &["--show", "-f", "${Version}", "dpkg"]);
    assert_eq!(
        (dpkg.package.as_str(), dpkg.version.as_str()),
        ("dpkg", stdout(&v).as_str())
    );
    let sum = stdout(&tool("md5sum", &["/usr/bin/dpkg"]));
    assert_eq!(dpkg.md5.as_deref(), sum.split_whitespace().next());
}
