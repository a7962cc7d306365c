//! Shared helpers for the black-box tests of the `switchyard` binary.
//!
//! Every test makes its own [`Sandbox`] (a fresh temp dir holding a root and room
//! for manifests beside it), passes paths explicitly and never touches the test
//! process's environment or working directory: the suite is parallel-safe (T2).
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output};
pub use switchyard_testkit::Tree;

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

    /// Like [`Sandbox::run`] with at most `nofile` open descriptors
    /// (`prlimit --nofile`, util-linux).
    pub fn run_limited(&self, nofile: u32, args: &[&str]) -> Run {
        let o = Command::new("prlimit")
            .arg(format!("--nofile={nofile}"))
            .arg(BIN)
            .arg("--root")
            .arg(self.root())
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("prlimit (util-linux) must be installed: {e}"));
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// Like [`Sandbox::run`] with extra environment for the child only.
    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut full = vec!["--root".to_owned(), self.root().display().to_string()];
        full.extend(args.iter().map(|s| s.to_string()));
        run(&full, env)
    }

    /// Exact snapshot of the whole root, directory mtimes included: what "changed
    /// nothing at all" means.
    pub fn snapshot(&self) -> Tree {
        Tree::capture_exact(&self.root())
    }

    /// Snapshot of the root without the state directory (`var`) and without
    /// directory mtimes: what "the same tree" means after a mutation (R2, R6).
    pub fn tree(&self) -> Tree {
        Tree::capture(&self.root(), &["var"])
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
