//! Shared helpers for the black-box tests of the `switchyard` binary.
//!
//! Every test makes its own [`Sandbox`] (a fresh temp dir holding a root and room
//! for manifests beside it), passes paths explicitly and never touches the test
//! process's environment or working directory: the suite is parallel-safe (T2).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

/// A temp dir with `root/` (the switchyard root) and manifests beside it.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
    /// Canonical path of the temp dir.
    pub base: PathBuf,
}

impl Sandbox {
    /// An empty sandbox with an empty `root/`.
    pub fn empty() -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().canonicalize().unwrap();
        std::fs::create_dir(base.join("root")).unwrap();
        Sandbox { dir, base }
    }

    /// The standard root: `usr/bin/{ls (file), gnu-cat (file), cat -> gnu-cat,
    /// true (file)}` and alternatives `usr/lib/alt/{ls,cat,new}`.
    pub fn new() -> Sandbox {
        let s = Sandbox::empty();
        s.write("usr/bin/ls", b"#!/bin/sh\necho gnu-ls\n", 0o755);
        s.write("usr/bin/gnu-cat", b"#!/bin/sh\necho gnu-cat\n", 0o755);
        s.write("usr/bin/true", b"#!/bin/sh\nexit 0\n", 0o755);
        std::os::unix::fs::symlink("gnu-cat", s.host("usr/bin/cat")).unwrap();
        for name in ["ls", "cat", "new"] {
            s.write(
                &format!("usr/lib/alt/{name}"),
                format!("#!/bin/sh\necho alt-{name}\n").as_bytes(),
                0o755,
            );
        }
        s
    }

    pub fn root(&self) -> PathBuf {
        self.base.join("root")
    }

    /// Host path of root-relative `rel`.
    pub fn host(&self, rel: &str) -> PathBuf {
        self.root().join(rel)
    }

    /// Writes a file in the root (creating parents) with `mode`.
    pub fn write(&self, rel: &str, body: &[u8], mode: u32) {
        let p = self.host(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, body).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// Writes a manifest beside the root; returns its path.
    pub fn manifest(&self, name: &str, body: impl AsRef<[u8]>) -> PathBuf {
        let p = self.base.join(name);
        std::fs::write(&p, body).unwrap();
        p
    }

    /// Runs `switchyard --root <root> ARGS`.
    pub fn run(&self, args: &[&str]) -> Run {
        let mut full = vec!["--root".to_owned(), self.root().display().to_string()];
        full.extend(args.iter().map(|s| s.to_string()));
        run(&full, &[])
    }

    /// Like [`Sandbox::run`] with extra environment for the child only.
    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut full = vec!["--root".to_owned(), self.root().display().to_string()];
        full.extend(args.iter().map(|s| s.to_string()));
        run(&full, env)
    }

    /// Snapshot of the whole root.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot::capture(&self.root())
    }

    /// Snapshot of the root without the state directory and without directory
    /// mtimes (which change with every entry added or removed; R6 is checked by
    /// the entries themselves): what "the same tree" means after a mutation.
    pub fn tree(&self) -> Snapshot {
        let mut s = self.snapshot();
        s.0.retain(|k, _| k != "var" && !k.starts_with("var/"));
        for e in s.0.values_mut().filter(|e| e.kind == "dir") {
            e.mtime = (0, 0);
        }
        s
    }

    pub fn state(&self) -> PathBuf {
        self.host("var/lib/switchyard")
    }
}

/// The result of one invocation.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// stdout parsed as one JSON document.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not one JSON document ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    /// Asserts the exit code, showing the output on failure.
    #[track_caller]
    pub fn expect(&self, code: i32) -> &Run {
        assert_eq!(
            self.code, code,
            "unexpected exit code\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

/// Runs the binary with `args`, adding `env` to the child's environment only.
pub fn run(args: &[String], env: &[(&str, &str)]) -> Run {
    let mut c = Command::new(BIN);
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let o: Output = c.output().unwrap();
    Run {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// One entry of a [`Snapshot`]: everything that could change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: (i64, i64),
    pub bytes: Option<Vec<u8>>,
    pub link: Option<PathBuf>,
}

/// Every entry under a directory (the directory itself included as ""), by
/// relative path: kind, mode, owner, mtime (directories too: an entry created and
/// removed again shows), bytes and link text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot(pub BTreeMap<String, Entry>);

impl Snapshot {
    pub fn capture(dir: &Path) -> Snapshot {
        let mut m = BTreeMap::new();
        walk(dir, dir, &mut m);
        Snapshot(m)
    }

    /// The entry at `rel`.
    pub fn get(&self, rel: &str) -> &Entry {
        self.0
            .get(rel)
            .unwrap_or_else(|| panic!("{rel} not in snapshot"))
    }
}

fn walk(base: &Path, p: &Path, out: &mut BTreeMap<String, Entry>) {
    let md = std::fs::symlink_metadata(p).unwrap();
    let ft = md.file_type();
    let kind = if ft.is_symlink() {
        "symlink"
    } else if ft.is_dir() {
        "dir"
    } else if ft.is_file() {
        "file"
    } else {
        "other"
    };
    let rel = p.strip_prefix(base).unwrap().to_string_lossy().into_owned();
    out.insert(
        rel,
        Entry {
            kind,
            mode: md.mode() & 0o7777,
            uid: md.uid(),
            gid: md.gid(),
            mtime: (md.mtime(), md.mtime_nsec()),
            bytes: ft.is_file().then(|| std::fs::read(p).unwrap()),
            link: ft.is_symlink().then(|| std::fs::read_link(p).unwrap()),
        },
    );
    if ft.is_dir() {
        let mut names: Vec<_> = std::fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        for n in names {
            walk(base, &n, out);
        }
    }
}

/// A dev-preset manifest allowing `usr/bin` with the given body appended.
pub fn dev_manifest(body: &str) -> String {
    format!("preset = \"dev\"\n[policy]\nallow_roots = [\"usr/bin\"]\n{body}")
}

/// The standard links: a file (ls), a symlink (cat) and an absent target (new).
pub const STANDARD_LINKS: &str = r#"
[[link]]
target = "usr/bin/ls"
source = "usr/lib/alt/ls"
[[link]]
target = "usr/bin/cat"
source = "usr/lib/alt/cat"
[[link]]
target = "usr/bin/new"
source = "usr/lib/alt/new"
"#;
