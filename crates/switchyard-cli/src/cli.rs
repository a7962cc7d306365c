//! Command-line arguments (the CLI contract of `docs/GUARANTEES.md`). The help text here
//! is the manual: keep it accurate.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

const AFTER_HELP: &str = "\
MANIFEST (TOML; every path is relative to --root, `/x` means <root>/x):

  preset = \"production\"            # the default; or \"dev\" (sources need not be root-owned)
  [policy]                         # optional overrides of the preset
  allow_roots = [\"usr/bin\"]        # targets must lie under one of these (default-deny)
  forbid_paths = [\"usr/bin/sudo\"]  # always refused, whatever allow_roots says
  require_sidecar_integrity = true
  require_smoke_runner = true      # production refuses to commit without [[smoke.check]]
  disable_auto_rollback = false
  allow_alternatives_takeover = false  # swap targets that resolve through etc/alternatives
  strict_source_ownership = true
  strict_ownership = false         # every target must be owned by a package (dpkg database)
  lock_timeout_ms = 10000
  max_plan_actions = 10000
  [[link]]                         # target becomes a symlink to source
  target = \"usr/bin/ls\"
  source = \"usr/lib/uutils/ls\"
  [[link_dir]]                     # one link per file name present in both directories
  targets = \"usr/bin\"
  sources = \"usr/lib/uutils\"
  [[restore]]                      # put back the latest backup of target
  target = \"usr/bin/cat\"
  [smoke]
  generic = false                  # the built-in suite is not available yet: must be false
  [[smoke.check]]                  # runs after the swaps; a failure rolls everything back
  argv = [\"usr/bin/ls\", \"-d\", \"usr/bin\"]  # argv[0] without a leading / is inside the root;
  expect_exit = 0                  # checks run on the host (not chrooted), in the root dir
  expect_stdout = \"usr/bin\"        # optional: a substring stdout must contain
  timeout_ms = 2000

STATE: <root>/var/lib/switchyard (or --state-dir): lock, journal/, runs/<run_id>/facts.jsonl.
Every commit writes its facts to runs/<run_id>/facts.jsonl; --json names that file.

EXIT CODES:
   0  success, or nothing to change         40  E_ATOMIC_SWAP     the swap itself failed
   1  E_GENERIC    unexpected failure       50  E_EXDEV           cross-device fallback refused
   2  E_USAGE      bad arguments/manifest   60  E_BACKUP_MISSING  no backup to restore
  10  E_POLICY     preflight stopped        70  E_RESTORE_FAILED  a restore step failed
  20  E_OWNERSHIP  ownership check failed   80  E_SMOKE           health check failed (rolled back)
  30  E_LOCKING    lock not acquired        90  E_RECOVERY        interrupted run not recovered

GUARANTEES: docs/GUARANTEES.md in Switchyard's source repository lists every promise (A1,
R2, ...), the tests that prove each one, what is not implemented yet, and the full --json
keys and fact format.

Start with `switchyard demo`: it walks through every step on a throwaway root.";

/// Swap files on a live Linux system for alternatives — atomically, reversibly,
/// crash-safely, with evidence.
///
/// Every command that changes anything is a dry-run unless given --commit. Bad input
/// (a malformed manifest, an unknown key, a path with `..`, a missing file) exits 2
/// with one line on stderr naming the file, line:column and field, and changes nothing.
///
/// What Switchyard guarantees, how each guarantee is tested, and what is not
/// implemented yet, is written down in docs/GUARANTEES.md of its source repository.
#[derive(Debug, Parser)]
#[command(name = "switchyard", version, after_long_help = AFTER_HELP, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command accepts.
#[derive(Debug, Args)]
pub struct Global {
    /// The directory every path is confined to; manifest paths are relative to it.
    #[arg(long, global = true, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
    /// Where the lock, journals and run records live [default: <root>/var/lib/switchyard].
    #[arg(long, global = true, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Also write this command's facts, one JSON object per line, to FILE (created or
    /// truncated), dry-runs included: what a dry-run predicts can be read and compared
    /// with its commit.
    #[arg(long, global = true, value_name = "FILE")]
    pub facts_out: Option<PathBuf>,
    /// Print one JSON document on stdout instead of tables (stable keys: docs/GUARANTEES.md).
    #[arg(long, global = true, conflicts_with = "quiet")]
    pub json: bool,
    /// Print nothing on success (errors still go to stderr).
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// When to colour human output; `auto` means only on a terminal, and NO_COLOR
    /// (set to anything) always turns colour off.
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the plan of a manifest: its ID and each action (kind, target, source)
    ///
    /// Reads the manifest (and, for [[link_dir]], lists the two directories); never
    /// mutates. IDs are deterministic: the same manifest gives the same plan_id and
    /// action_ids on any machine.
    Plan(ManifestArg),
    /// Inspect every target and source: one verdict per action, with each STOP's reason
    ///
    /// Never mutates. Exits 10 (E_POLICY) when any action stops: a missing source, a
    /// target outside allow_roots or under forbid_paths, a symlinked parent directory…
    /// or 60 (E_BACKUP_MISSING) when the only reason is a restore with no backup: the
    /// code `apply` exits with for the same plan.
    Preflight(ManifestArg),
    /// Apply a manifest (a dry-run unless --commit)
    ///
    /// Without --commit this shows what would change and touches nothing. With
    /// --commit every action happens or none does: the swaps are journaled, atomic and
    /// fsynced; the [[smoke.check]]s run after them and a failure rolls everything back
    /// (exit 80). Applying a manifest that is already in effect changes nothing and
    /// exits 0. The run's facts go to <state>/runs/<run_id>/facts.jsonl.
    Apply {
        #[command(flatten)]
        manifest: ManifestArg,
        /// Make the changes (default: dry-run).
        #[arg(long)]
        commit: bool,
    },
    /// Undo one recorded apply run exactly (a dry-run unless --commit)
    ///
    /// Uses that run's record, not "the newest backup": bytes, modes, owners, times
    /// and link texts come back as they were, and no backup is left behind. Rolling
    /// back a run twice changes nothing the second time (idempotent_noop).
    #[command(group(clap::ArgGroup::new("which").required(true).args(["run_id", "last"])))]
    Rollback {
        /// The apply run to undo (as printed by `apply` and `status`).
        #[arg(value_name = "RUN_ID")]
        run_id: Option<uuid::Uuid>,
        /// Undo the newest apply run that has not been undone.
        #[arg(long)]
        last: bool,
        /// Make the changes (default: dry-run).
        #[arg(long)]
        commit: bool,
    },
    /// Show each managed target (kind, link destination, run, backup) and pending journals
    ///
    /// Read-only.
    Status,
    /// Settle runs interrupted by a crash (a dry-run unless --commit)
    ///
    /// Runs that had committed are completed, the rest are undone. Every mutating
    /// command does this first anyway; `recover` does only this.
    Recover {
        /// Make the changes (default: dry-run).
        #[arg(long)]
        commit: bool,
    },
    /// Check the lock, pending journals, the state directory and what recover would do
    ///
    /// Reports whether the lock is free or held (and by which pid), any interrupted
    /// runs, whether the state directory and its records are readable, and what
    /// `recover` would do. Read-only. Exits 90 (E_RECOVERY) when an interrupted run is
    /// pending, 1 when anything else needs attention, 0 when all is well.
    Doctor,
    /// Walk through plan → preflight → apply → status → rollback on a throwaway root
    ///
    /// Builds a root in a temporary directory (copies of a few host tools, and
    /// "alternatives" that wrap them), then runs each step with a smoke check,
    /// narrating as it goes and showing the facts. Needs no privileges; ignores --root,
    /// --state-dir and --json; removes the temporary directory at the end.
    Demo,
    /// Print a shell completion script
    ///
    /// e.g. `switchyard completions bash > /etc/bash_completion.d/switchyard`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff)
    ///
    /// e.g. `switchyard man > /usr/share/man/man1/switchyard.1`.
    Man,
}

#[derive(Debug, Args)]
pub struct ManifestArg {
    /// The manifest (TOML) to read; see MANIFEST in `switchyard --help`.
    #[arg(value_name = "MANIFEST")]
    pub manifest: PathBuf,
}
