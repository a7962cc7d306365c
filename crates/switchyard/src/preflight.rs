//! Preflight (S1, S3, S7, D4): inspect every action's target and source, then run a
//! list of checks that each may stop or warn.
//!
//! Contract: preflight never mutates. It yields one [`PreflightRow`] per action,
//! sorted by (path, action_id). A plan may commit only if no row is `stop`. New gates
//! (mount flags, rescue, ownership oracle, preservation) are more [`Check`]s added to
//! the list, not edits to the inspection. The [`Inspection`]s are reused by apply, so
//! each target and source is observed and hashed once per run.

use crate::error::ErrorId;
use crate::journal::{ActionRecord, RunRecord};
use crate::node::{sha256_file, Node, NodeKind};
use crate::path::{Root, SafePath};
use crate::plan::{Action, ActionKind, Plan};
use crate::policy::Policy;
use rustix::fs::OFlags;
use std::os::fd::OwnedFd;

/// `ok`, `warn` or `stop`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    Ok,
    Warn,
    Stop,
}

impl Verdict {
    /// Lower-case name, as in facts.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Warn => "warn",
            Verdict::Stop => "stop",
        }
    }
}

/// The outcome of preflight for one action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreflightRow {
    pub path: SafePath,
    pub action_id: uuid::Uuid,
    pub kind: ActionKind,
    pub current_kind: NodeKind,
    pub planned_kind: NodeKind,
    pub verdict: Verdict,
    /// The error class a stop maps to (`E_POLICY` unless more specific).
    pub error_id: Option<ErrorId>,
    pub notes: Vec<String>,
}

/// All rows of a preflight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreflightReport {
    pub rows: Vec<PreflightRow>,
}

impl PreflightReport {
    /// Rows that stop the plan.
    pub fn stops(&self) -> impl Iterator<Item = &PreflightRow> {
        self.rows.iter().filter(|r| r.verdict == Verdict::Stop)
    }

    /// Whether the plan may commit.
    pub fn ok(&self) -> bool {
        self.stops().next().is_none()
    }
}

/// What preflight learned about one action; apply journals it as-is.
#[derive(Debug)]
pub struct Inspection {
    pub action: Action,
    /// The target's directory, when it could be opened safely.
    pub dir: Option<OwnedFd>,
    /// Why the directory could not be opened.
    pub dir_error: Option<String>,
    /// The target now (hashed).
    pub current: Node,
    /// What the source resolves to (links).
    pub source: Option<std::io::Result<Node>>,
    /// What the target resolves to now (itself for a file).
    pub resolved: Option<Node>,
    /// The link text to install (links).
    pub new_link: Option<String>,
    /// The backup a restore puts back: its name and its sidecar's prior snapshot.
    pub restore_from: Option<(String, Node, Node)>,
    /// The target already is what the plan asks for.
    pub noop: bool,
    pub before_hash: Option<String>,
    pub after_hash: Option<String>,
    /// Why the target's filesystem or attributes forbid the swap (S2), if they do.
    pub immovable: Vec<String>,
}

impl Inspection {
    /// What the target becomes.
    pub fn planned_kind(&self) -> NodeKind {
        match (&self.action.kind, &self.restore_from) {
            (ActionKind::Link, _) => NodeKind::Symlink,
            (ActionKind::Restore, Some((_, node, _))) => node.kind,
            (ActionKind::Restore, None) => self.current.kind,
        }
    }

    /// The journal entry for this action, with `stage` and `backup` names chosen.
    pub(crate) fn record(&self, stage: String, backup: Option<String>) -> ActionRecord {
        ActionRecord {
            action_id: self.action.action_id,
            kind: self.action.kind,
            target: self.action.target.clone(),
            prior: self.current.clone(),
            new_link: self.new_link.clone(),
            new_node: self.restore_from.as_ref().map(|(_, n, _)| n.clone()),
            stage,
            backup,
            noop: self.noop,
            before_hash: self.before_hash.clone(),
            after_hash: self.after_hash.clone(),
        }
    }
}

/// What checks see besides the inspection.
pub struct CheckContext<'a> {
    pub root: &'a Root,
    pub policy: &'a Policy,
    /// Every target node of the plan as it is now: a source resolving to one of
    /// these would, after the swap, resolve through its own link (a loop).
    pub targets: Vec<Node>,
}

impl<'a> CheckContext<'a> {
    /// The context for checking `items`.
    pub fn new(root: &'a Root, policy: &'a Policy, items: &[Inspection]) -> CheckContext<'a> {
        let targets = items
            .iter()
            .map(|i| i.current.clone())
            .filter(|n| n.kind != NodeKind::Absent)
            .collect();
        CheckContext {
            root,
            policy,
            targets,
        }
    }
}

/// Collects one row's verdict and notes.
#[derive(Debug, Default)]
pub struct Findings {
    verdict: Option<Verdict>,
    error_id: Option<ErrorId>,
    notes: Vec<String>,
}

impl Findings {
    /// Stops the plan, as a policy violation.
    pub fn stop(&mut self, note: impl Into<String>) {
        self.stop_as(ErrorId::Policy, note);
    }

    /// Stops the plan with a more specific error class.
    pub fn stop_as(&mut self, id: ErrorId, note: impl Into<String>) {
        self.verdict = Some(Verdict::Stop);
        self.error_id.get_or_insert(id);
        self.notes.push(note.into());
    }

    /// Warns without stopping.
    pub fn warn(&mut self, note: impl Into<String>) {
        self.verdict = self.verdict.max(Some(Verdict::Warn));
        self.notes.push(note.into());
    }

    /// Adds an informational note.
    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }
}

/// One preflight gate.
pub trait Check: Send + Sync {
    /// Short name, for diagnostics.
    fn name(&self) -> &'static str;
    /// Examines one inspected action.
    fn check(&self, cx: &CheckContext<'_>, item: &Inspection, out: &mut Findings);
}

/// The built-in checks, in order.
pub fn builtin_checks() -> Vec<Box<dyn Check>> {
    vec![
        Box::new(Reachable),
        Box::new(TargetKind),
        Box::new(AllowedRoots),
        Box::new(Movable),
        Box::new(SourceUsable),
        Box::new(RestoreSource),
    ]
}

/// S1: the target's directory is a real directory inside the root.
struct Reachable;
impl Check for Reachable {
    fn name(&self) -> &'static str {
        "reachable"
    }
    fn check(&self, _: &CheckContext<'_>, i: &Inspection, out: &mut Findings) {
        if let Some(e) = &i.dir_error {
            out.stop(e.clone());
        }
    }
}

/// Targets must be a regular file, a symlink, or absent.
struct TargetKind;
impl Check for TargetKind {
    fn name(&self) -> &'static str {
        "target-kind"
    }
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
    fn name(&self) -> &'static str {
        "allowed-roots"
    }
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
    fn name(&self) -> &'static str {
        "movable"
    }
    fn check(&self, _: &CheckContext<'_>, i: &Inspection, out: &mut Findings) {
        for why in &i.immovable {
            out.stop(why.clone());
        }
    }
}

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

/// A2, S3: a link's source exists inside the root, is a regular file, executable if
/// the target is, and (strict policy) root-owned and not group/world-writable.
struct SourceUsable;
impl Check for SourceUsable {
    fn name(&self) -> &'static str {
        "source"
    }
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
        if cx.targets.iter().any(|t| t.same_inode(n)) {
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
    fn name(&self) -> &'static str {
        "restore-source"
    }
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

/// What `p` resolves to inside the root: kind, mode, owner and identity, plus the
/// SHA-256 of a regular file. Opens with `O_PATH` first, so FIFOs and devices are
/// never opened for reading (no blocking, no side effects).
pub fn resolve(root: &Root, p: &SafePath) -> std::io::Result<Node> {
    let st = rustix::fs::fstat(root.open_resolved(p, OFlags::PATH)?)?;
    let mut n = Node {
        kind: crate::node::kind_of(&st),
        mode: st.st_mode & 0o7777,
        uid: st.st_uid,
        gid: st.st_gid,
        dev: st.st_dev,
        ino: st.st_ino,
        ..Node::absent()
    };
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

fn resolved_hash(root: &Root, p: &SafePath) -> Option<String> {
    resolve(root, p).ok().and_then(|n| n.sha256)
}

/// The newest live backup of `target` made by a link action, with its sidecar.
fn find_backup(
    dir: &OwnedFd,
    target: &SafePath,
    records: &[RunRecord],
) -> Result<Option<(String, Node, Node)>, String> {
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
        let n = Node::observe(dir, b, true)
            .map_err(|e| format!("backup {b} cannot be inspected: {e}"))?;
        if n.same_inode(&a.prior) {
            return Ok(Some((b.to_owned(), n, a.prior.clone())));
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

/// Observes every action of `plan` (see [`Inspection`]).
pub fn inspect(root: &Root, plan: &Plan, records: &[RunRecord]) -> Vec<Inspection> {
    plan.actions
        .iter()
        .map(|a| inspect_one(root, a, records))
        .collect()
}

fn inspect_one(root: &Root, action: &Action, records: &[RunRecord]) -> Inspection {
    let mut i = Inspection {
        action: action.clone(),
        dir: None,
        dir_error: None,
        current: Node::absent(),
        source: None,
        new_link: None,
        restore_from: None,
        noop: false,
        before_hash: None,
        after_hash: None,
        immovable: Vec::new(),
        resolved: None,
    };
    let t = &action.target;
    match root.open_parent(t) {
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
            ))
        }
    }
    if let Some(dir) = &i.dir {
        match Node::observe(dir, t.file_name(), true) {
            Ok(n) => i.current = n,
            Err(e) => i.dir_error = Some(format!("target cannot be inspected: {e}")),
        }
    }
    if let Some(dir) = &i.dir {
        i.immovable = immovable(dir, t.file_name(), &i.current);
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
                match find_backup(dir, t, records) {
                    Ok(found) => i.restore_from = found,
                    Err(why) => i.dir_error = Some(why),
                }
                if let Some((name, node, _)) = &i.restore_from {
                    i.after_hash = match node.kind {
                        NodeKind::File => node.sha256.clone(),
                        _ => SafePath::new(&format!("{}/{name}", t.parent()))
                            .ok()
                            .and_then(|p| resolved_hash(root, &p)),
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

/// Runs `checks` over `items`; rows come out sorted by (path, action_id).
pub fn evaluate(
    cx: &CheckContext<'_>,
    checks: &[Box<dyn Check>],
    items: &[Inspection],
) -> PreflightReport {
    let mut rows: Vec<PreflightRow> = items
        .iter()
        .map(|i| {
            let mut f = Findings::default();
            for c in checks {
                c.check(cx, i, &mut f);
            }
            if i.noop {
                f.note("already in effect; nothing to do");
            }
            PreflightRow {
                path: i.action.target.clone(),
                action_id: i.action.action_id,
                kind: i.action.kind,
                current_kind: i.current.kind,
                planned_kind: i.planned_kind(),
                verdict: f.verdict.unwrap_or(Verdict::Ok),
                error_id: f.error_id,
                notes: f.notes,
            }
        })
        .collect();
    rows.sort_by(|a, b| (&a.path, a.action_id).cmp(&(&b.path, b.action_id)));
    PreflightReport { rows }
}
