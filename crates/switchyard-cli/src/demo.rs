//! `demo`: a narrated walk through plan → preflight → apply → status → rollback on a
//! throwaway root in a temporary directory. Needs no privileges; the temporary
//! directory is removed at the end (also when a step fails).

use crate::commands::{self, CmdResult, Ctx, Failure};
use crate::output::{shown, Out, Paint};
use std::io::Write;
use std::path::{Path, PathBuf};
use switchyard::{Error, ErrorId, Policy};

/// Host tools copied into the demo's `usr/bin`.
const TOOLS: &[&str] = &["ls", "cat", "echo", "true"];
/// Tools that get an alternative in `usr/lib/alt` (and so are swapped).
const ALTERNATIVES: &[&str] = &["ls", "cat", "echo"];

fn io(what: impl std::fmt::Display, e: std::io::Error) -> Error {
    Error::new(ErrorId::Generic, format!("demo: {what}: {e}"))
}

/// The host's copy of `name`, if it has one.
fn host_tool(name: &str) -> Option<PathBuf> {
    ["/usr/bin", "/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

fn write_exec(p: &Path, body: &str) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(p, body).map_err(|e| io(format!("writing {}", p.display()), e))?;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| io(format!("chmod {}", p.display()), e))
}

/// Builds the throwaway root; returns the tools that were swapped.
fn build_root(root: &Path) -> Result<Vec<&'static str>, Error> {
    let bin = root.join("usr/bin");
    let alt = root.join("usr/lib/alt");
    for d in [&bin, &alt] {
        std::fs::create_dir_all(d).map_err(|e| io(format!("creating {}", d.display()), e))?;
    }
    let mut swapped = Vec::new();
    for name in TOOLS {
        let dest = bin.join(name);
        match host_tool(name) {
            Some(real) => {
                std::fs::copy(&real, &dest)
                    .map_err(|e| io(format!("copying {}", real.display()), e))?;
            }
            None => write_exec(&dest, &format!("#!/bin/sh\necho \"stand-in {name}\"\n"))?,
        }
        if !ALTERNATIVES.contains(name) {
            continue;
        }
        let real =
            host_tool(name).map_or_else(|| format!("/bin/{name}"), |p| p.display().to_string());
        write_exec(
            &alt.join(name),
            &format!(
                "#!/bin/sh\n\
                 # Demo alternative for {name}: announces itself, otherwise runs the real tool.\n\
                 if [ \"$1\" = \"--which\" ]; then echo \"demo alternative {name} (wraps {real})\"; exit 0; fi\n\
                 exec {real} \"$@\"\n"
            ),
        )?;
        swapped.push(*name);
    }
    Ok(swapped)
}

/// Fact envelope fields left out when the demo shows facts (they are in the file).
const ENVELOPE: &[&str] = &[
    "schema_version",
    "ts",
    "run_id",
    "event_id",
    "plan_id",
    "dry_run",
    "switchyard_version",
];

const MANIFEST: &str = r#"# A demo manifest: swap every tool in usr/bin that has an alternative in usr/lib/alt.
preset = "dev"                 # sources need not be root-owned (we are unprivileged)

[policy]
allow_roots = ["usr/bin"]      # default-deny: only usr/bin may change

[[link_dir]]                   # one link per name present in both directories
targets = "usr/bin"
sources = "usr/lib/alt"

[smoke]
generic = false

[[smoke.check]]                # runs after the swaps; a failure rolls everything back
argv = ["usr/bin/ls", "--which"]
expect_stdout = "demo alternative ls"
timeout_ms = 5000

[[smoke.check]]
argv = ["usr/bin/echo", "hello from the swapped echo"]
expect_stdout = "hello from the swapped echo"
timeout_ms = 5000
"#;

struct Narrator {
    out: Out,
    step: u32,
    root: PathBuf,
}

impl Narrator {
    fn say(&self, s: &str) {
        self.out.say(s);
    }
    fn step(&mut self, title: &str, args: &str) {
        self.step += 1;
        self.say(&format!(
            "\n{} {}\n{}\n",
            self.out.paint(Paint::Bold, &format!("==> {}.", self.step)),
            self.out.paint(Paint::Bold, title),
            self.out.paint(
                Paint::Dim,
                &format!(
                    "$ switchyard --root {} {args}",
                    shown(&self.root.display().to_string())
                )
            )
        ));
    }
    /// Runs one command; a failing step ends the demo with its error.
    fn run(&self, r: CmdResult) -> Result<(), Failure> {
        match r? {
            0 => Ok(()),
            code => Err(Failure::from(Error::new(
                ErrorId::Generic,
                format!("demo: a step exited {code}"),
            ))),
        }
    }
}

/// `demo`.
pub fn demo(out: &Out) -> CmdResult {
    let tmp = tempfile::Builder::new()
        .prefix("switchyard-demo.")
        .tempdir()
        .map_err(|e| io("creating a temporary directory", e))?;
    let base = tmp
        .path()
        .canonicalize()
        .map_err(|e| io("resolving the temporary directory", e))?;
    let result = walk(out, &base);
    // The temporary directory's name comes from TMPDIR: escaped like any name (S10).
    let base_shown = shown(&base.display().to_string());
    let removed = tmp.close();
    match (&result, removed) {
        (_, Err(e)) => {
            return Err(Failure::from(io(format!("removing {base_shown}"), e)));
        }
        (Ok(_), Ok(())) => out.say(&format!(
            "\n{} removed the throwaway root {base_shown}\n",
            out.paint(Paint::Bold, "==> done:")
        )),
        (Err(_), Ok(())) => {}
    }
    result
}

fn walk(out: &Out, base: &Path) -> CmdResult {
    let root = base.join("root");
    let manifest = base.join("demo.toml");
    let swapped = build_root(&root)?;
    std::fs::write(&manifest, MANIFEST).map_err(|e| io("writing the manifest", e))?;
    let ctx = Ctx {
        root: root.clone(),
        state: None,
        facts_out: None,
        out: out.without_json(),
    };
    let mut n = Narrator {
        out: ctx.out,
        step: 0,
        root: root.clone(),
    };
    n.say(&format!(
        "{}\n\
         A throwaway root at {}:\n  \
         {:<30}copies of the host's tools\n  \
         {:<30}\"alternatives\": shell wrappers that exec the real tools\n\
         The manifest {}:\n{}",
        out.paint(Paint::Bold, "switchyard demo"),
        shown(&root.display().to_string()),
        format!("usr/bin/{{{}}}", TOOLS.join(",")),
        format!("usr/lib/alt/{{{}}}", swapped.join(",")),
        shown(&manifest.display().to_string()),
        MANIFEST
            .lines()
            .map(|l| format!("  | {l}\n"))
            .collect::<String>()
    ));
    let m = shown(&manifest.display().to_string());
    let ls = root.join("usr/bin/ls");
    let ls_before = std::fs::read(&ls).map_err(|e| io(format!("reading {}", ls.display()), e))?;

    n.step(
        "plan: what the manifest asks for (deterministic IDs, reads nothing but the two directories)",
        &format!("plan {m}"),
    );
    n.run(commands::plan(&ctx, &manifest))?;

    n.step(
        "preflight: every target and source inspected; any STOP would block the commit",
        &format!("preflight {m}"),
    );
    n.run(commands::preflight(&ctx, &manifest))?;

    n.step(
        "apply (dry-run, the default): what would change; nothing is touched",
        &format!("apply {m}"),
    );
    n.run(commands::apply(&ctx, &manifest, false))?;

    n.step(
        "apply --commit: journal, swap each target atomically, fsync, run the smoke checks",
        &format!("apply {m} --commit"),
    );
    n.run(commands::apply(&ctx, &manifest, true))?;

    let which = std::process::Command::new(&ls)
        .arg("--which")
        .output()
        .map_err(|e| io(format!("running {}", ls.display()), e))?;
    n.say(&format!(
        "\nThe swapped tool runs: `usr/bin/ls --which` says: {}",
        String::from_utf8_lossy(&which.stdout)
    ));
    let sy = ctx.engine(Policy::dev(), Vec::new())?;
    let st = sy.status()?;
    if let Some(t) = st.targets.first() {
        let facts = sy
            .state_path()
            .join("runs")
            .join(t.run_id.to_string())
            .join("facts.jsonl");
        let text = std::fs::read_to_string(&facts)
            .map_err(|e| io(format!("reading {}", facts.display()), e))?;
        let mut s = format!(
            "The run's evidence, one JSON fact per step ({} lines) in {}:\n",
            text.lines().count(),
            shown(&facts.display().to_string())
        );
        // One fact of each kind worth seeing: the lock, a swap (with its hashes), a check.
        let mut picked = Vec::new();
        for want in ["\"apply.attempt\"", "\"path\":\"usr/bin/ls\"", "\"smoke\""] {
            if let Some(l) = text
                .lines()
                .find(|l| l.contains(want) && !picked.contains(l))
            {
                picked.push(l);
            }
        }
        for l in picked {
            let mut v: serde_json::Value = serde_json::from_str(l).map_err(|e| {
                Error::new(ErrorId::Generic, format!("demo: a fact is not JSON: {e}"))
            })?;
            if let Some(o) = v.as_object_mut() {
                for k in ENVELOPE {
                    o.remove(*k);
                }
            }
            let l = v.to_string();
            let cut: String = l.chars().take(400).collect();
            let more = if cut.len() < l.len() { " …" } else { "" };
            s.push_str(&format!("  {}{more}\n", shown(&cut)));
        }
        s.push_str(&format!(
            "  (envelope fields {} omitted here)\n",
            ENVELOPE.join(", ")
        ));
        n.say(&s);
    }

    n.step(
        "status: each managed target, its link, the run that made it and its backup",
        "status",
    );
    n.run(commands::status(&ctx))?;

    n.step(
        "rollback --last --commit: undo that run exactly, from its record",
        "rollback --last --commit",
    );
    n.run(commands::rollback(&ctx, None, true))?;

    n.step("status: nothing is managed any more", "status");
    n.run(commands::status(&ctx))?;

    let is_file = std::fs::symlink_metadata(&ls).is_ok_and(|m| m.file_type().is_file());
    if !is_file || std::fs::read(&ls).ok().as_deref() != Some(ls_before.as_slice()) {
        return Err(Failure::from(Error::new(
            ErrorId::Generic,
            "demo: usr/bin/ls was not restored exactly",
        )));
    }
    n.say("\nusr/bin/ls is a regular file again, byte for byte the copy it was.\n");
    let _ = std::io::stdout().flush();
    Ok(0)
}
