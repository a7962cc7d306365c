//! The manifest (`docs/GUARANTEES.md`, "The manifest"): TOML text in; a policy, a plan
//! and smoke checks out. The CLI reads manifests through this module only, so an
//! embedder (a package-manager hook, an installer) gets the same plan, and the same
//! messages, from the same text.
//!
//! Contract: every rejection is an `E_USAGE` error whose message is one line
//! `FILE[:LINE:COL]: FIELD: what is wrong`, except a `[[link_dir]]` directory that is
//! reached through a symlink, which is a policy violation (S1, `E_POLICY`). Reading a
//! manifest never changes anything: `[[link_dir]]` only lists directories, through
//! the engine's confined, symlink-refusing directory handles. The plan rule (one
//! action per target, no self-link, no target is a source) is [`plan::conflict`]'s;
//! this module only names the entries it points at.
#![deny(missing_docs)]

use crate::adapters::smoke::CommandCheck;
use crate::error::{Error, ErrorId, Result};
use crate::handle::Switchyard;
use crate::path::{PathError, Root, SafePath};
use crate::plan::{self, Conflict, Plan, PlanInput, RESERVED_PREFIX};
use crate::policy::{Policy, Preset};
use serde::Deserialize;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;
use toml::Spanned;

/// Largest manifest accepted (a manifest is a few lines; this catches mistakes).
const MAX_MANIFEST_BYTES: u64 = 4 << 20;
/// Default timeout of a smoke check.
const DEFAULT_CHECK_TIMEOUT_MS: u64 = 10_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    preset: Option<RawPreset>,
    policy: Option<RawPolicy>,
    #[serde(default)]
    link: Vec<RawLink>,
    #[serde(default)]
    link_dir: Vec<RawLinkDir>,
    #[serde(default)]
    restore: Vec<RawRestore>,
    smoke: Option<RawSmoke>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum RawPreset {
    Production,
    Dev,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    allow_roots: Option<Vec<Spanned<String>>>,
    forbid_paths: Option<Vec<Spanned<String>>>,
    require_sidecar_integrity: Option<bool>,
    require_smoke_runner: Option<bool>,
    disable_auto_rollback: Option<bool>,
    allow_alternatives_takeover: Option<bool>,
    strict_source_ownership: Option<bool>,
    strict_ownership: Option<bool>,
    lock_timeout_ms: Option<u64>,
    max_plan_actions: Option<Spanned<usize>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLink {
    target: Spanned<String>,
    source: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLinkDir {
    targets: Spanned<String>,
    sources: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRestore {
    target: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSmoke {
    generic: Option<Spanned<bool>>,
    #[serde(default)]
    check: Vec<RawCheck>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCheck {
    argv: Spanned<Vec<Spanned<String>>>,
    expect_exit: Option<i32>,
    expect_stdout: Option<String>,
    timeout_ms: Option<Spanned<u64>>,
}

/// A `[[link_dir]]` entry, expanded against the root by [`Manifest::plan_input`].
#[derive(Debug, Clone)]
struct LinkDir {
    index: usize,
    targets: SafePath,
    sources: SafePath,
    at: Range<usize>,
}

/// Where a plan request came from, for messages.
#[derive(Debug, Clone)]
struct Origin {
    field: String,
    at: Range<usize>,
}

/// One plan request (`source` is `None` for a restore) and the entry that asked for it.
#[derive(Debug, Clone)]
struct Request {
    target: SafePath,
    source: Option<SafePath>,
    origin: Origin,
}

/// A parsed, validated manifest: its policy, smoke checks and plan requests. The
/// embedder's path is the CLI's:
///
/// ```no_run
/// use switchyard::{ApplyMode, CommandSmoke, FileLock, Manifest, Switchyard};
/// # fn main() -> Result<(), switchyard::Error> {
/// let m = Manifest::load("/etc/switchyard/uutils.toml".as_ref())?;
/// let sy = Switchyard::builder(m.policy().clone())
///     .root("/")
///     .with_lock_manager(FileLock::new())
///     .with_smoke_runner(CommandSmoke { checks: m.smoke_checks().to_vec() })
///     .build()?;
/// let plan = m.plan(&sy)?; // = sy.plan(&m.plan_input(&sy)?), messages naming the file
/// sy.apply(&plan, ApplyMode::Commit)?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Manifest {
    name: String,
    text: String,
    policy: Policy,
    /// `[[link]]` then `[[restore]]` entries, in file order.
    requests: Vec<Request>,
    link_dirs: Vec<LinkDir>,
    checks: Vec<CommandCheck>,
}

/// 1-based line and column (in characters) of byte offset `at` in `text`.
fn line_col(text: &str, at: usize) -> (usize, usize) {
    let at = at.min(text.len());
    let before = text.get(..at).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// Collapses a message to one line.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The one-line error `FILE[:LINE:COL][: FIELD]: MSG` of class `id` about manifest `file`.
fn error(
    id: ErrorId,
    file: &str,
    pos: Option<(usize, usize)>,
    field: &str,
    msg: impl AsRef<str>,
) -> Error {
    let mut s = String::from(file);
    if let Some((l, c)) = pos {
        s.push_str(&format!(":{l}:{c}"));
    }
    if !field.is_empty() {
        s.push_str(": ");
        s.push_str(field);
    }
    s.push_str(": ");
    s.push_str(&one_line(msg.as_ref()));
    Error::new(id, s)
}

/// The one-line `E_USAGE` error of the manifest `file`.
fn usage(file: &str, pos: Option<(usize, usize)>, field: &str, msg: impl AsRef<str>) -> Error {
    error(ErrorId::Usage, file, pos, field, msg)
}

fn path_error(e: &PathError) -> String {
    match e {
        PathError::Empty => "path is empty (it must name something below the root)".into(),
        other => other.to_string(),
    }
}

impl Manifest {
    /// Reads and validates the manifest at `path` (named as given in messages).
    ///
    /// # Errors
    ///
    /// `E_USAGE` when the file cannot be read, is not a regular file, is larger than
    /// 4 MiB, is not UTF-8, or fails [`Manifest::parse`].
    pub fn load(path: &Path) -> Result<Manifest> {
        let file = path.display().to_string();
        let md = std::fs::metadata(path)
            .map_err(|e| usage(&file, None, "", format!("cannot read manifest: {e}")))?;
        if md.is_dir() {
            return Err(usage(
                &file,
                None,
                "",
                "is a directory, not a manifest file",
            ));
        }
        if !md.is_file() {
            return Err(usage(
                &file,
                None,
                "",
                "is not a regular file (a manifest must be a TOML file)",
            ));
        }
        if md.len() > MAX_MANIFEST_BYTES {
            return Err(usage(
                &file,
                None,
                "",
                format!(
                    "manifest is {} bytes, more than the limit of {MAX_MANIFEST_BYTES}",
                    md.len()
                ),
            ));
        }
        let bytes = std::fs::read(path)
            .map_err(|e| usage(&file, None, "", format!("cannot read manifest: {e}")))?;
        let text = match String::from_utf8(bytes) {
            Ok(t) => t,
            Err(e) => {
                let bytes = e.as_bytes();
                let at = e.utf8_error().valid_up_to();
                let valid = String::from_utf8_lossy(bytes.get(..at).unwrap_or_default());
                let (l, c) = line_col(&valid, at);
                let field = key_on_line(&valid, valid.len());
                let bad = bytes.get(at).copied().unwrap_or_default();
                return Err(usage(
                    &file,
                    Some((l, c)),
                    &field,
                    format!("manifest is not valid UTF-8 (byte 0x{bad:02x})"),
                ));
            }
        };
        Manifest::parse(&file, text)
    }

    /// Parses and validates manifest `text`; `name` (usually its path) starts every
    /// message. Reads no files: `[[link_dir]]` directories are listed by
    /// [`Manifest::plan_input`].
    ///
    /// # Errors
    ///
    /// `E_USAGE`, one line `NAME[:LINE:COL]: FIELD: what is wrong`, for malformed TOML,
    /// unknown keys, wrong types, unsafe paths (S1), a manifest that declares nothing,
    /// and requests the plan rule refuses (a duplicate target, a link to itself, a
    /// source that is also a target).
    pub fn parse(name: &str, text: impl Into<String>) -> Result<Manifest> {
        let text = text.into();
        let file = name;
        let raw: RawManifest = {
            let de =
                toml::Deserializer::parse(&text).map_err(|e| toml_error(file, &text, &e, ""))?;
            serde_path_to_error::deserialize(de).map_err(|e| {
                let field = field_path(&e.path().to_string());
                toml_error(file, &text, e.inner(), &field)
            })?
        };
        let pos = |r: &Range<usize>| Some(line_col(&text, r.start));
        let safe = |s: &Spanned<String>, field: &str| -> Result<SafePath> {
            SafePath::new(s.get_ref())
                .map_err(|e| usage(file, pos(&s.span()), field, path_error(&e)))
        };

        let mut policy = Policy::preset(match raw.preset {
            Some(RawPreset::Dev) => Preset::Dev,
            Some(RawPreset::Production) | None => Preset::Production,
        });
        if let Some(p) = &raw.policy {
            if let Some(list) = &p.allow_roots {
                policy.allow_roots = list
                    .iter()
                    .enumerate()
                    .map(|(i, s)| safe(s, &format!("policy.allow_roots[{i}]")))
                    .collect::<Result<_>>()?;
            }
            if let Some(list) = &p.forbid_paths {
                policy.forbid_paths = list
                    .iter()
                    .enumerate()
                    .map(|(i, s)| safe(s, &format!("policy.forbid_paths[{i}]")))
                    .collect::<Result<_>>()?;
            }
            let set = |slot: &mut bool, v: Option<bool>| {
                if let Some(v) = v {
                    *slot = v;
                }
            };
            set(
                &mut policy.require_sidecar_integrity,
                p.require_sidecar_integrity,
            );
            set(&mut policy.require_smoke_runner, p.require_smoke_runner);
            set(&mut policy.disable_auto_rollback, p.disable_auto_rollback);
            set(
                &mut policy.allow_alternatives_takeover,
                p.allow_alternatives_takeover,
            );
            set(
                &mut policy.strict_source_ownership,
                p.strict_source_ownership,
            );
            set(&mut policy.strict_ownership, p.strict_ownership);
            if let Some(ms) = p.lock_timeout_ms {
                policy.lock_timeout_ms = ms;
            }
            if let Some(n) = &p.max_plan_actions {
                if *n.get_ref() == 0 {
                    return Err(usage(
                        file,
                        pos(&n.span()),
                        "policy.max_plan_actions",
                        "must be at least 1",
                    ));
                }
                policy.max_plan_actions = *n.get_ref();
            }
        }

        let mut requests = Vec::new();
        for (i, l) in raw.link.iter().enumerate() {
            let target = safe(&l.target, &format!("link[{i}].target"))?;
            let source = safe(&l.source, &format!("link[{i}].source"))?;
            requests.push(Request {
                target,
                source: Some(source),
                origin: Origin {
                    field: format!("link[{i}].target"),
                    at: l.target.span(),
                },
            });
        }
        let mut link_dirs = Vec::new();
        for (i, d) in raw.link_dir.iter().enumerate() {
            let targets = safe(&d.targets, &format!("link_dir[{i}].targets"))?;
            let sources = safe(&d.sources, &format!("link_dir[{i}].sources"))?;
            if targets == sources {
                return Err(usage(
                    file,
                    pos(&d.sources.span()),
                    &format!("link_dir[{i}].sources"),
                    format!("{sources} is also the targets directory"),
                ));
            }
            link_dirs.push(LinkDir {
                index: i,
                targets,
                sources,
                at: d.targets.span(),
            });
        }
        for (i, r) in raw.restore.iter().enumerate() {
            let target = safe(&r.target, &format!("restore[{i}].target"))?;
            requests.push(Request {
                target,
                source: None,
                origin: Origin {
                    field: format!("restore[{i}].target"),
                    at: r.target.span(),
                },
            });
        }
        if requests.is_empty() && link_dirs.is_empty() {
            return Err(usage(
                file,
                None,
                "",
                "declares nothing to do: add a [[link]], [[link_dir]] or [[restore]] entry",
            ));
        }

        let mut checks = Vec::new();
        if let Some(smoke) = &raw.smoke {
            if let Some(g) = &smoke.generic {
                if *g.get_ref() {
                    return Err(usage(
                        file,
                        pos(&g.span()),
                        "smoke.generic",
                        "the built-in generic smoke suite (H2) is not available in this version; \
                         set generic = false and list your checks as [[smoke.check]] entries",
                    ));
                }
            }
            for (i, c) in smoke.check.iter().enumerate() {
                checks.push(check(file, &text, i, c)?);
            }
        }
        let m = Manifest {
            name: file.to_owned(),
            text,
            policy,
            requests,
            link_dirs,
            checks,
        };
        m.check_requests(&m.requests)?;
        Ok(m)
    }

    /// The manifest's name, as given to [`Manifest::load`] or [`Manifest::parse`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The policy: the `preset` (production unless `dev`) with the `[policy]`
    /// overrides applied. Build the engine with it.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The `[[smoke.check]]` entries, for a [`crate::CommandSmoke`] runner (H2, H3).
    pub fn smoke_checks(&self) -> &[CommandCheck] {
        &self.checks
    }

    fn pos(&self, r: &Range<usize>) -> Option<(usize, usize)> {
        Some(line_col(&self.text, r.start))
    }

    /// Applies the plan rule ([`plan::conflict`]) to `reqs`, naming the entries.
    fn check_requests(&self, reqs: &[Request]) -> Result<()> {
        let Some(c) = plan::conflict(reqs.iter().map(|r| (&r.target, r.source.as_ref()))) else {
            return Ok(());
        };
        // `conflict` returns indexes into the slice it was given.
        let at = |r: &Request| {
            let (l, c) = line_col(&self.text, r.origin.at.start);
            format!("{} at {l}:{c}", r.origin.field)
        };
        let (r, field, msg) = match c {
            Conflict::DuplicateTarget { first, again } => {
                let r = &reqs[again];
                let msg = format!(
                    "duplicate target {} (already {})",
                    r.target,
                    at(&reqs[first])
                );
                (r, r.origin.field.clone(), msg)
            }
            Conflict::SelfLink { index } => {
                let r = &reqs[index];
                (
                    r,
                    r.origin.field.clone(),
                    format!("{} links to itself", r.target),
                )
            }
            Conflict::SourceIsTarget { index, target_of } => {
                let r = &reqs[index];
                let source = r.source.as_ref().unwrap_or(&r.target);
                let msg = format!(
                    "{source} is the source of {} and also a target ({})",
                    r.target,
                    at(&reqs[target_of])
                );
                (r, r.origin.field.replace(".target", ".source"), msg)
            }
        };
        Err(usage(&self.name, self.pos(&r.origin.at), &field, msg))
    }

    /// The plan input: the `[[link]]` and `[[restore]]` entries, and each
    /// `[[link_dir]]` expanded by listing its two directories through `sy`'s confined
    /// root handle (read-only; a symlink anywhere on the way is refused, S1; names
    /// starting with [`RESERVED_PREFIX`] are skipped). Lists directories only when
    /// the manifest has a `[[link_dir]]`.
    ///
    /// # Errors
    ///
    /// `E_USAGE` when a directory cannot be listed, the two directories share no
    /// file name, or an expanded request breaks the plan rule; `E_POLICY` when a
    /// directory is reached through a symlink (S1).
    pub fn plan_input(&self, sy: &Switchyard) -> Result<PlanInput> {
        let mut reqs = self.requests.clone();
        if !self.link_dirs.is_empty() {
            for d in &self.link_dirs {
                reqs.extend(self.expand(&sy.root, d)?);
            }
            self.check_requests(&reqs)?;
        }
        Ok(reqs
            .into_iter()
            .fold(PlanInput::default(), |input, r| match r.source {
                Some(s) => input.link(r.target, s),
                None => input.restore(r.target),
            }))
    }

    /// The plan of this manifest on `sy` (built with [`Manifest::policy`]):
    /// [`Manifest::plan_input`], then [`Switchyard::plan`], whose usage errors are
    /// prefixed with the manifest's name. The CLI's `plan`, `preflight` and `apply`
    /// use exactly this.
    ///
    /// # Errors
    ///
    /// Those of [`Manifest::plan_input`] and [`Switchyard::plan`] (e.g. `E_USAGE`
    /// `NAME: plan has N actions, more than the limit of M`).
    pub fn plan(&self, sy: &Switchyard) -> Result<Plan> {
        let input = self.plan_input(sy)?;
        sy.plan(&input).map_err(|e| match e.id() {
            ErrorId::Usage => {
                let message = format!("{}: {}", self.name, e.message());
                e.with_message(message)
            }
            _ => e,
        })
    }

    /// The requests of one `[[link_dir]]`: every name present in both directories.
    fn expand(&self, root: &Root, d: &LinkDir) -> Result<Vec<Request>> {
        let field = |f: &str| format!("link_dir[{}].{f}", d.index);
        let list = |dir: &SafePath, f: &str| -> Result<(Vec<String>, Vec<Vec<u8>>)> {
            list_dir(root, dir).map_err(|e| {
                let f = field(f);
                if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
                    // S1: a symlinked directory is a policy matter, as in preflight.
                    error(
                        ErrorId::Policy,
                        &self.name,
                        self.pos(&d.at),
                        &f,
                        format!("{dir} is or contains a symlink; refusing to follow it (S1)"),
                    )
                } else {
                    usage(
                        &self.name,
                        self.pos(&d.at),
                        &f,
                        format!("cannot list directory {dir}: {e}"),
                    )
                }
            })
        };
        let (targets, bad_targets) = list(&d.targets, "targets")?;
        let (sources, bad_sources) = list(&d.sources, "sources")?;
        // S10: a name present in both that is not UTF-8 is refused, never skipped.
        if let Some(bad) = bad_targets
            .iter()
            .find(|b| bad_sources.binary_search(b).is_ok())
        {
            return Err(usage(
                &self.name,
                self.pos(&d.at),
                &field("targets"),
                format!(
                    "{}/{} is in both directories but its name is not valid UTF-8; \
                     rename it or leave it out of [[link_dir]]",
                    d.targets,
                    bad.escape_ascii()
                ),
            ));
        }
        let mut out = Vec::new();
        for name in targets.iter().filter(|n| sources.binary_search(n).is_ok()) {
            let join = |dir: &SafePath| SafePath::new(&format!("{dir}/{name}"));
            match (join(&d.targets), join(&d.sources)) {
                (Ok(target), Ok(source)) => out.push(Request {
                    target,
                    source: Some(source),
                    origin: Origin {
                        field: format!("{} ({name})", field("targets")),
                        at: d.at.clone(),
                    },
                }),
                (Err(e), _) | (_, Err(e)) => {
                    return Err(usage(
                        &self.name,
                        self.pos(&d.at),
                        &field("targets"),
                        format!("{name}: {}", path_error(&e)),
                    ))
                }
            }
        }
        if out.is_empty() {
            return Err(usage(
                &self.name,
                self.pos(&d.at),
                &field("targets"),
                format!(
                    "no file name is present in both {} and {}",
                    d.targets, d.sources
                ),
            ));
        }
        Ok(out)
    }
}

/// Sorted entry names of `dir`, skipping `.`, `..` and Switchyard's own entries.
/// The entries of `dir`, sorted, skipping Switchyard's own `.switchyard.*` names:
/// the UTF-8 names, and apart the names that are not UTF-8 (which no `SafePath` can
/// hold; the caller refuses them rather than skip them silently, S10).
fn list_dir(root: &Root, dir: &SafePath) -> std::io::Result<(Vec<String>, Vec<Vec<u8>>)> {
    let fd = root.open_dir(dir.as_str())?;
    let mut names = Vec::new();
    let mut not_utf8 = Vec::new();
    for entry in rustix::fs::Dir::read_from(&fd)? {
        let entry = entry?;
        let Ok(name) = entry.file_name().to_str() else {
            not_utf8.push(entry.file_name().to_bytes().to_vec());
            continue;
        };
        if name == "." || name == ".." || name.starts_with(RESERVED_PREFIX) {
            continue;
        }
        names.push(name.to_owned());
    }
    names.sort();
    not_utf8.sort();
    Ok((names, not_utf8))
}

fn check(file: &str, text: &str, i: usize, c: &RawCheck) -> Result<CommandCheck> {
    let field = |f: &str| format!("smoke.check[{i}].{f}");
    let pos = |r: Range<usize>| Some(line_col(text, r.start));
    let argv: Vec<String> = c
        .argv
        .get_ref()
        .iter()
        .map(|a| a.get_ref().clone())
        .collect();
    let Some(first) = c.argv.get_ref().first() else {
        return Err(usage(
            file,
            pos(c.argv.span()),
            &field("argv"),
            "argv is empty; give the program and its arguments",
        ));
    };
    for (k, a) in c.argv.get_ref().iter().enumerate() {
        if a.get_ref().contains('\0') {
            return Err(usage(
                file,
                pos(a.span()),
                &field(&format!("argv[{k}]")),
                "contains a NUL byte",
            ));
        }
    }
    if !first.get_ref().starts_with('/') {
        SafePath::new(first.get_ref())
            .map_err(|e| usage(file, pos(first.span()), &field("argv[0]"), path_error(&e)))?;
    }
    let timeout_ms = match &c.timeout_ms {
        Some(t) if *t.get_ref() == 0 => {
            return Err(usage(
                file,
                pos(t.span()),
                &field("timeout_ms"),
                "must be at least 1",
            ))
        }
        Some(t) => *t.get_ref(),
        None => DEFAULT_CHECK_TIMEOUT_MS,
    };
    Ok(CommandCheck {
        argv,
        expect_exit: c.expect_exit.unwrap_or(0),
        expect_stdout: c.expect_stdout.clone(),
        timeout: Duration::from_millis(timeout_ms),
    })
}

/// `link[0].target` from a serde path, without serde_spanned's private segments.
fn field_path(p: &str) -> String {
    if p == "." {
        return String::new();
    }
    let mut out = String::new();
    for seg in p.split('.') {
        if seg.starts_with("$__") {
            // A private segment may still carry an index suffix: keep `[n]`.
            if let Some(idx) = seg.find('[') {
                out.push_str(&seg[idx..]);
            }
            continue;
        }
        if !out.is_empty() && !seg.starts_with('[') {
            out.push('.');
        }
        out.push_str(seg);
    }
    out
}

/// The key assigned on the line holding byte `at` (`key = ...`), if any.
fn key_on_line(text: &str, at: usize) -> String {
    let start = text
        .get(..at)
        .and_then(|b| b.rfind('\n'))
        .map_or(0, |i| i + 1);
    let line = text.get(start..).unwrap_or_default();
    let line = line.split('\n').next().unwrap_or_default();
    match line.split_once('=') {
        Some((k, _)) if !k.trim().is_empty() && !k.trim_start().starts_with('[') => {
            k.trim().to_owned()
        }
        _ => String::new(),
    }
}

fn toml_error(file: &str, text: &str, e: &toml::de::Error, field: &str) -> Error {
    let pos = e.span().map(|s| line_col(text, s.start));
    let guessed;
    let field = match (field, e.span()) {
        ("", Some(s)) => {
            guessed = key_on_line(text, s.start);
            guessed.as_str()
        }
        _ => field,
    };
    let mut msg = one_line(e.message());
    if msg.starts_with("unknown field") {
        // serde lists every expected key; the first clause is the useful part.
        if let Some((head, _)) = msg.split_once(", expected") {
            msg = format!("{head} (unknown keys are errors; see `switchyard --help`)");
        }
    }
    usage(file, pos, field, msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_chars() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
        assert_eq!(line_col("é\nx", 3), (2, 1));
    }

    #[test]
    fn field_paths_drop_private_segments() {
        assert_eq!(field_path("link[0].target"), "link[0].target");
        assert_eq!(
            field_path("link[0].target.$__serde_spanned_private_value"),
            "link[0].target"
        );
        assert_eq!(field_path("."), "");
    }
}
