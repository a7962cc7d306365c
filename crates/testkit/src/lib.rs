//! Test kit for Switchyard: exact tree snapshots, fixtures, and the crash child.
//!
//! [`Tree::capture`] records everything R2 promises to restore — kind, bytes, mode,
//! uid, gid, mtime, xattrs, link text — for every entry under a directory, so tests
//! can assert "identical to before" with one `assert_eq!`. [`deb`] builds real Debian
//! packages and runs the real dpkg over a temp root (T7).

pub mod deb;

pub use deb::{get_cap, run_as_nobody, set_cap, CmdOut, Deb, DebBuilder, DpkgRoot};

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use switchyard::{FileLock, MemorySink, Policy, SafePath, Switchyard};

/// One entry of a [`Tree`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Entry {
    pub kind: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: (i64, i64),
    pub content_sha256: Option<String>,
    pub link_dest: Option<String>,
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

/// Every entry under a directory, by relative path.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Tree(pub BTreeMap<String, Entry>);

/// Every extended attribute of `p` (not following a symlink). A filesystem without
/// xattr support has none; any other error panics.
fn xattrs(p: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut names = vec![0u8; 64 * 1024];
    let n = match rustix::fs::llistxattr(p, &mut names[..]) {
        Ok(n) => n,
        Err(rustix::io::Errno::NOTSUP) => return out,
        Err(e) => panic!("snapshot: llistxattr {}: {e}", p.display()),
    };
    for name in names[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let mut val = vec![0u8; 64 * 1024];
        let k = rustix::fs::lgetxattr(p, name, &mut val[..])
            .unwrap_or_else(|e| panic!("snapshot: lgetxattr {}: {e}", p.display()));
        out.insert(
            String::from_utf8_lossy(name).into_owned(),
            val[..k].to_vec(),
        );
    }
    out
}

impl Tree {
    /// Snapshots `dir` (as `""`) and everything under it that R2 promises to
    /// restore, skipping paths under `skip` (relative). Directory mtimes are left out: they change with every
    /// entry added or removed, and R6 is checked by the entries themselves.
    pub fn capture(dir: &Path, skip: &[&str]) -> Tree {
        let mut map = BTreeMap::new();
        map.insert(String::new(), entry(dir, false));
        walk(dir, dir, skip, false, &mut map);
        Tree(map)
    }

    /// Snapshots everything under `dir`, `dir` itself included (as `""`), with
    /// directory mtimes too, so that even an entry created and removed again shows:
    /// what "changed nothing at all" means for read-only commands and bad input.
    pub fn capture_exact(dir: &Path) -> Tree {
        let mut map = BTreeMap::new();
        map.insert(String::new(), entry(dir, true));
        walk(dir, dir, &[], true, &mut map);
        Tree(map)
    }

    /// The entry at `rel`; panics if there is none.
    pub fn get(&self, rel: &str) -> &Entry {
        self.0
            .get(rel)
            .unwrap_or_else(|| panic!("{rel} is not in the tree"))
    }

    /// Entry names directly inside `sub` (for litter checks, R6).
    pub fn names_in(&self, sub: &str) -> Vec<String> {
        let prefix = format!("{sub}/");
        self.0
            .keys()
            .filter_map(|k| k.strip_prefix(&prefix))
            .filter(|k| !k.contains('/'))
            .map(str::to_owned)
            .collect()
    }
}

/// The entry for `p`; panics when it cannot be read (a snapshot never guesses).
fn entry(p: &Path, dir_mtimes: bool) -> Entry {
    let md = std::fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("snapshot: lstat {}: {e}", p.display()));
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
    let content_sha256 = ft.is_file().then(|| {
        use sha2::Digest;
        let bytes =
            std::fs::read(p).unwrap_or_else(|e| panic!("snapshot: read {}: {e}", p.display()));
        format!("{:x}", sha2::Sha256::digest(bytes))
    });
    let link_dest = ft.is_symlink().then(|| {
        std::fs::read_link(p)
            .unwrap_or_else(|e| panic!("snapshot: readlink {}: {e}", p.display()))
            .to_string_lossy()
            .into_owned()
    });
    Entry {
        kind: kind.into(),
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        mtime: if ft.is_dir() && !dir_mtimes {
            (0, 0)
        } else {
            (md.mtime(), md.mtime_nsec())
        },
        content_sha256,
        link_dest,
        xattrs: xattrs(p),
    }
}

fn walk(
    base: &Path,
    dir: &Path,
    skip: &[&str],
    dir_mtimes: bool,
    out: &mut BTreeMap<String, Entry>,
) {
    let rd = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("snapshot: read_dir {}: {e}", dir.display()));
    for e in rd {
        let p = e
            .unwrap_or_else(|e| panic!("snapshot: read_dir {}: {e}", dir.display()))
            .path();
        let rel = p
            .strip_prefix(base)
            .unwrap_or(&p)
            .to_string_lossy()
            .into_owned();
        if skip
            .iter()
            .any(|s| rel == *s || rel.starts_with(&format!("{s}/")))
        {
            continue;
        }
        let e = entry(&p, dir_mtimes);
        let is_dir = e.kind == "dir";
        out.insert(rel, e);
        if is_dir {
            walk(base, &p, skip, dir_mtimes, out);
        }
    }
}

/// Whether the current process is root (tests that need it fail in CI without it).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Shorthand for a `SafePath` in tests.
pub fn sp(s: &str) -> SafePath {
    SafePath::new(s).unwrap_or_else(|e| panic!("bad test path {s:?}: {e}"))
}

/// The standard fixture: a root with `usr/bin/{ls,cat,keep}`, an alternative
/// provider in `usr/lib/alt/`, and odd modes, times and xattrs to preserve.
pub struct Fixture {
    pub dir: tempfile::TempDir,
}

impl Fixture {
    pub fn new() -> Fixture {
        Fixture::new_in(&std::env::temp_dir())
    }

    /// The fixture in a fresh directory under `base` (e.g. a test mount).
    pub fn new_in(base: &Path) -> Fixture {
        let dir = tempfile::tempdir_in(base).unwrap_or_else(|e| panic!("tempdir: {e}"));
        let f = Fixture { dir };
        std::fs::create_dir_all(f.host("var/lib")).unwrap_or_else(|e| panic!("{e}"));
        f.write("usr/bin/ls", b"#!/bin/sh\necho gnu-ls\n", 0o755);
        f.write("usr/bin/keep", b"#!/bin/sh\necho keep\n", 0o4751);
        f.write("usr/bin/gnu-cat", b"#!/bin/sh\necho gnu-cat\n", 0o755);
        std::os::unix::fs::symlink("gnu-cat", f.path().join("usr/bin/cat"))
            .unwrap_or_else(|e| panic!("{e}"));
        for name in ["ls", "cat", "new", "keep"] {
            f.write(
                &format!("usr/lib/alt/{name}"),
                format!("#!/bin/sh\necho alt-{name}\n").as_bytes(),
                0o755,
            );
        }
        let ls = f.path().join("usr/bin/ls");
        rustix::fs::lsetxattr(
            &ls,
            "user.switchyard-test",
            b"precious",
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap_or_else(|e| panic!("setting xattr: {e}"));
        let t = std::fs::FileTimes::new().set_modified(
            std::time::UNIX_EPOCH + std::time::Duration::new(1_000_000_000, 123_456_789),
        );
        std::fs::File::options()
            .write(true)
            .open(&ls)
            .and_then(|fh| fh.set_times(t))
            .unwrap_or_else(|e| panic!("{e}"));
        f
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn host(&self, rel: &str) -> PathBuf {
        self.path().join(rel)
    }

    pub fn write(&self, rel: &str, body: &[u8], mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        let p = self.host(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap_or_else(|e| panic!("{e}"));
        }
        std::fs::write(&p, body).unwrap_or_else(|e| panic!("{e}"));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Snapshot of the tree, excluding the state directory.
    pub fn tree(&self) -> Tree {
        Tree::capture(self.path(), &[STATE])
    }

    /// A dev-policy engine over this root allowing `usr/bin`, with a file lock and
    /// a memory sink.
    pub fn engine(&self) -> (Switchyard, MemorySink) {
        self.engine_with(Policy::dev())
    }

    pub fn engine_with(&self, policy: Policy) -> (Switchyard, MemorySink) {
        engine_for(self.path(), policy)
    }
}

/// A test engine over `root` allowing `usr/bin`, with a file lock and a memory sink.
pub fn engine_for(root: &Path, policy: Policy) -> (Switchyard, MemorySink) {
    engine_with(root, policy, false)
}

/// [`engine_for`], optionally forcing the `linkat` fallbacks (A1 in `docs/GUARANTEES.md`).
pub fn engine_with(root: &Path, mut policy: Policy, fallback: bool) -> (Switchyard, MemorySink) {
    policy.allow_roots = vec![sp("usr/bin")];
    let sink = MemorySink::default();
    let mut b = Switchyard::builder(policy)
        .root(root)
        .with_lock_manager(FileLock::new())
        .with_facts_sink(sink.clone());
    if fallback {
        b = b.without_rename_flags();
    }
    let sy = b.build().unwrap_or_else(|e| panic!("build: {e}"));
    (sy, sink)
}

impl Default for Fixture {
    fn default() -> Self {
        Fixture::new()
    }
}

/// The state directory inside a fixture root.
pub const STATE: &str = "var/lib/switchyard";

/// The standard plan over the fixture: a file, a symlink and an absent target.
pub fn standard_input() -> switchyard::PlanInput {
    switchyard::PlanInput::default()
        .link(sp("usr/bin/ls"), sp("usr/lib/alt/ls"))
        .link(sp("usr/bin/cat"), sp("usr/lib/alt/cat"))
        .link(sp("usr/bin/new"), sp("usr/lib/alt/new"))
}

/// What the crash child is asked to do (passed as one JSON argument).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Scenario {
    pub root: PathBuf,
    /// `apply`, `rollback` or `recover`.
    pub op: String,
    pub failpoint: String,
    /// `kill` (block at the failpoint until SIGKILLed) or `error` (fail with EIO).
    pub mode: String,
    /// Trigger on this hit of the failpoint (1-based).
    pub nth: u32,
    /// For `rollback`: the run to undo.
    pub run: Option<String>,
    /// For `apply`: (target, source) pairs.
    pub links: Vec<(String, String)>,
    /// Force the `linkat` fallbacks (no `RENAME_EXCHANGE`/`RENAME_NOREPLACE`).
    #[serde(default)]
    pub fallback: bool,
}

impl Scenario {
    /// The common scenario: `op` over `root`, killed at the first hit of `failpoint`,
    /// with the native rename flags (`links` for an apply, `run` for a rollback).
    pub fn kill(
        root: &Path,
        op: &str,
        failpoint: &str,
        run: Option<String>,
        links: Vec<(String, String)>,
    ) -> Scenario {
        Scenario {
            root: root.to_path_buf(),
            op: op.into(),
            failpoint: failpoint.into(),
            mode: "kill".into(),
            nth: 1,
            run,
            links,
            fallback: false,
        }
    }
}

/// How the crash child ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ChildEnd {
    /// It reached the failpoint and was SIGKILLed there.
    Killed,
    /// It finished; `Ok(changed)` or `Err(error_id)`.
    Finished(Result<bool, String>),
    /// It succeeded (the change is in effect, or fully undone) with warnings about
    /// bookkeeping that failed after its commit point (O9).
    Warned(Vec<String>),
}

/// Marker the child prints when it reaches the failpoint.
pub const HIT_MARKER: &str = "SWITCHYARD-FAILPOINT-HIT";

/// Runs the crash child binary `exe` on `sc`, killing it with SIGKILL when it
/// reports reaching the failpoint.
pub fn run_child(exe: &Path, sc: &Scenario) -> ChildEnd {
    use std::io::BufRead;
    let arg = serde_json::to_string(sc).unwrap_or_default();
    let mut child = std::process::Command::new(exe)
        .arg(arg)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning crash child: {e}"));
    let out = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    for line in std::io::BufReader::new(out).lines() {
        let line = line.unwrap_or_default();
        if line == HIT_MARKER {
            child.kill().unwrap_or_else(|e| panic!("SIGKILL: {e}"));
            let st = child.wait().unwrap_or_else(|e| panic!("wait: {e}"));
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(st.signal(), Some(9), "child must die by SIGKILL");
            return ChildEnd::Killed;
        }
        if let Ok(end) = serde_json::from_str::<ChildEnd>(&line) {
            let st = child.wait().unwrap_or_else(|e| panic!("wait: {e}"));
            assert!(st.success(), "crash child failed: {st}");
            return end;
        }
    }
    let st = child.wait().unwrap_or_else(|e| panic!("wait: {e}"));
    panic!("crash child ended without a result: {st}");
}

/// The standard plan as (target, source) pairs, for the crash child.
pub fn standard_links() -> Vec<(String, String)> {
    ["ls", "cat", "new"]
        .iter()
        .map(|n| (format!("usr/bin/{n}"), format!("usr/lib/alt/{n}")))
        .collect()
}

/// Asserts `now` is `before` with the standard plan fully applied: each target a
/// symlink to its alternative, each prior node — identical in every respect — under
/// its backup name in the root-only backup store `usr/bin/.switchyard` (S8), nothing
/// else changed or added.
pub fn assert_applied(before: &Tree, now: &Tree) {
    let mut expect = before.0.clone();
    let store = now
        .0
        .get("usr/bin/.switchyard")
        .unwrap_or_else(|| panic!("no backup store usr/bin/.switchyard after apply"));
    assert_eq!(
        (store.kind.as_str(), store.mode),
        ("dir", 0o700),
        "S8: the backup store is a root-only directory"
    );
    expect.insert("usr/bin/.switchyard".to_owned(), store.clone());
    for n in ["ls", "cat", "new"] {
        let t = format!("usr/bin/{n}");
        if let Some(prior) = expect.remove(&t) {
            expect.insert(format!("usr/bin/.switchyard/{n}.1.bak"), prior);
        }
        let link = now
            .0
            .get(&t)
            .unwrap_or_else(|| panic!("{t} missing after apply"));
        assert_eq!(link.kind, "symlink", "{t}");
        assert_eq!(
            link.link_dest.as_deref(),
            Some(format!("../lib/alt/{n}").as_str()),
            "{t}"
        );
        expect.insert(t, link.clone());
    }
    assert_eq!(now.0, expect, "tree is not exactly the applied state");
}

/// The committed fact schema (`schema/facts.schema.json`).
pub fn schema_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schema/facts.schema.json")
}

/// Asserts every fact validates against the committed schema (O3).
pub fn assert_facts_valid(facts: &[switchyard::Fact]) {
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(schema_path()).unwrap_or_default())
            .unwrap_or_else(|e| panic!("schema file unreadable: {e}"));
    let v = jsonschema::validator_for(&schema).unwrap_or_else(|e| panic!("invalid schema: {e}"));
    assert!(!facts.is_empty(), "no facts to validate");
    for f in facts {
        let j = serde_json::to_value(f).unwrap_or_default();
        let errs: Vec<String> = v.iter_errors(&j).map(|e| e.to_string()).collect();
        assert!(errs.is_empty(), "fact does not validate: {errs:?}\n{j}");
    }
}

/// Redacted JSON lines of `facts` (canonical redaction, `docs/GUARANTEES.md`), without
/// `smoke` events when `drop_smoke` (they are commit-only, O2).
pub fn redacted_lines(facts: &[switchyard::Fact], drop_smoke: bool) -> String {
    facts
        .iter()
        .map(|f| serde_json::to_value(f).unwrap_or_default())
        .filter(|v| !(drop_smoke && v["event"] == "smoke"))
        .map(|v| switchyard::facts::redact(&v).to_string() + "\n")
        .collect()
}

/// A smoke runner with a fixed verdict that records whether it ran.
#[derive(Clone, Default)]
pub struct FixedSmoke {
    pub fail: bool,
    pub runs: std::sync::Arc<std::sync::atomic::AtomicU32>,
}

impl switchyard::SmokeRunner for FixedSmoke {
    fn run(&self, cx: &switchyard::SmokeContext<'_>) -> Vec<switchyard::SmokeOutcome> {
        self.runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        cx.targets
            .iter()
            .map(|t| switchyard::SmokeOutcome {
                check: format!("fixed {t}"),
                ok: !self.fail,
                cause: self.fail.then(|| "fixed failure".to_owned()),
            })
            .collect()
    }
}

/// Panics unless the process is root. Tests needing root call it first; a build made
/// as non-root marks them `#[ignore]` instead (see `build.rs`), so this only fires
/// for a binary built as root and run as another user (T3: never a silent pass).
pub fn assert_root(test: &str) {
    assert!(
        is_root(),
        "{test} needs root, but this test binary was built as root and runs as uid {}: \
         rebuild it as this user (the build marks root-only tests ignored) or run as root",
        rustix::process::geteuid().as_raw()
    );
}

/// Environment variable marking the child process of [`in_own_process`]; its value
/// is the name of the one test that child runs. Only this test kit reads it
/// (product code reads no environment variable).
pub const OWN_PROCESS_ENV: &str = "SWITCHYARD_TESTKIT_OWN_PROCESS";

/// Line the child of [`in_own_process`] prints (followed by the test name) once the
/// test body returned; without it the parent fails, so a child that ran no test
/// (e.g. a filter that matched nothing) can never count as a pass.
const OWN_PROCESS_DONE: &str = "SWITCHYARD-TESTKIT-OWN-PROCESS-DONE";

/// Failpoint configuration for one test. The `fail` crate keeps it per process, so
/// the only way to get one is [`in_own_process`], which runs the test alone in a
/// process of its own (T6).
pub struct Failpoints {
    _only_in_own_process: (),
}

impl Failpoints {
    /// Configures failpoint `name` with `fail` crate actions (e.g. `return`,
    /// `2*off->return`).
    pub fn cfg(&self, name: &str, actions: &str) {
        fail::cfg(name, actions).unwrap_or_else(|e| panic!("failpoint {name}: {e}"));
    }

    /// Runs `f` every time failpoint `name` is passed.
    pub fn cfg_callback(&self, name: &str, f: impl Fn() + Send + Sync + 'static) {
        fail::cfg_callback(name, f).unwrap_or_else(|e| panic!("failpoint {name}: {e}"));
    }

    /// Disarms failpoint `name`.
    pub fn remove(&self, name: &str) {
        fail::remove(name);
    }
}

/// Runs `body` — the whole body of the calling `#[test]` — alone in a process of its
/// own, under `cargo test` (threads) and `cargo nextest` (process per test) alike, and
/// hands it the [`Failpoints`] it may arm (T6: the `fail` crate's configuration is
/// per process, so under `cargo test` an armed failpoint would fire in every other
/// test of the binary running at the same time).
///
/// Outside the child, it re-executes the current test binary
/// (`std::env::current_exe()`) as `<test> --exact --nocapture --test-threads=1
/// --include-ignored` with [`OWN_PROCESS_ENV`] set to the test's name, waits, and
/// prints the child's output (captured per test, like any test output). It panics,
/// with that output, if the child failed or never finished the body. The body runs
/// once, in the child only: nothing runs twice under nextest either.
///
/// The test's name is the name of the thread libtest runs it on (always set, also
/// with `--test-threads=1`); calling this outside a test's own thread panics.
pub fn in_own_process(body: impl FnOnce(&Failpoints)) {
    let thread = std::thread::current();
    let name = match thread.name() {
        Some(n) if n != "main" => n.to_owned(),
        other => panic!(
            "in_own_process must be called on a #[test]'s own thread (thread name: {other:?})"
        ),
    };
    match std::env::var(OWN_PROCESS_ENV) {
        Ok(child) if child == name => {
            body(&Failpoints {
                _only_in_own_process: (),
            });
            // On a line of its own: libtest has already printed "test <name> ... ".
            println!("\n{OWN_PROCESS_DONE} {name}");
        }
        Ok(child) => panic!(
            "{OWN_PROCESS_ENV}={child} but test {name} runs in that process: \
             only one test may run in a process with failpoints"
        ),
        Err(_) => run_own_process(&name),
    }
}

fn run_own_process(name: &str) {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current_exe: {e}"));
    let out = std::process::Command::new(&exe)
        .args([
            name,
            "--exact",
            "--nocapture",
            "--test-threads=1",
            "--include-ignored",
        ])
        .env(OWN_PROCESS_ENV, name)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("re-running {} for {name}: {e}", exe.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    print!("{stdout}");
    eprint!("{stderr}");
    let done = stdout
        .lines()
        .any(|l| l == format!("{OWN_PROCESS_DONE} {name}"));
    let failure = match (out.status.success(), done) {
        (true, true) => None,
        (false, _) => Some(format!("failed ({})", out.status)),
        (true, false) => Some("exited 0 but never finished its body".to_owned()),
    };
    if let Some(verdict) = failure {
        panic!(
            "test {name} in its own process {verdict}\n--- child stdout\n{stdout}--- child stderr\n{stderr}"
        );
    }
}

/// A real filesystem (`xfs`, `ext4`, `btrfs`) on a loop device, mounted for one test
/// (F3, T7); unmounted on drop (the loop device is released with it).
pub struct LoopFs {
    image: tempfile::TempDir,
    mnt: tempfile::TempDir,
    opts: &'static str,
    kind: String,
}

impl LoopFs {
    /// Makes a 320 MiB sparse image of `kind` and mounts it.
    pub fn new(kind: &str) -> LoopFs {
        let image = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let mnt = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let img = image.path().join("fs.img");
        std::fs::File::create(&img)
            .and_then(|f| f.set_len(320 << 20))
            .unwrap_or_else(|e| panic!("image: {e}"));
        let img = img.to_string_lossy().into_owned();
        match kind {
            "xfs" => sh("mkfs.xfs", &["-q", "-f", &img]),
            "ext4" => sh("mkfs.ext4", &["-q", "-F", &img]),
            "btrfs" => sh("mkfs.btrfs", &["-q", "-f", &img]),
            k => panic!("no mkfs for {k}"),
        }
        // ext4 commits its journal every 5 s by default: a power cut test wants only
        // its own fsyncs to make anything durable.
        let opts = match kind {
            "ext4" | "btrfs" => "loop,commit=600",
            _ => "loop",
        };
        let fs = LoopFs {
            image,
            mnt,
            opts,
            kind: kind.to_owned(),
        };
        fs.mount();
        fs
    }

    fn mount(&self) {
        let img = self.image.path().join("fs.img");
        sh(
            "mount",
            &[
                "-o",
                self.opts,
                &img.to_string_lossy(),
                &self.path().to_string_lossy(),
            ],
        );
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        self.mnt.path()
    }

    /// A power cut: whatever was not yet durable is lost; then the filesystem is
    /// mounted again, replaying its journal like a reboot. On xfs and ext4 the
    /// filesystem is shut down without flushing its log (`xfs_io -x -c shutdown`, the
    /// `FS_IOC_SHUTDOWN` ioctl they share). btrfs has no such ioctl: the image is
    /// copied as the block device holds it — without what the mounted filesystem has
    /// not written out — and the copy is mounted instead.
    pub fn power_cut(&self) {
        let mnt = self.path().to_string_lossy().into_owned();
        if self.kind == "btrfs" {
            let img = self.image.path().join("fs.img");
            let cut = self.image.path().join("cut.img");
            sh(
                "cp",
                &[
                    "--sparse=always",
                    &img.to_string_lossy(),
                    &cut.to_string_lossy(),
                ],
            );
            sh("umount", &[&mnt]);
            std::fs::rename(&cut, &img).unwrap_or_else(|e| panic!("replacing the image: {e}"));
        } else {
            sh("xfs_io", &["-x", "-c", "shutdown", &mnt]);
            sh("umount", &[&mnt]);
        }
        self.mount();
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.path())
            .status();
    }
}

/// A tmpfs mounted for one test, unmounted on drop.
pub struct TmpfsMount {
    dir: tempfile::TempDir,
}

/// Runs a tool a root-only test needs; a missing tool or a failure is a panic that
/// says what to install (T3: a missing precondition never passes).
fn sh(cmd: &str, args: &[&str]) {
    let st = std::process::Command::new(cmd)
        .args(args)
        .status()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {cmd}: {e}; real-filesystem tests need mount(8) (package \
                 mount) and chattr(1) (package e2fsprogs), see .ci/run"
            )
        });
    assert!(
        st.success(),
        "{cmd} {args:?} failed ({st}): this test needs it to work (root, tmpfs, chattr)"
    );
}

impl TmpfsMount {
    /// Mounts a tmpfs with `opts` (e.g. `size=8m`).
    pub fn new(opts: &str) -> TmpfsMount {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        sh(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                opts,
                "switchyard-test",
                &dir.path().to_string_lossy(),
            ],
        );
        TmpfsMount { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Remounts with `opts` (e.g. `ro`, `nr_inodes=123`).
    pub fn remount(&self, opts: &str) {
        sh(
            "mount",
            &[
                "-o",
                &format!("remount,{opts}"),
                &self.path().to_string_lossy(),
            ],
        );
    }

    /// Inodes in use.
    pub fn inodes_used(&self) -> u64 {
        let v = rustix::fs::statvfs(self.path()).unwrap_or_else(|e| panic!("statvfs: {e}"));
        v.f_files - v.f_ffree
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Sets or clears the immutable attribute with chattr(1).
pub fn chattr(flag: &str, p: &Path) {
    sh("chattr", &[flag, &p.to_string_lossy()]);
}
