//! Smoke runner (H2–H4): health checks run inside commit, after the swaps.
//!
//! Contract: a runner returns one [`SmokeOutcome`] per check. A check that could
//! not run — exec error, missing binary, signal, timeout — is a failure whose
//! `cause` says why; it is never read as empty output or success (H4). Any failed
//! outcome makes the engine undo the run and fail with `E_SMOKE` (H3).

use crate::path::{Root, SafePath};
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The result of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmokeOutcome {
    /// The check's name (its argv, joined).
    pub check: String,
    /// Whether the check passed.
    pub ok: bool,
    /// Why it failed (exit status, missing output, exec error, signal, timeout).
    pub cause: Option<String>,
}

/// What a runner may look at.
pub struct SmokeContext<'a> {
    /// The root the swapped targets live in.
    pub root: &'a Root,
    /// Targets the run swapped.
    pub targets: &'a [SafePath],
}

/// Verifies the system after the swaps.
pub trait SmokeRunner: Send + Sync {
    /// Runs every check.
    fn run(&self, cx: &SmokeContext<'_>) -> Vec<SmokeOutcome>;
}

/// One command check: run `argv`, expect an exit code and a stdout substring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandCheck {
    /// `argv[0]` without a leading `/` is resolved inside the root.
    pub argv: Vec<String>,
    /// The exit status the check must end with.
    pub expect_exit: i32,
    /// A substring its standard output must contain.
    pub expect_stdout: Option<String>,
    /// How long it may run before it is killed (a timeout is a failure, H4).
    pub timeout: Duration,
}

/// Runs a list of [`CommandCheck`]s.
#[derive(Debug, Clone, Default)]
pub struct CommandSmoke {
    /// The checks, run in order.
    pub checks: Vec<CommandCheck>,
}

impl SmokeRunner for CommandSmoke {
    fn run(&self, cx: &SmokeContext<'_>) -> Vec<SmokeOutcome> {
        self.checks.iter().map(|c| run_check(cx.root, c)).collect()
    }
}

fn program(root: &Root, argv0: &str) -> PathBuf {
    if argv0.starts_with('/') {
        PathBuf::from(argv0)
    } else {
        root.path().join(argv0)
    }
}

impl CommandCheck {
    /// Runs this check in `root` to completion or timeout (H4: a check that cannot
    /// run is a failure with its cause).
    pub fn run(&self, root: &Root) -> SmokeOutcome {
        run_check(root, self)
    }
}

/// What a check printed, for its failure message: the first 200 bytes, quoted and
/// escaped (control characters cannot reach a terminal), marked when cut.
fn printed(out: &[u8]) -> String {
    const SHOWN: usize = 200;
    let text = String::from_utf8_lossy(&out[..out.len().min(SHOWN)]).into_owned();
    if out.len() > SHOWN {
        format!("{text:?} (first {SHOWN} of {} bytes)", out.len())
    } else {
        format!("{text:?}")
    }
}

fn run_check(root: &Root, c: &CommandCheck) -> SmokeOutcome {
    let name = c.argv.join(" ");
    let fail = |cause: String| SmokeOutcome {
        check: name.clone(),
        ok: false,
        cause: Some(cause),
    };
    let Some(argv0) = c.argv.first() else {
        return fail("empty argv".into());
    };
    // A fixed environment (H7): never the caller's variables (and secrets), a PATH of
    // the root's own directories, the C locale and UTC.
    let path = [
        "usr/local/sbin",
        "usr/local/bin",
        "usr/sbin",
        "usr/bin",
        "sbin",
        "bin",
    ]
    .iter()
    .map(|d| root.path().join(d).display().to_string())
    .collect::<Vec<_>>()
    .join(":");
    let mut child = match Command::new(program(root, argv0))
        .args(&c.argv[1..])
        .env_clear()
        .env("PATH", path)
        .env("LC_ALL", "C")
        .env("TZ", "UTC")
        .current_dir(root.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(ch) => ch,
        Err(e) => return fail(format!("could not execute {argv0}: {e}")),
    };
    let mut stdout = child.stdout.take();
    // Keeps the first MiB and drains the rest, so a chatty check never blocks on a
    // full pipe (which would be misreported as a timeout).
    let reader = std::thread::spawn(move || -> std::io::Result<Vec<u8>> {
        let mut buf = Vec::new();
        if let Some(out) = stdout.as_mut() {
            out.take(1 << 20).read_to_end(&mut buf)?;
            std::io::copy(out, &mut std::io::sink())?;
        }
        Ok(buf)
    });
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if start.elapsed() >= c.timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return fail(format!("timed out after {} ms", c.timeout.as_millis()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return fail(format!("waiting for {argv0}: {e}")),
        }
    };
    let out = match reader.join() {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => return fail(format!("reading stdout of {argv0}: {e}")),
        Err(_) => return fail(format!("reading stdout of {argv0}: reader thread panicked")),
    };
    use std::os::unix::process::ExitStatusExt;
    if let Some(sig) = status.signal() {
        return fail(format!("killed by signal {sig}"));
    }
    let code = status.code().unwrap_or(-1);
    if code != c.expect_exit {
        return fail(format!(
            "exit status {code}, expected {}; it printed {}",
            c.expect_exit,
            printed(&out)
        ));
    }
    if let Some(want) = &c.expect_stdout {
        if !String::from_utf8_lossy(&out).contains(want.as_str()) {
            return fail(format!(
                "stdout does not contain {want:?}; it printed {}",
                printed(&out)
            ));
        }
    }
    SmokeOutcome {
        check: name,
        ok: true,
        cause: None,
    }
}
