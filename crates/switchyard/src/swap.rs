//! Swap atoms (A1, A2, R2, S8): move one action forward, or undo it from any state.
//!
//! Every action involves three names: the target `T` in its directory, and two names
//! in that directory's backup store (`store.rs`, a root-only `.switchyard`
//! directory): the stage `S` (where the new node waits: a fresh symlink, or the backup
//! a restore puts back) and the backup `B` (where the prior node goes). Forward:
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
//! inode — bytes, mode, owner, times, xattrs, ACLs, capabilities — survives intact;
//! the exchange moves it from `T` straight into the store, so no unprivileged user can
//! reach it once it stops being the target (S8).
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

/// A name in a directory: the target in its directory, or an entry of the store.
#[derive(Clone, Copy)]
struct At<'a> {
    dir: &'a OwnedFd,
    name: &'a str,
}

impl At<'_> {
    fn observe(self) -> io::Result<Node> {
        Node::observe(self.dir, self.name, false)
    }
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
    fn exchange(self, a: At<'_>, b: At<'_>) -> Result<(), Errno> {
        if !self.rename_flags {
            return Err(Errno::INVAL);
        }
        renameat_with(a.dir, a.name, b.dir, b.name, RenameFlags::EXCHANGE)
    }

    /// `renameat2(from, to, NOREPLACE)`, or `linkat` + `unlinkat` where the
    /// filesystem lacks the flag. Either way `to` is never replaced. The fallback is
    /// idempotent: a crash between its two steps leaves both names on one inode, and
    /// running it again finishes.
    /// Returns whether the `linkat` fallback ran.
    fn rename_noreplace(self, from: At<'_>, to: At<'_>) -> io::Result<bool> {
        if self.rename_flags {
            match renameat_with(from.dir, from.name, to.dir, to.name, RenameFlags::NOREPLACE) {
                Err(Errno::INVAL) => {}
                r => return Ok(r.map(|()| false)?),
            }
        }
        link_same(from, to)?;
        unlinkat(from.dir, from.name, AtFlags::empty())?;
        Ok(true)
    }
}

/// `linkat(from, to)`, treating an existing `to` that already is `from`'s inode as done.
fn link_same(from: At<'_>, to: At<'_>) -> io::Result<()> {
    match linkat(from.dir, from.name, to.dir, to.name, AtFlags::empty()) {
        Err(Errno::EXIST) => {
            if from.observe()?.same_inode(&to.observe()?) {
                Ok(())
            } else {
                Err(Errno::EXIST.into())
            }
        }
        r => Ok(r?),
    }
}

fn unlink_if_present(at: At<'_>) -> io::Result<()> {
    match unlinkat(at.dir, at.name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Moves action `a` forward: afterwards `T` (in `dir`) is the new node and the prior
/// node is at `B` in `store`, the store of `dir`. Call only with the action's journal
/// durable. Returns whether the filesystem made it take the `linkat` fallback (A1).
pub(crate) fn apply(
    dir: &OwnedFd,
    store: &OwnedFd,
    a: &ActionRecord,
    m: Mechanics,
) -> Result<bool> {
    if a.noop {
        return Ok(false);
    }
    let t = At {
        dir,
        name: a.target.file_name(),
    };
    let s = At {
        dir: store,
        name: &a.stage,
    };
    match a.kind {
        ActionKind::Link => {
            let dest = a.new_link.as_deref().unwrap_or_default();
            symlinkat(dest, store, s.name)
                .map_err(|e| swap_err(a, "creating staged symlink", e))?;
            hit(fp::APPLY_AFTER_STAGE).map_err(|e| swap_err(a, "staged", e))?;
        }
        ActionKind::Restore => {
            let at_stage = s
                .observe()
                .map_err(|e| swap_err(a, "inspecting backup", e))?;
            if !a.new_node.as_ref().is_some_and(|n| n.same_inode(&at_stage)) {
                return Err(Error::new(
                    ErrorId::BackupMissing,
                    format!("{}: backup {} changed or vanished", a.target, s.name),
                ));
            }
        }
    }
    let Some(b) = a.backup.as_deref() else {
        let fallback = m
            .rename_noreplace(s, t)
            .map_err(|e| swap_err(a, "installing over absent target", e))?;
        hit(fp::APPLY_AFTER_SWAP).map_err(|e| swap_err(a, "swapped", e))?;
        return Ok(fallback);
    };
    let b = At {
        dir: store,
        name: b,
    };
    let fallback = match m.exchange(s, t) {
        Ok(()) => {
            hit(fp::APPLY_AFTER_SWAP).map_err(|e| swap_err(a, "swapped", e))?;
            let displaced = s
                .observe()
                .map_err(|e| swap_err(a, "inspecting displaced node", e))?;
            if !displaced.same_inode(&a.prior) {
                // Someone replaced the target after it was journaled: give their node
                // its name back at once and drop our staged link, then fail.
                m.exchange(s, t).map_err(|e| {
                    swap_err(a, "exchanging back a concurrently replaced target", e)
                })?;
                if a.kind == ActionKind::Link {
                    unlink_if_present(s).map_err(|e| swap_err(a, "removing staged link", e))?;
                }
                return Err(replaced(a));
            }
            m.rename_noreplace(s, b)
                .map_err(|e| swap_err(a, "moving original to backup", e))?
        }
        // The filesystem cannot exchange: hard-link the original to the backup name,
        // then rename the stage over the target (still never missing).
        Err(Errno::INVAL) => {
            link_same(t, b).map_err(|e| swap_err(a, "linking original to backup", e))?;
            let linked = b
                .observe()
                .map_err(|e| swap_err(a, "inspecting backup", e))?;
            if !linked.same_inode(&a.prior) {
                // Someone replaced the target after it was journaled.
                unlink_if_present(b).map_err(|e| swap_err(a, "removing backup link", e))?;
                unlink_if_present(s).map_err(|e| swap_err(a, "removing staged link", e))?;
                return Err(replaced(a));
            }
            // Without EXCHANGE the backup link must be durable before the rename that
            // makes it the only name of the original (one fsync per degraded action).
            rustix::fs::fsync(store).map_err(|e| swap_err(a, "syncing backup link", e))?;
            hit(fp::APPLY_AFTER_BACKUP).map_err(|e| swap_err(a, "backed up", e))?;
            renameat(store, s.name, dir, t.name)
                .map_err(|e| swap_err(a, "renaming stage over target", e))?;
            hit(fp::APPLY_AFTER_SWAP).map_err(|e| swap_err(a, "swapped", e))?;
            return Ok(true);
        }
        Err(e) => return Err(swap_err(a, "exchanging stage and target", e)),
    };
    hit(fp::APPLY_AFTER_BACKUP).map_err(|e| swap_err(a, "backed up", e))?;
    Ok(fallback)
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
pub(crate) fn is_new(a: &ActionRecord, n: &Node) -> bool {
    match a.kind {
        ActionKind::Link => {
            n.kind == NodeKind::Symlink && n.link_dest == a.new_link && !n.same_inode(&a.prior)
        }
        ActionKind::Restore => a.new_node.as_ref().is_some_and(|x| x.same_inode(n)),
    }
}

/// Checks that the store entry `name` still matches the prior snapshot's hash (S6).
pub(crate) fn verify_sidecar(store: &OwnedFd, a: &ActionRecord, name: &str) -> Result<()> {
    let found = match a.prior.kind {
        NodeKind::File => open_noatime(store, name)
            .and_then(|fd| sha256_file(&fd))
            .map(Some),
        NodeKind::Symlink => {
            read_link(store, name).map(|d| Some(crate::node::sha256_bytes(d.as_bytes())))
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
        .with_remediation(format!("inspect {name} in the backup store beside {}; nothing was changed", a.target)));
    }
    Ok(())
}

/// Undoes action `a` from whatever state it is in; returns whether anything changed.
/// `store` is the store of `dir` when it exists (`None`: every stage and backup name
/// is absent). With `verify`, the prior node's hash is checked against its sidecar
/// first.
pub(crate) fn undo(
    dir: &OwnedFd,
    store: Option<&OwnedFd>,
    a: &ActionRecord,
    verify: bool,
    m: Mechanics,
) -> Result<bool> {
    if a.noop {
        return Ok(false);
    }
    let t = At {
        dir,
        name: a.target.file_name(),
    };
    let obs = |at: At<'_>| at.observe().map_err(|e| restore_err(a, "inspecting", e));
    // A store name: observed as absent when there is no store.
    let in_store = |name: &str| -> Result<Option<Node>> {
        store
            .map(|st| {
                At { dir: st, name }
                    .observe()
                    .map_err(|e| restore_err(a, "inspecting", e))
            })
            .transpose()
    };
    let sn = in_store(&a.stage)?;
    let bn = match a.backup.as_deref() {
        Some(b) => in_store(b)?,
        None => None,
    };
    let tn = obs(t)?;
    // Our stage name holding a node that is neither ours nor the original.
    let foreign_stage = match (store, &sn) {
        (Some(st), Some(n)) if is_foreign(a, n) => Some(At {
            dir: st,
            name: &a.stage,
        }),
        _ => None,
    };
    let mut changed = false;
    // Set when the target holds a node we did not install: we never overwrite it.
    let mut refused: Option<Error> = None;
    if a.prior.kind != NodeKind::Absent {
        if !tn.same_inode(&a.prior) {
            let from = match (&sn, &bn, store) {
                (Some(n), _, Some(st)) if n.same_inode(&a.prior) => Some(At {
                    dir: st,
                    name: &a.stage,
                }),
                (_, Some(n), Some(st)) if n.same_inode(&a.prior) => Some(At {
                    dir: st,
                    name: a.backup.as_deref().unwrap_or_default(),
                }),
                _ => None,
            };
            match from {
                // The original is gone and the target is not ours: another process
                // replaced it (e.g. a package upgrade). Nothing of ours to undo there.
                None if !is_new(a, &tn) => {}
                // Our link is at the target, the original is gone, and our own stage
                // name holds a third node: someone replaced the target just before our
                // exchange, which moved their node to the stage. Give it back.
                None => {
                    let Some(s) = foreign_stage else {
                        return Err(Error::new(
                            ErrorId::RestoreFailed,
                            format!(
                                "{}: the original node is at none of the target, {} or {:?} in the backup store",
                                a.target, a.stage, a.backup
                            ),
                        )
                        .with_remediation(format!(
                            "restore {} by hand from a copy; its sidecar is in the run record",
                            a.target
                        )));
                    };
                    m.exchange(s, t)
                        .or_else(|_| renameat(s.dir, s.name, t.dir, t.name))
                        .map_err(|e| {
                            restore_err(a, "returning a concurrently installed node", e)
                        })?;
                    changed = true;
                    hit(fp::UNDO_AFTER_SWAP).map_err(|e| restore_err(a, "swapped back", e))?;
                }
                Some(from) if tn.kind != NodeKind::Absent && !is_new(a, &tn) => {
                    refused = Some(
                        Error::new(
                            ErrorId::RestoreFailed,
                            format!("{}: the target was replaced by something Switchyard did not install; refusing to overwrite it (the original is kept in the backup store as {})", a.target, from.name),
                        )
                        .with_remediation(format!("move the unexpected node at {} aside, then run the same command again", a.target)),
                    );
                }
                Some(from) => {
                    if verify {
                        verify_sidecar(from.dir, a, from.name)?;
                    }
                    if tn.kind == NodeKind::Absent {
                        m.rename_noreplace(from, t)
                            .map_err(|e| restore_err(a, "moving original back", e))?;
                    } else {
                        exchange_back(t, a, from, m)?;
                    }
                    changed = true;
                    hit(fp::UNDO_AFTER_SWAP).map_err(|e| restore_err(a, "swapped back", e))?;
                }
            }
        }
    } else if is_new(a, &tn) {
        dispose(dir, t, a, m)?;
        changed = true;
        hit(fp::UNDO_AFTER_SWAP).map_err(|e| restore_err(a, "removed", e))?;
    }
    // (An absent-before target that now holds someone else's node is left alone: it
    // is theirs, and "absent" was only our side of the story.)
    let Some(store) = store else {
        return refused.map_or(Ok(changed), Err);
    };
    let now = obs(t)?;
    let prior_home =
        refused.is_none() && (a.prior.kind == NodeKind::Absent || now.same_inode(&a.prior));
    // Clear whatever of ours is left at the other names.
    for name in [Some(a.stage.as_str()), a.backup.as_deref()]
        .into_iter()
        .flatten()
    {
        let at = At { dir: store, name };
        let n = obs(at)?;
        let is_backup = Some(name) == a.backup.as_deref();
        if is_backup
            && n.kind != NodeKind::Absent
            && n.same_inode(&now)
            && (prior_home || !n.same_inode(&a.prior))
        {
            // The hard-link fallback left a second name for the node now at the
            // target (the original, or a concurrent replacement): drop the extra name.
            unlink_if_present(at).map_err(|e| restore_err(a, "removing backup link", e))?;
        } else if is_new(a, &n) && !(a.kind == ActionKind::Restore && name == a.stage) {
            dispose(dir, at, a, m)?;
        } else {
            continue;
        }
        changed = true;
        hit(fp::UNDO_AFTER_DISPOSE).map_err(|e| restore_err(a, "disposed", e))?;
    }
    refused.map_or(Ok(changed), Err)
}

/// Puts the prior node (at `from`, in the store) back at the target `t`, which holds
/// the new node.
fn exchange_back(t: At<'_>, a: &ActionRecord, from: At<'_>, m: Mechanics) -> Result<()> {
    match m.exchange(from, t) {
        Ok(()) => Ok(()),
        Err(Errno::INVAL) => {
            if a.kind == ActionKind::Restore {
                // Keep the restored backup under its own name before replacing it.
                let stage = At {
                    dir: from.dir,
                    name: &a.stage,
                };
                link_same(t, stage).map_err(|e| restore_err(a, "keeping restored backup", e))?;
            }
            renameat(from.dir, from.name, t.dir, t.name)
                .map_err(|e| restore_err(a, "renaming original back", e))
        }
        Err(e) => Err(restore_err(a, "exchanging original back", e)),
    }
}

/// Gets rid of the new node at `at`: a staged symlink is unlinked; a restored backup
/// goes back to its own name in the store of `dir` (created again if it went when
/// the restore emptied it).
fn dispose(dir: &OwnedFd, at: At<'_>, a: &ActionRecord, m: Mechanics) -> Result<()> {
    match a.kind {
        ActionKind::Link => {
            unlink_if_present(at).map_err(|e| restore_err(a, "removing new link", e))
        }
        ActionKind::Restore => {
            let store = crate::store::open(dir, true)
                .map_err(|e| restore_err(a, "opening the backup store", e))?
                .ok_or_else(|| restore_err(a, "opening the backup store", Errno::NOENT))?;
            m.rename_noreplace(
                at,
                At {
                    dir: &store,
                    name: &a.stage,
                },
            )
            .map(|_| ())
            .map_err(|e| restore_err(a, "returning backup", e))
        }
    }
}
