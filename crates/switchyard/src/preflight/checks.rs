//! The built-in preflight gates. Each reads an [`Inspection`] (and the plan-wide
//! [`CheckContext`]) and records stops, warnings and notes; none touches the disk.

use super::{Check, CheckContext, Findings, Inspection};
use crate::error::ErrorId;
use crate::node::NodeKind;
use crate::plan::ActionKind;

/// The built-in checks, in order.
pub fn builtin_checks() -> Vec<Box<dyn Check>> {
    vec![
        Box::new(Reachable),
        Box::new(TargetKind),
        Box::new(AllowedRoots),
        Box::new(Movable),
        Box::new(SourceUsable),
        Box::new(RestoreSource),
        Box::new(Alternatives),
        Box::new(Packaged),
    ]
}

/// S4, M2, M3: the package database's view of a target.
struct Packaged;
impl Check for Packaged {
    fn check(&self, cx: &CheckContext<'_>, i: &Inspection, out: &mut Findings) {
        if i.noop {
            return;
        }
        if let Some(note) = unsettled_note(&cx.unsettled) {
            out.stop(note);
        }
        match (&i.owner, cx.package_db, cx.policy.strict_ownership) {
            (Some(o), _, _) => out.note(format!("owned by {} {} ({})", o.package, o.version, o.db_path)),
            (None, false, true) => out.stop_as(
                ErrorId::Ownership,
                "the root has no package database (var/lib/dpkg/status), and strict_ownership requires every target to be owned by a package (S4)",
            ),
            (None, true, true) => out.stop_as(
                ErrorId::Ownership,
                "no package owns this target, and strict_ownership requires one (S4)",
            ),
            (None, _, false) => {}
        }
        if let (Some(o), false) = (&i.owner, i.other_spellings.is_empty()) {
            out.stop(format!(
                "dpkg lists this file under more than one path ({} by {}, {}); Switchyard can divert only one of them, and dpkg would overwrite the swap through another (M2): remove the stale listing (reinstall the packages) first",
                o.db_path,
                o.package,
                i.other_spellings
                    .iter()
                    .map(|(p, pkg)| format!("{p} by {pkg}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if let Some((holder, to)) = &i.foreign_diversion {
            out.stop(format!(
                "dpkg already diverts this path to {to} ({}); Switchyard cannot divert it again (M2): remove that diversion with dpkg-divert first",
                holder.as_deref().map_or("a local diversion".to_owned(), |h| format!("held by {h}"))
            ));
        }
    }
}

/// M3: why nothing package-owned may change while dpkg left packages `unsettled`
/// (`(package, state)`); `None` when it left none.
pub(crate) fn unsettled_note(unsettled: &[(String, String)]) -> Option<String> {
    let (p, state) = unsettled.first()?;
    Some(format!(
        "dpkg reports package {p} {state}{}: finish or repair it first (`dpkg --configure -a`, or `apt-get -f install`), then run this again",
        match unsettled.len() {
            1 => String::new(),
            n => format!(" (and {} more)", n - 1),
        }
    ))
}

/// S1: the target's directory is a real directory inside the root.
struct Reachable;
impl Check for Reachable {
    fn check(&self, _: &CheckContext<'_>, i: &Inspection, out: &mut Findings) {
        if let Some(e) = &i.dir_error {
            out.stop(e.clone());
        }
    }
}

/// Targets must be a regular file, a symlink, or absent.
struct TargetKind;
impl Check for TargetKind {
    fn check(&self, _: &CheckContext<'_>, i: &Inspection, out: &mut Findings) {
        if matches!(i.current.kind, NodeKind::Dir | NodeKind::Other) {
            out.stop(format!(
                "target is a {}; only files and symlinks can be swapped",
                i.current.kind.as_str()
            ));
        }
    }
}

/// S7: default-deny allow_roots; forbid_paths wins.
struct AllowedRoots;
impl Check for AllowedRoots {
    fn check(&self, cx: &CheckContext<'_>, i: &Inspection, out: &mut Findings) {
        if let Some(why) = cx.policy.deny_reason(&i.action.target) {
            out.stop(why);
        }
    }
}

/// S2: the target's mount is writable and exec-capable, and neither it nor its
/// directory is immutable or append-only.
struct Movable;
impl Check for Movable {
    fn check(&self, _: &CheckContext<'_>, i: &Inspection, out: &mut Findings) {
        for why in &i.immovable {
            out.stop(why.clone());
        }
        if i.mounted && !i.noop {
            out.stop_as(
                ErrorId::Exdev,
                "something is mounted on the target (a bind mount): no rename can replace it atomically (F1); unmount it first",
            );
        }
    }
}

/// A2, S3: a link's source exists inside the root, is a regular file, executable if
/// the target is, and (strict policy) root-owned and not group/world-writable.
struct SourceUsable;
impl Check for SourceUsable {
    fn check(&self, cx: &CheckContext<'_>, i: &Inspection, out: &mut Findings) {
        let (Some(src), Some(res)) = (&i.action.source, &i.source) else {
            return;
        };
        let n = match res {
            Ok(n) => n,
            Err(e) => return out.stop(format!("source {src} is not usable: {e}")),
        };
        if n.kind != NodeKind::File {
            return out.stop(format!(
                "source {src} resolves to a {}, not a regular file",
                n.kind.as_str()
            ));
        }
        // Executable as the target resolves now, through symlinks too (A2).
        let target_exec = i
            .resolved
            .as_ref()
            .is_some_and(|r| r.kind == NodeKind::File && r.mode & 0o111 != 0);
        if let Some(t) = &i.source_through {
            out.stop(format!("source {src} resolves through {t}, a target of this plan; after the swap the link would loop"));
        } else if n.kind != NodeKind::Absent && cx.targets.contains(&(n.kind, n.dev, n.ino)) {
            out.stop(format!("source {src} resolves to a target of this plan; the link would loop or point at a replaced file"));
        }
        if target_exec && n.mode & 0o111 == 0 {
            out.stop(format!(
                "target is executable but source {src} is not (mode {:o})",
                n.mode
            ));
        }
        if cx.policy.strict_source_ownership {
            if n.uid != 0 {
                out.stop_as(
                    ErrorId::Ownership,
                    format!("source {src} is owned by uid {}, not root", n.uid),
                );
            }
            if n.mode & 0o022 != 0 {
                out.stop_as(
                    ErrorId::Ownership,
                    format!("source {src} is group/world-writable (mode {:o})", n.mode),
                );
            }
        }
    }
}

/// A restore needs a backup to put back.
struct RestoreSource;
impl Check for RestoreSource {
    fn check(&self, cx: &CheckContext<'_>, i: &Inspection, out: &mut Findings) {
        if i.action.kind != ActionKind::Restore || i.noop {
            return;
        }
        match &i.restore_from {
            None => out.stop_as(
                ErrorId::BackupMissing,
                "no backup of this target to restore",
            ),
            Some((name, node, sidecar)) => {
                if cx.policy.require_sidecar_integrity && node.sha256 != sidecar.sha256 {
                    out.stop_as(
                        ErrorId::RestoreFailed,
                        format!("backup {name} does not match its sidecar hash"),
                    );
                } else {
                    out.note(format!("restores backup {name}"));
                }
            }
        }
    }
}

/// M6: a target whose symlink chain passes through `etc/alternatives` is managed by
/// update-alternatives, which rewrites it on every package change of that
/// alternative: it is changed through `update-alternatives --set`, unless policy
/// `allow_alternatives_takeover` lets Switchyard take it over. An action already in
/// effect changes nothing and is let through.
struct Alternatives;
impl Check for Alternatives {
    fn check(&self, cx: &CheckContext<'_>, i: &Inspection, out: &mut Findings) {
        let Some(alt) = &i.alternatives else {
            return;
        };
        if i.noop {
            return;
        }
        let t = &i.action.target;
        if cx.policy.allow_alternatives_takeover {
            out.note(format!(
                "{t} is managed by update-alternatives ({alt}); taken over \
                 (allow_alternatives_takeover)"
            ));
        } else {
            let name = alt.rsplit('/').next().unwrap_or(alt);
            out.stop(format!(
                "{t} is managed by update-alternatives ({alt}); use \
                 `update-alternatives --set {name} <path>` or allow takeover with policy \
                 `allow_alternatives_takeover`"
            ));
        }
    }
}
