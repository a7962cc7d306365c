//! Embedding Switchyard without the CLI, as a distro tool would: read a manifest,
//! build a handle, plan, preflight, dry-run, commit, query, and roll back — over a
//! throwaway root in a temporary directory, so it is safe to run anywhere:
//!
//! ```sh
//! cargo run -p switchyard --example embed
//! ```
//!
//! `cargo test -p switchyard --examples` runs the test at the bottom, which checks
//! that the tree after the rollback is the tree before the commit.

use std::error::Error;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use switchyard::{ApplyMode, FileLock, Manifest, MemorySink, RunSelector, SafePath, Switchyard};

/// What an installer would ship: swap the tools in `usr/bin` for the alternatives of
/// the same name in `usr/lib/alt` (one link per name present in both directories).
const MANIFEST: &str = r#"
preset = "dev"          # sources need not be root-owned; no smoke checks required

[[link_dir]]
targets = "usr/bin"
sources = "usr/lib/alt"
"#;

/// The tools present in both directories of the throwaway root.
const TOOLS: [&str; 2] = ["ls", "cat"];

fn main() -> Result<(), Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    let (root, manifest) = build_root(dir.path())?;
    embed(&root, &manifest)?;
    Ok(())
}

/// A throwaway root under `dir` — `usr/bin/{ls,cat}` and their alternatives in
/// `usr/lib/alt` — and the manifest beside it; returns both paths.
fn build_root(dir: &Path) -> std::io::Result<(PathBuf, PathBuf)> {
    let root = dir.join("root");
    for t in TOOLS {
        write_tool(&root, &format!("usr/bin/{t}"), "GNU")?;
        write_tool(&root, &format!("usr/lib/alt/{t}"), "alternative")?;
    }
    let manifest = dir.join("alt.toml");
    std::fs::write(&manifest, MANIFEST)?;
    Ok((root, manifest))
}

/// What [`embed`] saw on the way, for the test.
#[derive(Debug)]
#[cfg_attr(not(test), allow(dead_code))] // `main` only prints it
struct Seen {
    planned: usize,
    in_effect_after_dry_run: bool,
    in_effect_after_commit: bool,
    managed: usize,
    runs: usize,
    in_effect_after_rollback: bool,
    facts: usize,
}

/// Swaps the tools of `root` for their alternatives as `manifest` asks, and rolls
/// the swap back, printing one line per step.
fn embed(root: &Path, manifest: &Path) -> Result<Seen, Box<dyn Error>> {
    println!("root:      {}", root.display());
    let m = Manifest::load(manifest)?;
    let facts = MemorySink::default();
    let sy = Switchyard::builder(m.policy().clone())
        .root(root)
        .with_lock_manager(FileLock::new())
        .with_facts_sink(facts.clone())
        .build()?;

    let plan = m.plan(&sy)?;
    println!(
        "plan:      {} ({} actions)",
        plan.plan_id,
        plan.actions.len()
    );
    for a in &plan.actions {
        let source = a.source.as_ref().map_or("-", SafePath::as_str);
        println!("           {} {} -> {source}", a.kind.as_str(), a.target);
    }

    let pre = sy.preflight(&plan)?;
    println!("preflight: {}", if pre.ok() { "ok" } else { "stopped" });
    if let Some(e) = pre.error() {
        return Err(e.into());
    }

    let dry = sy.apply(&plan, ApplyMode::DryRun)?;
    let would = dry.actions.iter().filter(|a| !a.noop).count();
    println!(
        "dry-run:   {would} of {} targets would change; nothing was modified",
        dry.actions.len()
    );
    let in_effect_after_dry_run = sy.in_effect(&plan)?.in_effect;
    println!("in effect: {in_effect_after_dry_run}");

    let done = sy.apply(&plan, ApplyMode::Commit)?;
    println!("commit:    run {} (changed: {})", done.run_id, done.changed);
    let in_effect_after_commit = sy.in_effect(&plan)?.in_effect;
    println!("in effect: {in_effect_after_commit}");

    let status = sy.status()?;
    for t in &status.targets {
        let backup = t.backup.as_deref().unwrap_or("-");
        println!(
            "status:    {} {} (backup {backup})",
            t.path,
            t.state.as_str()
        );
    }
    let runs = sy.runs()?;
    for r in &runs {
        println!("run:       {} {} {:?}", r.run_id, r.kind.as_str(), r.status);
    }

    let undone = sy.rollback(RunSelector::Id(done.run_id), ApplyMode::Commit)?;
    println!(
        "rollback:  run {} restored {} targets",
        undone.run_id,
        undone.actions.len()
    );
    let in_effect_after_rollback = sy.in_effect(&plan)?.in_effect;
    println!("in effect: {in_effect_after_rollback}");
    println!("facts:     {} emitted", facts.facts().len());

    Ok(Seen {
        planned: plan.actions.len(),
        in_effect_after_dry_run,
        in_effect_after_commit,
        managed: status.targets.len(),
        runs: runs.len(),
        in_effect_after_rollback,
        facts: facts.facts().len(),
    })
}

/// A small executable shell script at `root/rel` that says which build it is.
fn write_tool(root: &Path, rel: &str, which: &str) -> std::io::Result<()> {
    let path = root.join(rel);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&path, format!("#!/bin/sh\necho {which}\n"))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::os::unix::fs::MetadataExt;

    /// One entry of a snapshot: kind (`f`, `d`, `l`), inode, mode, bytes or link text.
    type Entry = (char, u64, u32, Vec<u8>);

    /// Every entry under `dir`, by relative path.
    fn snapshot(dir: &Path) -> std::io::Result<BTreeMap<String, Entry>> {
        let mut out = BTreeMap::new();
        let mut todo = vec![dir.to_path_buf()];
        while let Some(d) = todo.pop() {
            for entry in std::fs::read_dir(&d)? {
                let path = entry?.path();
                let md = std::fs::symlink_metadata(&path)?;
                let (kind, content) = if md.is_symlink() {
                    (
                        'l',
                        std::fs::read_link(&path)?
                            .into_os_string()
                            .into_encoded_bytes(),
                    )
                } else if md.is_dir() {
                    todo.push(path.clone());
                    ('d', Vec::new())
                } else {
                    ('f', std::fs::read(&path)?)
                };
                let rel = path.strip_prefix(dir).map_err(std::io::Error::other)?;
                out.insert(
                    rel.display().to_string(),
                    (kind, md.ino(), md.mode(), content),
                );
            }
        }
        Ok(out)
    }

    /// The example end to end (R7, M4, D2): the commit puts the alternatives in
    /// effect, the queries see it, and the rollback puts back the very same files.
    #[test]
    fn embed_commits_and_rolls_back_to_the_same_tree() -> Result<(), Box<dyn Error>> {
        let dir = tempfile::tempdir()?;
        let (root, manifest) = build_root(dir.path())?;
        let usr = root.join("usr");
        let before = snapshot(&usr)?;

        // D2: a dry-run changes nothing at all, the state directory included.
        let whole = snapshot(&root)?;
        let m = Manifest::load(&manifest)?;
        let sy = Switchyard::builder(m.policy().clone())
            .root(&root)
            .build()?;
        let dry = sy.apply(&m.plan(&sy)?, ApplyMode::DryRun)?;
        assert!(dry.changed, "the dry-run should predict a change");
        assert_eq!(snapshot(&root)?, whole, "a dry-run changed the tree");

        let seen = embed(&root, &manifest)?;
        assert_eq!(seen.planned, TOOLS.len());
        assert!(!seen.in_effect_after_dry_run, "a dry-run changed the tree");
        assert!(seen.in_effect_after_commit, "the commit is not in effect");
        assert_eq!(seen.managed, TOOLS.len());
        assert_eq!(seen.runs, 1, "one committed apply");
        assert!(
            !seen.in_effect_after_rollback,
            "the rollback left the plan in effect"
        );
        assert!(seen.facts > 0, "no facts reached the sink");
        assert_eq!(
            snapshot(&usr)?,
            before,
            "the rollback did not restore the tree"
        );
        Ok(())
    }
}
