//! `switchyard`: the command-line tool over the Switchyard library (the CLI contract and
//! exit codes of `docs/GUARANTEES.md`).
//! Argument parsing is in `cli`, output in `output`; every behaviour, the manifest
//! format included (`switchyard::Manifest`), lives in the library. Exit codes come only from `ErrorId::exit_code`.
#![forbid(unsafe_code)]

mod cli;
mod commands;
mod demo;
mod doc;
mod doctor;
mod output;

use clap::{CommandFactory, Parser};
use cli::{Cli, Command};
use commands::Ctx;
use output::Out;
use switchyard::{Error, ErrorId};

fn main() {
    std::process::exit(run());
}

fn run() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ErrorId::Usage.exit_code()
            } else {
                0 // --help, --version
            };
        }
    };
    let g = &cli.global;
    let out = Out::new(g.json, g.quiet, g.color);
    let result = match &cli.command {
        Command::Completions { shell } => {
            let mut cmd = Cli::command();
            clap_complete::generate(*shell, &mut cmd, "switchyard", &mut std::io::stdout());
            Ok(0)
        }
        Command::Man => clap_mangen::Man::new(Cli::command())
            .render(&mut std::io::stdout())
            .map(|()| 0)
            .map_err(|e| Error::new(ErrorId::Generic, format!("writing the man page: {e}")).into()),
        Command::Demo => demo::demo(&out),
        cmd => match context(g, out) {
            Err(e) => Err(e.into()),
            Ok(ctx) => match cmd {
                Command::Plan(m) => commands::plan(&ctx, &m.manifest),
                Command::Preflight(m) => commands::preflight(&ctx, &m.manifest),
                Command::Apply { manifest, commit } => {
                    commands::apply(&ctx, &manifest.manifest, *commit)
                }
                Command::Rollback { run_id, commit, .. } => {
                    commands::rollback(&ctx, *run_id, *commit)
                }
                Command::Status => commands::status(&ctx),
                Command::Recover { commit } => commands::recover(&ctx, *commit),
                Command::Doctor => doctor::doctor(&ctx),
                Command::Demo | Command::Completions { .. } | Command::Man => Ok(0),
            },
        },
    };
    match result {
        Ok(code) => code,
        Err(f) => {
            if !f.json_printed {
                out.json(&doc::Failed::of(&f.error));
            }
            out.error(&f.error);
            f.error.exit_code()
        }
    }
}

/// Resolves `--root` (canonical) and `--state-dir` (absolute).
fn context(g: &cli::Global, out: Out) -> Result<Ctx, Error> {
    let root = std::fs::canonicalize(&g.root)
        .map_err(|e| Error::new(ErrorId::Usage, format!("--root {}: {e}", g.root.display())))?;
    if !root.is_dir() {
        return Err(Error::new(
            ErrorId::Usage,
            format!("--root {}: not a directory", g.root.display()),
        ));
    }
    let state = match &g.state_dir {
        Some(s) => Some(std::path::absolute(s).map_err(|e| {
            Error::new(ErrorId::Usage, format!("--state-dir {}: {e}", s.display()))
        })?),
        None => None,
    };
    let facts_out = match &g.facts_out {
        Some(p) => Some(std::path::absolute(p).map_err(|e| {
            Error::new(ErrorId::Usage, format!("--facts-out {}: {e}", p.display()))
        })?),
        None => None,
    };
    Ok(Ctx {
        root,
        state,
        facts_out,
        out,
    })
}
