//! Real Debian packages and a real dpkg over a temp root (T7).
//!
//! [`Deb`] packages are built in the test with `dpkg-deb --root-owner-group --build`
//! (every entry root:root, modes exactly as given, setuid included); [`DpkgRoot`] is a
//! temp directory with a dpkg admin directory that the real `dpkg --root`,
//! `dpkg-divert --root` and `dpkg-query --root` operate on. Nothing is imitated: the
//! tests see what dpkg does to a tree, and a missing tool panics naming the Debian
//! package to install (T3; `.ci/run` installs them).
//!
//! Every command runs with `LC_ALL=C` (stable output), a fixed `PATH` (dpkg looks up
//! helpers such as `ldconfig` there) and without the `DPKG_*` environment variables
//! that would redirect or force it. dpkg still reads the host's `/etc/dpkg/dpkg.cfg.d`
//! (it has no option to skip it); nothing there concerns the paths these tests use.
//!
//! The helpers for S8 checks — [`run_as_nobody`], [`set_cap`], [`get_cap`] — are here
//! too: they need `setpriv` (util-linux) and `setcap`/`getcap` (libcap2-bin).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

/// What a command printed and how it ended.
#[derive(Debug)]
pub struct CmdOut {
    /// The exit status.
    pub status: ExitStatus,
    /// Standard output (lossily decoded).
    pub stdout: String,
    /// Standard error (lossily decoded).
    pub stderr: String,
}

impl CmdOut {
    /// The non-empty lines of standard output.
    pub fn lines(&self) -> Vec<String> {
        self.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// The exit code (panics if the command was killed by a signal).
    pub fn code(&self) -> i32 {
        self.status
            .code()
            .unwrap_or_else(|| panic!("killed by a signal ({}): {self:?}", self.status))
    }
}

/// The Debian package that provides `tool`, for the panic message when it is missing.
fn provider(tool: &str) -> &'static str {
    match tool {
        "setpriv" => "util-linux",
        "setcap" | "getcap" => "libcap2-bin",
        _ => "dpkg",
    }
}

/// Runs `tool args` with a fixed environment; panics only when it cannot be started.
fn run(tool: &str, args: &[&str]) -> CmdOut {
    let out = Command::new(tool)
        .args(args)
        .env("LC_ALL", "C")
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env_remove("DPKG_ROOT")
        .env_remove("DPKG_ADMINDIR")
        .env_remove("DPKG_FORCE")
        .env_remove("DPKG_COLORS")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {tool}: {e}; the package tests (T7) need it: \
                 apt-get install {} (see .ci/run)",
                provider(tool)
            )
        });
    CmdOut {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// [`run`], panicking with the command's stderr unless it exits 0.
fn run_ok(tool: &str, args: &[&str]) -> CmdOut {
    let out = run(tool, args);
    assert!(
        out.status.success(),
        "{tool} {args:?} failed ({}):\n--- stderr\n{}--- stdout\n{}",
        out.status,
        out.stderr,
        out.stdout
    );
    out
}

/// [`run`], panicking with the command's stderr unless it exits with one of `codes`.
fn run_codes(tool: &str, args: &[&str], codes: &[i32]) -> CmdOut {
    let out = run(tool, args);
    assert!(
        out.status.code().is_some_and(|c| codes.contains(&c)),
        "{tool} {args:?} failed ({}, expected exit {codes:?}):\n--- stderr\n{}--- stdout\n{}",
        out.status,
        out.stderr,
        out.stdout
    );
    out
}

fn s(p: &Path) -> &str {
    p.to_str()
        .unwrap_or_else(|| panic!("test path is not UTF-8: {}", p.display()))
}

/// A relative package path (`usr/bin/foo`, `bin/foo`): no leading `/`, no `.`/`..`.
fn checked_rel(path: &str) -> &str {
    assert!(
        !path.is_empty()
            && !path.starts_with('/')
            && path
                .split('/')
                .all(|c| !c.is_empty() && c != "." && c != ".."),
        "package paths are relative and plain, like usr/bin/foo: {path:?}"
    );
    path
}

fn set_mode(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", p.display()));
}

/// One entry of a package under construction.
#[derive(Debug, Clone)]
enum Member {
    File {
        path: String,
        bytes: Vec<u8>,
        mode: u32,
    },
    Symlink {
        path: String,
        dest: String,
    },
}

/// Describes a package to build; see [`Deb::builder`].
#[derive(Debug, Clone)]
pub struct DebBuilder {
    name: String,
    version: String,
    members: Vec<Member>,
    fields: Vec<(String, String)>,
}

impl DebBuilder {
    /// Adds a control field (`Replaces`, `Breaks`, `Multi-Arch`, …) to the package's
    /// `DEBIAN/control`, e.g. `.control("Replaces", "old-pkg")`; `Architecture`
    /// replaces the default `all`.
    pub fn control(mut self, field: &str, value: &str) -> DebBuilder {
        assert!(
            !field.is_empty()
                && field
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !value.contains('\n'),
            "a control field is one line: {field}: {value:?}"
        );
        self.fields.push((field.to_owned(), value.to_owned()));
        self
    }

    /// Adds a regular file at `path` (relative to `/`, e.g. `usr/bin/foo` or
    /// `bin/foo`) with `bytes` and `mode` — all 12 permission bits, so `0o4755` is a
    /// setuid-root program (the package's files are root:root).
    pub fn file(mut self, path: &str, bytes: &[u8], mode: u32) -> DebBuilder {
        self.members.push(Member::File {
            path: checked_rel(path).to_owned(),
            bytes: bytes.to_vec(),
            mode,
        });
        self
    }

    /// Adds a symlink at `path` pointing at `dest` (written as given).
    pub fn symlink(mut self, path: &str, dest: &str) -> DebBuilder {
        self.members.push(Member::Symlink {
            path: checked_rel(path).to_owned(),
            dest: dest.to_owned(),
        });
        self
    }

    /// Builds the package with `dpkg-deb --root-owner-group --build` into a fresh
    /// temp directory (kept as long as the [`Deb`] lives). Architecture `all` unless
    /// set with [`DebBuilder::control`], no maintainer scripts. Panics with dpkg-deb's stderr if it refuses.
    pub fn build(self) -> Deb {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let tree = dir.path().join("tree");
        let debian = tree.join("DEBIAN");
        std::fs::create_dir_all(&debian).unwrap_or_else(|e| panic!("{e}"));
        // dpkg-deb wants DEBIAN 0755..0775 whatever the umask.
        set_mode(&tree, 0o755);
        set_mode(&debian, 0o755);
        let arch = self
            .fields
            .iter()
            .find(|(f, _)| f == "Architecture")
            .map_or("all", |(_, v)| v.as_str())
            .to_owned();
        let control = format!(
            "Package: {}\nVersion: {}\nArchitecture: {arch}\n\
             Maintainer: Switchyard Tests <tests@switchyard.invalid>\n\
             Priority: optional\nSection: misc\n\
             Description: Switchyard test package {}\n{}",
            self.name,
            self.version,
            self.name,
            self.fields
                .iter()
                .filter(|(f, _)| f != "Architecture")
                .map(|(f, v)| format!("{f}: {v}\n"))
                .collect::<String>()
        );
        std::fs::write(debian.join("control"), control).unwrap_or_else(|e| panic!("{e}"));
        set_mode(&debian.join("control"), 0o644);
        for m in &self.members {
            let rel = match m {
                Member::File { path, .. } | Member::Symlink { path, .. } => path,
            };
            let p = tree.join(rel);
            // Every directory of the package 0755 (root:root once packed).
            let mut d = tree.clone();
            for comp in Path::new(rel)
                .parent()
                .into_iter()
                .flat_map(Path::components)
            {
                d.push(comp);
                if !d.exists() {
                    std::fs::create_dir(&d)
                        .unwrap_or_else(|e| panic!("mkdir {}: {e}", d.display()));
                    set_mode(&d, 0o755);
                }
            }
            match m {
                Member::File { bytes, mode, .. } => {
                    std::fs::write(&p, bytes)
                        .unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
                    set_mode(&p, *mode);
                }
                Member::Symlink { dest, .. } => std::os::unix::fs::symlink(dest, &p)
                    .unwrap_or_else(|e| panic!("symlink {}: {e}", p.display())),
            }
        }
        let path = dir
            .path()
            .join(format!("{}_{}_{arch}.deb", self.name, self.version));
        run_ok(
            "dpkg-deb",
            &[
                "--root-owner-group",
                "--build",
                "-Zgzip",
                s(&tree),
                s(&path),
            ],
        );
        Deb {
            _dir: dir,
            path,
            name: self.name,
            version: self.version,
        }
    }
}

/// A `.deb` built by the test (see [`Deb::builder`]); its file lives as long as this.
#[derive(Debug)]
pub struct Deb {
    _dir: tempfile::TempDir,
    path: PathBuf,
    name: String,
    version: String,
}

impl Deb {
    /// A package named `name` at `version`, to which files are added.
    pub fn builder(name: &str, version: &str) -> DebBuilder {
        DebBuilder {
            name: name.to_owned(),
            version: version.to_owned(),
            members: Vec::new(),
            fields: Vec::new(),
        }
    }

    /// The `.deb` file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The package name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The package version.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// `dpkg-deb --contents` lines (`-rwsr-xr-x root/root 8 DATE ./usr/bin/beta`).
    pub fn contents(&self) -> Vec<String> {
        run_ok("dpkg-deb", &["--contents", s(&self.path)]).lines()
    }
}

/// A temp root with a dpkg admin directory, for the real `dpkg --root` (T7).
///
/// The admin directory is what a fresh system starts with: an empty
/// `var/lib/dpkg/status`, an empty `available`, and the `info/` and `updates/`
/// directories. (dpkg 1.21 would create all of these itself on the first
/// `--install`; making them up front means the queries of a root where nothing is
/// installed yet read a real, empty database.) dpkg adds its lock files, `triggers/`,
/// `status-old` and `diversions` as it goes.
///
/// The root directory is 0755 (a temp dir is created 0700) so that an unprivileged
/// user can reach its programs, as on a real system: S8 tests run them as `nobody`.
#[derive(Debug)]
pub struct DpkgRoot {
    dir: tempfile::TempDir,
}

impl Default for DpkgRoot {
    fn default() -> Self {
        DpkgRoot::new()
    }
}

impl DpkgRoot {
    /// A root with separate `/bin`, `/sbin`, `/lib` (nothing there until a package
    /// ships something).
    pub fn new() -> DpkgRoot {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        set_mode(dir.path(), 0o755);
        let r = DpkgRoot { dir };
        let admin = r.host("var/lib/dpkg");
        for d in ["info", "updates"] {
            std::fs::create_dir_all(admin.join(d)).unwrap_or_else(|e| panic!("{e}"));
        }
        for d in ["var", "var/lib", "var/lib/dpkg", "var/lib/dpkg/info"] {
            set_mode(&r.host(d), 0o755);
        }
        set_mode(&admin.join("updates"), 0o755);
        for f in ["status", "available"] {
            std::fs::write(admin.join(f), b"").unwrap_or_else(|e| panic!("{e}"));
            set_mode(&admin.join(f), 0o644);
        }
        r
    }

    /// A merged-/usr root, like Debian bookworm's: `bin -> usr/bin`,
    /// `sbin -> usr/sbin`, `lib -> usr/lib`, so a package shipping `/bin/foo`
    /// (as coreutils does) puts it at `usr/bin/foo`.
    pub fn merged_usr() -> DpkgRoot {
        let r = DpkgRoot::new();
        for d in ["bin", "sbin", "lib"] {
            let real = r.host(&format!("usr/{d}"));
            std::fs::create_dir_all(&real).unwrap_or_else(|e| panic!("{e}"));
            set_mode(&real, 0o755);
            std::os::unix::fs::symlink(format!("usr/{d}"), r.host(d))
                .unwrap_or_else(|e| panic!("symlink {d}: {e}"));
        }
        set_mode(&r.host("usr"), 0o755);
        r
    }

    /// The root directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `rel` inside the root, as a host path (not resolved).
    pub fn host(&self, rel: &str) -> PathBuf {
        self.path().join(rel)
    }

    fn root_arg(&self) -> String {
        s(self.path()).to_owned()
    }

    /// `dpkg --root R --install DEB`; panics with dpkg's stderr if it fails.
    ///
    /// No `--force-*` flag is needed: the packages have no maintainer scripts (which
    /// dpkg would run chrooted into the root, needing a shell there), and dpkg finds
    /// the helpers it checks for (`ldconfig`, `start-stop-daemon`) on the host `PATH`.
    pub fn install(&self, deb: &Deb) -> CmdOut {
        run_ok(
            "dpkg",
            &["--root", &self.root_arg(), "--install", s(deb.path())],
        )
    }

    /// `dpkg --root R --install DEB` as it ends (to see dpkg fail, e.g. on a missing
    /// directory); panics only when dpkg cannot be started.
    pub fn try_install(&self, deb: &Deb) -> CmdOut {
        run(
            "dpkg",
            &["--root", &self.root_arg(), "--install", s(deb.path())],
        )
    }

    /// `dpkg --root R --remove PKG` (`--purge` when `purge`); panics with dpkg's
    /// stderr if it fails.
    pub fn remove(&self, pkg: &str, purge: bool) -> CmdOut {
        let op = if purge { "--purge" } else { "--remove" };
        run_ok("dpkg", &["--root", &self.root_arg(), op, pkg])
    }

    /// `dpkg --root R --verify`: one line per packaged path that fails a check, in
    /// the rpm format (`??5??????   /usr/bin/beta`, `missing     /usr/bin/beta`). An
    /// empty output is a clean tree. dpkg 1.21 exits 0 even when it reports lines, so
    /// read the lines, not the status; panics on any exit status but 0 or 1.
    pub fn verify(&self) -> CmdOut {
        run_codes("dpkg", &["--root", &self.root_arg(), "--verify"], &[0, 1])
    }

    /// `dpkg-divert --root R --list` lines (`diversion of /usr/bin/alpha to
    /// /usr/bin/.switchyard/alpha.1.bak by switchyard`), sorted.
    pub fn divert_list(&self) -> Vec<String> {
        let mut l = run_ok("dpkg-divert", &["--root", &self.root_arg(), "--list"]).lines();
        l.sort();
        l
    }

    /// `dpkg-divert --root R ARGS` as it ends (e.g. to see a refusal).
    pub fn divert(&self, args: &[&str]) -> CmdOut {
        let root = self.root_arg();
        let mut all = vec!["--root", root.as_str()];
        all.extend_from_slice(args);
        run("dpkg-divert", &all)
    }

    /// Registers what M2 registers: `dpkg-divert --root R --no-rename --package
    /// switchyard --divert TO --add PATH` (absolute package paths). Panics if refused.
    pub fn divert_add(&self, path: &str, to: &str) {
        let out = self.divert(&[
            "--no-rename",
            "--package",
            "switchyard",
            "--divert",
            to,
            "--add",
            path,
        ]);
        assert!(
            out.status.success(),
            "dpkg-divert --add {path} failed ({}): {}",
            out.status,
            out.stderr
        );
    }

    /// `dpkg-divert --root R --no-rename --package switchyard --remove PATH`.
    pub fn divert_remove(&self, path: &str) {
        let out = self.divert(&["--no-rename", "--package", "switchyard", "--remove", path]);
        assert!(
            out.status.success(),
            "dpkg-divert --remove {path} failed ({}): {}",
            out.status,
            out.stderr
        );
    }

    /// `dpkg --root R --search PATH` (`-S`): exit 0 with `pkg: /path` lines (and
    /// `diversion by …` lines for a diverted path), or exit 1 when no package owns it.
    /// Panics on any other status.
    pub fn search(&self, path: &str) -> CmdOut {
        run_codes(
            "dpkg",
            &["--root", &self.root_arg(), "--search", path],
            &[0, 1],
        )
    }

    /// `dpkg --root R --audit`: a description of every package in a broken state
    /// (half-installed, half-configured, unpacked, …); empty when all is well.
    /// dpkg 1.21 exits 0 either way, so read the output. Panics on a failure to run.
    pub fn audit(&self) -> CmdOut {
        run_ok("dpkg", &["--root", &self.root_arg(), "--audit"])
    }

    /// `dpkg-query --root R --show -f '${Status}' PKG`, e.g. `install ok installed`.
    pub fn status_of(&self, pkg: &str) -> String {
        run_ok(
            "dpkg-query",
            &["--root", &self.root_arg(), "--show", "-f", "${Status}", pkg],
        )
        .stdout
    }

    /// `dpkg-query --root R --show -f '${Version}' PKG`.
    pub fn version_of(&self, pkg: &str) -> String {
        run_ok(
            "dpkg-query",
            &[
                "--root",
                &self.root_arg(),
                "--show",
                "-f",
                "${Version}",
                pkg,
            ],
        )
        .stdout
    }

    /// Puts installed package `pkg` in dpkg state `state` (`half-installed`,
    /// `half-configured`, `unpacked`, …) for refusal tests (M3), by rewriting its
    /// `Status:` line in `var/lib/dpkg/status` to `install ok STATE` (`install
    /// reinstreq half-installed` for `half-installed`).
    ///
    /// This is the cheap honest way: the status file is exactly where dpkg itself
    /// records a failed maintainer script or an interrupted unpack, in these words, and
    /// `dpkg --audit` and `dpkg-query` read it back as such (the kit's tests check
    /// both). Making a real postinst fail would need a shell inside the root, since
    /// dpkg runs maintainer scripts chrooted into it. Panics unless `pkg` has exactly
    /// one `Status: install ok installed` line.
    pub fn set_state(&self, pkg: &str, state: &str) {
        let path = self.host("var/lib/dpkg/status");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let want = if state == "half-installed" {
            "Status: install reinstreq half-installed".to_owned()
        } else {
            format!("Status: install ok {state}")
        };
        let mut hits = 0;
        let out: Vec<String> = text
            .split("\n\n")
            .map(|stanza| {
                if !stanza.lines().any(|l| l == format!("Package: {pkg}")) {
                    return stanza.to_owned();
                }
                stanza
                    .lines()
                    .map(|l| {
                        if l == "Status: install ok installed" {
                            hits += 1;
                            want.clone()
                        } else {
                            l.to_owned()
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .collect();
        assert_eq!(
            hits,
            1,
            "{pkg} has no single `Status: install ok installed` line in {}",
            path.display()
        );
        std::fs::write(&path, out.join("\n\n"))
            .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }
}

/// Runs `cmd args` as user and group `nobody` (65534) with no supplementary groups:
/// what an unprivileged user can do with a kept original (S8). Needs root. Returns
/// the exit status and output, whatever they are (a refusal is the point of most S8
/// checks); panics only when setpriv cannot be started.
///
/// It runs `setpriv --reuid 65534 --regid 65534 --clear-groups -- env CMD ARGS`
/// (util-linux): setpriv (2.38) execs its argument while it still holds root's
/// capabilities, so `setpriv … -- /store/prog` would reach a program in a 0700
/// directory that uid 65534 cannot search (and run it, if it is not a script); `env`
/// does the exec as the unprivileged user. The kit's test pins this.
pub fn run_as_nobody(cmd: &str, args: &[&str]) -> CmdOut {
    let mut all = vec![
        "--reuid",
        "65534",
        "--regid",
        "65534",
        "--clear-groups",
        "--",
        "env",
        cmd,
    ];
    all.extend_from_slice(args);
    run("setpriv", &all)
}

/// `setcap CAPS PATH` (libcap2-bin), e.g. `set_cap(p, "cap_net_raw+ep")`. Panics with
/// setcap's stderr if it fails.
pub fn set_cap(path: &Path, caps: &str) {
    run_ok("setcap", &[caps, s(path)]);
}

/// The file capabilities of `path` as `getcap` prints them (`cap_net_raw=ep`), or
/// `None` when it has none. Panics if `path` is missing or getcap complains (getcap
/// exits 0 even for a missing file, so its stderr is checked too).
pub fn get_cap(path: &Path) -> Option<String> {
    std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("getcap {}: {e}", path.display()));
    let out = run_ok("getcap", &[s(path)]);
    assert!(
        out.stderr.trim().is_empty(),
        "getcap {}: {}",
        path.display(),
        out.stderr
    );
    let line = out.stdout.trim();
    if line.is_empty() {
        return None;
    }
    let caps = line
        .strip_prefix(s(path))
        .unwrap_or_else(|| panic!("getcap printed {line:?} for {}", path.display()));
    Some(caps.trim().to_owned())
}
