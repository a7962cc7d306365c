//! Swap atoms (A1, A2, R2): move one action forward, or undo it from any state.
//!
//! Every action involves three names in the target's directory: the target `T`, the
//! stage `S` (where the new node waits: a fresh symlink, or the backup a restore puts
//! back) and the backup `B` (where the prior node goes). Forward:
//!
//! ```text
//! link:    symlinkat(new, S)                 ── APPLY_AFTER_STAGE
//! prior:   renameat2(S, T, EXCHANGE)         ── APPLY_AFTER_SWAP    (T=new, S=prior)
//!          renameat2(S, B, NOREPLACE)        ── APPLY_AFTER_BACKUP  (B=prior)
//! absent:  renameat2(S, T, NOREPLACE)        ── APPLY_AFTER_SWAP
//! ```
//!
//! Where the filesystem rejects the flags (`EINVAL`; forced in tests by
//! [`Mechanics`]), the fallback of A1 (`docs/GUARANTEES.md`): `linkat(T, B)`
//! ── APPLY_AFTER_BACKUP, then `renameat(S, T)` ── APPLY_AFTER_SWAP; NOREPLACE becomes
//! `linkat` + `unlinkat`.
//!
//! Invariants: `T` always names either the prior node or the new one (never missing,
//! never unlink-then-create); the prior node is never deleted, only renamed, so its
//! inode — bytes, mode, owner, times, xattrs, ACLs, capabilities — survives intact.
//!
//! [`undo`] does not trust a progress log: it finds the prior node by inode among
//! `T`, `S`, `B` and moves it back with the same atomic renames, then disposes of the
//! new node (unlinks a staged symlink, or returns a restored backup to its name).
//! Every step is idempotent, so a crash inside undo is repaired by running it again.

use crate::error::{Error, ErrorId, Result};
use crate::failpoints::{self as fp, hit};
use crate::node::{open_noatime, read_link, sha256_file, Node, NodeKind};
use crate::plan::ActionKind;
use crate::state::ActionRecord;
use rustix::fs::{linkat, renameat, renameat_with, symlinkat, unlinkat, AtFlags, RenameFlags};
use rustix::io::Errno;
use std::io;
use std::os::fd::OwnedFd;

fn swap_err(a: &ActionRecord, what: &str, e: impl Into<io::Error>) -> Error {
    Error::io(
        ErrorId::AtomicSwap,
        format!("{} ({what})", a.target),
        e.into(),
    )
}

fn restore_err(a: &ActionRecord, what: &str, e: impl Into<io::Error>) -> Error {
    Error::io(
        ErrorId::RestoreFailed,
        format!("{} ({what})", a.target),
        e.into(),
    )
}

/// How renames are done. Filesystems without `RENAME_EXCHANGE`/`RENAME_NOREPLACE`
/// answer `EINVAL`; the `linkat` fallbacks (A1) then take over. Tests force the
/// fallbacks with `rename_flags: false` (instance-scoped, never global).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mechanics {
    pub(crate) rename_flags: bool,
}

impl Default for Mechanics {
    fn default() -> Self {
        Mechanics { rename_flags: true }
    }
}

impl Mechanics {
    /// `renameat2(a, b, EXCHANGE)`; `EINVAL` where unsupported (or forced off).
    fn exchange(self, dir: &OwnedFd, a: &str, b: &str) -> Result<(), Errno> {
        if !self.rename_flags {
            return Err(Errno::INVAL);
        }
        renameat_with(dir, a, dir, b, RenameFlags::EXCHANGE)
    }

    /// `renameat2(from, to, NOREPLACE)`, or `linkat` + `unlinkat` where the
    /// filesystem lacks the flag. Either way `to` is never replaced. The fallback is
    /// idempotent: a crash between its two steps leaves both names on one inode, and
    /// running it again finishes.
    fn rename_noreplace(self, dir: &OwnedFd, from: &str, to: &str) -> io::Result<()> {
        if self.rename_flags {
            match renameat_with(dir, from, dir, to, RenameFlags::NOREPLACE) {
                Err(Errno::INVAL) => {}
                r => return Ok(r?),
            }
        }
        link_same(dir, from, to)?;
        Ok(unlinkat(dir, from, AtFlags::empty())?)
    }
}

/// `linkat(from, to)`, treating an existing `to` that already is `from`'s inode as done.
fn link_same(dir: &OwnedFd, from: &str, to: &str) -> io::Result<()> {
    match linkat(dir, from, dir, to, AtFlags::empty()) {
        Err(Errno::EXIST) => {
            let (a, b) = (
                Node::observe(dir, from, false)?,
                Node::observe(dir, to, false)?,
            );
            if a.same_inode(&b) {
                Ok(())
            } else {
                Err(Errno::EXIST.into())
            }
        }
        r => Ok(r?),
    }
}

fn unlink_if_present(dir: &OwnedFd, name: &str) -> io::Result<()> {
    match unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Moves action `a` forward: afterwards `T` is the new node and the prior node is at
/// `B`. Call only with the action's journal durable.
pub(crate) fn apply(dir: &OwnedFd, a: &ActionRecord, m: Mechanics) -> Result<()> {
    if a.noop {
        return Ok(());
    }
    let (t, s) = (a.target.file_name(), a.stage.as_str());
    match a.kind {
        ActionKind::Link => {
            let dest = a.new_link.as_deref().unwrap_or_default();
            symlinkat(dest, dir, s).map_err(|e| swap_err(a, "creating staged symlink", e))?;
            hit(fp::APPLY_AFTER_STAGE).map_err(|e| swap_err(a, "staged", e))?;
        }
        ActionKind::Restore => {
            let at_stage =
                Node::observe(dir, s, false).map_err(|e| swap_err(a, "inspecting backup", e))?;
            if !a.new_node.as_ref().is_some_and(|n| n.same_inode(&at_stage)) {
                return Err(Error::new(
                    ErrorId::BackupMissing,
                    format!("{}: backup {s} changed or vanished", a.target),
                ));
            }
        }
    }
    let Some(b) = a.backup.as_deref() else {
        m.rename_noreplace(dir, s, t)
            .map_err(|e| swap_err(a, "installing over absent target", e))?;
        return hit(fp::APPLY_AFTER_SWAP).map_err(|e| swap_err(a, "swapped", e));
    };
    match m.exchange(dir, s, t) {
        Ok(()) => {
            hit(fp::APPLY_AFTER_SWAP).map_err(|e| swap_err(a, "swapped", e))?;
            let displaced = Node::observe(dir, s, false)
                .map_err(|e| swap_err(a, "inspecting displaced node", e))?;
            if !displaced.same_inode(&a.prior) {
                // Someone replaced the target after it was journaled: give their node
                // its name back at once and drop our staged link, then fail.
                m.exchange(dir, s, t).map_err(|e| {
                    swap_err(a, "exchanging back a concurrently replaced target", e)
                })?;
                if a.kind == ActionKind::Link {
                    unlink_if_present(dir, s)
                        .map_err(|e| swap_err(a, "removing staged link", e))?;
                }
                return Err(replaced(a));
            }
            m.rename_noreplace(dir, s, b)
                .map_err(|e| swap_err(a, "moving original to backup", e))?;
        }
        // The filesystem cannot exchange: hard-link the original to the backup name,
        // then rename the stage over the target (still never missing).
        Err(Errno::INVAL) => {
            link_same(dir, t, b).map_err(|e| swap_err(a, "linking original to backup", e))?;
            let linked =
                Node::observe(dir, b, false).map_err(|e| swap_err(a, "inspecting backup", e))?;
            if !linked.same_inode(&a.prior) {
                // Someone replaced the target after it was journaled.
                unlink_if_present(dir, b).map_err(|e| swap_err(a, "removing backup link", e))?;
                unlink_if_present(dir, s).map_err(|e| swap_err(a, "removing staged link", e))?;
                return Err(replaced(a));
            }
            // Without EXCHANGE the backup link must be durable before the rename that
            // makes it the only name of the original (one fsync per degraded action).
            rustix::fs::fsync(dir).map_err(|e| swap_err(a, "syncing backup link", e))?;
            hit(fp::APPLY_AFTER_BACKUP).map_err(|e| swap_err(a, "backed up", e))?;
            renameat(dir, s, dir, t).map_err(|e| swap_err(a, "renaming stage over target", e))?;
            return hit(fp::APPLY_AFTER_SWAP).map_err(|e| swap_err(a, "swapped", e));
        }
        Err(e) => return Err(swap_err(a, "exchanging stage and target", e)),
    }
    hit(fp::APPLY_AFTER_BACKUP).map_err(|e| swap_err(a, "backed up", e))
}

/// The error for a target another process replaced after it was journaled.
fn replaced(a: &ActionRecord) -> Error {
    Error::new(
        ErrorId::AtomicSwap,
        format!("{}: the target changed after it was journaled (another process replaced it); nothing was swapped", a.target),
    )
    .with_remediation("run apply again once the other package operation has finished")
}

/// Whether `n` is a node neither installed by `a` nor its original.
fn is_foreign(a: &ActionRecord, n: &Node) -> bool {
    n.kind != NodeKind::Absent && !is_new(a, n) && !n.same_inode(&a.prior)
}

/// Whether `n` is the node action `a` installs.
fn is_new(a: &ActionRecord, n: &Node) -> bool {
    match a.kind {
        ActionKind::Link => {
            n.kind == NodeKind::Symlink && n.link_dest == a.new_link && !n.same_inode(&a.prior)
        }
        ActionKind::Restore => a.new_node.as_ref().is_some_and(|x| x.same_inode(n)),
    }
}

/// Checks that the node at `name` still matches the prior snapshot's hash (S6).
pub(crate) fn verify_sidecar(dir: &OwnedFd, a: &ActionRecord, name: &str) -> Result<()> {
    let found = match a.prior.kind {
        NodeKind::File => open_noatime(dir, name)
            .and_then(|fd| sha256_file(&fd))
            .map(Some),
        NodeKind::Symlink => {
            read_link(dir, name).map(|d| Some(crate::node::sha256_bytes(d.as_bytes())))
        }
        _ => Ok(None),
    }
    .map_err(|e| restore_err(a, "hashing backup", e))?;
    if found != a.prior.sha256 {
        return Err(Error::new(
            ErrorId::RestoreFailed,
            format!(
                "{}: backup {name} does not match its sidecar (sha256 {} recorded, {} found); refusing to restore a tampered backup",
                a.target,
                a.prior.sha256.as_deref().unwrap_or("-"),
                found.as_deref().unwrap_or("-"),
            ),
        )
        .with_remediation(format!("inspect {name} beside {}; nothing was changed", a.target)));
    }
    Ok(())
}

/// Undoes action `a` from whatever state it is in; returns whether anything changed.
/// With `verify`, the prior node's hash is checked against its sidecar first.
pub(crate) fn undo(dir: &OwnedFd, a: &ActionRecord, verify: bool, m: Mechanics) -> Result<bool> {
    if a.noop {
        return Ok(false);
    }
    let (t, s) = (a.target.file_name(), a.stage.as_str());
    let obs =
        |name: &str| Node::observe(dir, name, false).map_err(|e| restore_err(a, "inspecting", e));
    let tn = obs(t)?;
    let mut changed = false;
    // Set when the target holds a node we did not install: we never overwrite it.
    let mut refused: Option<Error> = None;
    if a.prior.kind != NodeKind::Absent {
        if !tn.same_inode(&a.prior) {
            let from = match (obs(s)?, a.backup.as_deref()) {
                (sn, _) if sn.same_inode(&a.prior) => Some(s),
                (_, Some(b)) if obs(b)?.same_inode(&a.prior) => Some(b),
                _ => None,
            };
            match from {
                // The original is gone and the target is not ours: another process
                // replaced it (e.g. a package upgrade). Nothing of ours to undo there.
                None if !is_new(a, &tn) => {}
                // Our link is at the target, the original is gone, and our own stage
                // name holds a third node: someone replaced the target just before our
                // exchange, which moved their node to the stage. Give it back.
                None if is_foreign(a, &obs(s)?) => {
                    m.exchange(dir, s, t)
                        .or_else(|_| renameat(dir, s, dir, t))
                        .map_err(|e| {
                            restore_err(a, "returning a concurrently installed node", e)
                        })?;
                    changed = true;
                    hit(fp::UNDO_AFTER_SWAP).map_err(|e| restore_err(a, "swapped back", e))?;
                }
                None => {
                    return Err(Error::new(
                        ErrorId::RestoreFailed,
                        format!(
                            "{}: the original node is at none of the target, {s} or {:?}",
                            a.target, a.backup
                        ),
                    )
                    .with_remediation(format!(
                        "restore {} by hand from a copy; its sidecar is in the run record",
                        a.target
                    )))
                }
                Some(from) if tn.kind != NodeKind::Absent && !is_new(a, &tn) => {
                    refused = Some(
                        Error::new(
                            ErrorId::RestoreFailed,
                            format!("{}: the target was replaced by something Switchyard did not install; refusing to overwrite it (the original is kept at {from})", a.target),
                        )
                        .with_remediation(format!("move the unexpected node at {} aside, then run the same command again", a.target)),
                    );
                }
                Some(from) => {
                    if verify {
                        verify_sidecar(dir, a, from)?;
                    }
                    if tn.kind == NodeKind::Absent {
                        m.rename_noreplace(dir, from, t)
                            .map_err(|e| restore_err(a, "moving original back", e))?;
                    } else {
                        exchange_back(dir, a, from, m)?;
                    }
                    changed = true;
                    hit(fp::UNDO_AFTER_SWAP).map_err(|e| restore_err(a, "swapped back", e))?;
                }
            }
        }
    } else if is_new(a, &tn) {
        dispose(dir, a, t, m)?;
        changed = true;
        hit(fp::UNDO_AFTER_SWAP).map_err(|e| restore_err(a, "removed", e))?;
    }
    // (An absent-before target that now holds someone else's node is left alone: it
    // is theirs, and "absent" was only our side of the story.)
    let now = obs(t)?;
    let prior_home =
        refused.is_none() && (a.prior.kind == NodeKind::Absent || now.same_inode(&a.prior));
    // Clear whatever of ours is left at the other names.
    for name in [Some(s), a.backup.as_deref()].into_iter().flatten() {
        let n = obs(name)?;
        let is_backup = Some(name) == a.backup.as_deref();
        if is_backup
            && n.kind != NodeKind::Absent
            && n.same_inode(&now)
            && (prior_home || !n.same_inode(&a.prior))
        {
            // The hard-link fallback left a second name for the node now at the
            // target (the original, or a concurrent replacement): drop the extra name.
            unlink_if_present(dir, name).map_err(|e| restore_err(a, "removing backup link", e))?;
        } else if is_new(a, &n) && !(a.kind == ActionKind::Restore && name == s) {
            dispose(dir, a, name, m)?;
        } else {
            continue;
        }
        changed = true;
        hit(fp::UNDO_AFTER_DISPOSE).map_err(|e| restore_err(a, "disposed", e))?;
    }
    if let Some(e) = refused {
        return Err(e);
    }
    Ok(changed)
}

/// Puts the prior node (at `from`) back at the target, which holds the new node.
fn exchange_back(dir: &OwnedFd, a: &ActionRecord, from: &str, m: Mechanics) -> Result<()> {
    let t = a.target.file_name();
    match m.exchange(dir, from, t) {
        Ok(()) => Ok(()),
        Err(Errno::INVAL) => {
            if a.kind == ActionKind::Restore {
                // Keep the restored backup under its own name before replacing it.
                link_same(dir, t, a.stage.as_str())
                    .map_err(|e| restore_err(a, "keeping restored backup", e))?;
            }
            renameat(dir, from, dir, t).map_err(|e| restore_err(a, "renaming original back", e))
        }
        Err(e) => Err(restore_err(a, "exchanging original back", e)),
    }
}

/// Gets rid of the new node at `name`: a staged symlink is unlinked; a restored
/// backup goes back to its own name.
fn dispose(dir: &OwnedFd, a: &ActionRecord, name: &str, m: Mechanics) -> Result<()> {
    match a.kind {
        ActionKind::Link => {
            unlink_if_present(dir, name).map_err(|e| restore_err(a, "removing new link", e))
        }
        ActionKind::Restore => m
            .rename_noreplace(dir, name, a.stage.as_str())
            .map_err(|e| restore_err(a, "returning backup", e)),
    }
}
