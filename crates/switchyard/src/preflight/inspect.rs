//! Inspection: what preflight observes about each action, once per run, through the
//! root's directory handles. Never blocks (resolution opens `O_PATH` first) and never
//! mutates.

use super::Inspection;
use crate::node::{sha256_file, Node, NodeKind};
use crate::path::{Root, SafePath};
use crate::plan::{Action, ActionKind, Plan};
use crate::state::RunRecord;
use rustix::fs::OFlags;
use std::os::fd::OwnedFd;
use std::sync::Arc;

/// What stops `name` in `dir` from being swapped: mount flags and inode attributes.
fn immovable(dir: &OwnedFd, name: &str, current: &Node) -> Vec<String> {
    use rustix::fs::{IFlags, StatVfsMountFlags as M};
    let mut why = Vec::new();
    match rustix::fs::fstatvfs(dir) {
        Ok(v) if v.f_flag.contains(M::RDONLY) => {
            why.push("target is on a read-only filesystem".to_owned())
        }
        Ok(v) if v.f_flag.contains(M::NOEXEC) => {
            why.push("target is on a noexec filesystem".to_owned())
        }
        Ok(_) => {}
        Err(e) => why.push(format!("cannot read the target's mount flags: {e}")),
    }
    let flags = |fd: &OwnedFd| rustix::fs::ioctl_getflags(fd).unwrap_or(IFlags::empty());
    let fixed = IFlags::IMMUTABLE | IFlags::APPEND;
    if flags(dir).intersects(fixed) {
        why.push("the target's directory is immutable or append-only".to_owned());
    }
    if current.kind == NodeKind::File {
        if let Ok(fd) = crate::node::open_noatime(dir, name) {
            if flags(&fd).intersects(fixed) {
                why.push("target is immutable or append-only (chattr)".to_owned());
            }
        }
    }
    why
}

/// Whether `name` in `dir` is a mount point (something is bind-mounted on it):
/// `statx(2)` reports `STATX_ATTR_MOUNT_ROOT` (Linux 5.8+), or, where it cannot, its
/// device differs from its directory's. A rename cannot replace a mount point (F1).
fn mounted_on(dir: &OwnedFd, name: &str) -> bool {
    use rustix::fs::{statx, AtFlags, StatxAttributes, StatxFlags};
    match statx(
        dir,
        name,
        AtFlags::SYMLINK_NOFOLLOW,
        StatxFlags::BASIC_STATS,
    ) {
        Ok(x) if x.stx_attributes_mask.contains(StatxAttributes::MOUNT_ROOT) => {
            x.stx_attributes.contains(StatxAttributes::MOUNT_ROOT)
        }
        Ok(x) => rustix::fs::fstat(dir).is_ok_and(|d| {
            (u64::from(x.stx_dev_major), u64::from(x.stx_dev_minor))
                != (
                    u64::from(rustix::fs::major(d.st_dev)),
                    u64::from(rustix::fs::minor(d.st_dev)),
                )
        }),
        Err(_) => false,
    }
}

/// What `p` resolves to inside the root: kind, mode, owner and identity, plus the
/// SHA-256 of a regular file. Opens with `O_PATH` first, so FIFOs and devices are
/// never opened for reading (no blocking, no side effects).
pub fn resolve(root: &Root, p: &SafePath) -> std::io::Result<Node> {
    let st = rustix::fs::fstat(root.open_resolved(p, OFlags::PATH)?)?;
    let mut n = Node::from_stat(&st);
    if n.kind == NodeKind::File {
        let fd = root.open_resolved(p, OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY)?;
        let again = rustix::fs::fstat(&fd)?;
        if (again.st_dev, again.st_ino) != (st.st_dev, st.st_ino) {
            return Err(std::io::Error::other("changed while being inspected"));
        }
        n.sha256 = Some(sha256_file(&fd)?);
    }
    Ok(n)
}

/// A backup a restore can put back: its store entry name, the node there now, its
/// sidecar (the prior snapshot) and the hash of what the target resolved to before the
/// run that made it.
type FoundBackup = ((String, Node, Node), Option<String>);

/// The newest live backup of `target` made by a link action, in the store of `dir`.
fn find_backup(
    dir: &OwnedFd,
    target: &SafePath,
    records: &[RunRecord],
) -> Result<Option<FoundBackup>, String> {
    let candidates = records
        .iter()
        .rev()
        .filter(|r| r.is_live_apply())
        .flat_map(|r| r.actions.iter())
        .filter(|a| &a.target == target && a.kind == ActionKind::Link && !a.noop);
    for a in candidates {
        let Some(b) = a.backup.as_deref() else {
            continue;
        };
        // An unreadable newest backup is a stop, never a silent fall-back to an older one.
        let n = match crate::store::open(dir, false) {
            Ok(Some(store)) => Node::observe(&store, b, true),
            Ok(None) => Ok(Node::absent()),
            Err(e) => Err(e),
        }
        .map_err(|e| format!("backup {b} cannot be inspected: {e}"))?;
        if n.same_inode(&a.prior) {
            return Ok(Some((
                (b.to_owned(), n, a.prior.clone()),
                a.before_hash.clone(),
            )));
        }
    }
    Ok(None)
}

/// Whether a settled restore already put a backup at `target` (D3 for restores).
fn already_restored(current: &Node, target: &SafePath, records: &[RunRecord]) -> bool {
    records
        .iter()
        .filter(|r| r.is_live_apply())
        .flat_map(|r| r.actions.iter())
        .any(|a| {
            &a.target == target
                && a.kind == ActionKind::Restore
                && a.new_node.as_ref().is_some_and(|n| n.same_inode(current))
        })
}

/// The directory update-alternatives keeps its links in (`/etc/alternatives`), as a
/// root-relative prefix.
const ALTERNATIVES_DIR: &str = "etc/alternatives/";

/// Whether root-relative `p` is an entry of `etc/alternatives` (M6).
fn is_alternatives_link(p: &str) -> bool {
    p.strip_prefix(ALTERNATIVES_DIR)
        .is_some_and(|name| !name.is_empty() && !name.contains('/'))
}

/// Observes every action of `plan` (see [`Inspection`]). Each target directory is
/// opened once and shared by its actions, so a plan holds one descriptor per
/// directory, not per action (a 100 000-link plan runs at `ulimit -n 1024`).
pub fn inspect(root: &Root, plan: &Plan, records: &[RunRecord]) -> Vec<Inspection> {
    let targets: std::collections::HashSet<&str> =
        plan.actions.iter().map(|a| a.target.as_str()).collect();
    let mut dirs: std::collections::HashMap<String, Arc<OwnedFd>> = Default::default();
    plan.actions
        .iter()
        .map(|a| {
            let parent = a.target.parent();
            let dir = match dirs.get(parent) {
                Some(d) => Ok(Arc::clone(d)),
                None => root.open_parent(&a.target).map(|d| {
                    let d = Arc::new(d);
                    dirs.insert(parent.to_owned(), Arc::clone(&d));
                    d
                }),
            };
            let mut i = inspect_one(root, a, dir, records);
            if let Some(src) = &a.source {
                i.source_through = root.first_visited(src, |p| targets.contains(&p));
            }
            // M6: the chain of a symlinked target, followed inside the root through
            // its directory handles, passes through etc/alternatives/NAME.
            if i.current.kind == NodeKind::Symlink {
                i.alternatives = root.first_visited(&a.target, is_alternatives_link);
            }
            i
        })
        .collect()
}

fn inspect_one(
    root: &Root,
    action: &Action,
    dir: std::io::Result<Arc<OwnedFd>>,
    records: &[RunRecord],
) -> Inspection {
    let mut i = Inspection {
        action: action.clone(),
        dir: None,
        dir_error: None,
        dir_io_error: None,
        current: Node::absent(),
        source: None,
        new_link: None,
        restore_from: None,
        noop: false,
        before_hash: None,
        after_hash: None,
        immovable: Vec::new(),
        owner: None,
        foreign_diversion: None,
        own_diversion: None,
        other_spellings: Vec::new(),
        mounted: false,
        resolved: None,
        source_through: None,
        alternatives: None,
    };
    let t = &action.target;
    match dir {
        Ok(d) => i.dir = Some(d),
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
            i.dir_error = Some(format!(
                "parent directory {} is or contains a symlink; refusing to follow it",
                t.parent()
            ));
        }
        Err(e) => {
            i.dir_error = Some(format!(
                "parent directory /{} cannot be opened: {e}",
                t.parent()
            ));
            i.dir_io_error = Some(e);
        }
    }
    if let Some(dir) = &i.dir {
        match Node::observe(dir, t.file_name(), true) {
            Ok(n) => i.current = n,
            Err(e) => {
                i.dir_error = Some(format!("target cannot be inspected: {e}"));
                i.dir_io_error = Some(e);
            }
        }
    }
    if let Some(dir) = &i.dir {
        i.immovable = immovable(dir, t.file_name(), &i.current);
        i.mounted = i.current.kind != NodeKind::Absent && mounted_on(dir, t.file_name());
    }
    i.resolved = match i.current.kind {
        NodeKind::Symlink => resolve(root, t).ok(),
        NodeKind::File => Some(i.current.clone()),
        _ => None,
    };
    i.before_hash = i.resolved.as_ref().and_then(|n| n.sha256.clone());
    match action.kind {
        ActionKind::Link => {
            let src = action.source.as_ref().unwrap_or(t);
            let link = t.relative_link_to(src);
            i.noop = i.current.kind == NodeKind::Symlink
                && i.current.link_dest.as_deref() == Some(link.as_str());
            let source = resolve(root, src);
            i.after_hash = source.as_ref().ok().and_then(|n| n.sha256.clone());
            i.source = Some(source);
            i.new_link = Some(link);
        }
        ActionKind::Restore => {
            if let Some(dir) = &i.dir {
                let mut resolved_before = None;
                match find_backup(dir, t, records) {
                    Ok(found) => {
                        (i.restore_from, resolved_before) =
                            found.map(|(f, h)| (Some(f), h)).unwrap_or_default()
                    }
                    Err(why) => i.dir_error = Some(why),
                }
                if let Some((_, node, _)) = &i.restore_from {
                    // A kept symlink resolves, once back at the target, to what the
                    // target resolved to before the run that replaced it.
                    i.after_hash = match node.kind {
                        NodeKind::File => node.sha256.clone(),
                        _ => resolved_before,
                    };
                } else {
                    i.noop = already_restored(&i.current, t, records);
                    i.after_hash = i.before_hash.clone();
                }
            }
        }
    }
    i
}
