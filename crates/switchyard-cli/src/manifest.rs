//! The manifest (SPEC §3): TOML in, a policy, a `PlanInput` and smoke checks out.
//!
//! Contract: every rejection is an `E_USAGE` error (exit 2) whose message is one line
//! `FILE[:LINE:COL]: FIELD: what is wrong`, except a `[[link_dir]]` directory that is
//! reached through a symlink, which is a policy violation (S1, `E_POLICY`). Reading a
//! manifest never changes anything: `[[link_dir]]` only lists directories, through
//! the library's confined, symlink-refusing directory handles.

use serde::Deserialize;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;
use switchyard::{
    CommandCheck, Error, ErrorId, PathError, PlanInput, Policy, Preset, Root, SafePath,
};
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
    allow_degraded_fs: Option<bool>,
    require_sidecar_integrity: Option<bool>,
    require_smoke_runner: Option<bool>,
    disable_auto_rollback: Option<bool>,
    strict_source_ownership: Option<bool>,
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

/// A `[[link_dir]]` request, resolved against the root by [`Manifest::plan_input`].
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

/// A parsed, validated manifest.
#[derive(Debug)]
pub struct Manifest {
    /// The manifest's path as given (for messages).
    pub file: String,
    text: String,
    pub policy: Policy,
    links: Vec<(SafePath, SafePath, Origin)>,
    link_dirs: Vec<LinkDir>,
    restores: Vec<(SafePath, Origin)>,
    pub checks: Vec<CommandCheck>,
}

/// 1-based line and column (in characters) of byte offset `at` in `text`.
pub fn line_col(text: &str, at: usize) -> (usize, usize) {
    let at = at.min(text.len());
    let before = text.get(..at).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// The one-line `E_USAGE` error of the manifest `file`.
fn usage(file: &str, pos: Option<(usize, usize)>, field: &str, msg: impl AsRef<str>) -> Error {
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
    Error::new(ErrorId::Usage, s)
}

/// Collapses a message to one line.
pub fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn path_error(e: &PathError) -> String {
    match e {
        PathError::Empty => "path is empty (it must name something below the root)".into(),
        other => other.to_string(),
    }
}

impl Manifest {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Manifest, Error> {
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

    /// Parses and validates manifest `text` (named `file` in messages).
    pub fn parse(file: &str, text: String) -> Result<Manifest, Error> {
        let raw: RawManifest = {
            let de =
                toml::Deserializer::parse(&text).map_err(|e| toml_error(file, &text, &e, ""))?;
            serde_path_to_error::deserialize(de).map_err(|e| {
                let field = field_path(&e.path().to_string());
                toml_error(file, &text, e.inner(), &field)
            })?
        };
        let pos = |r: &Range<usize>| Some(line_col(&text, r.start));
        let safe = |s: &Spanned<String>, field: &str| -> Result<SafePath, Error> {
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
                    .collect::<Result<_, _>>()?;
            }
            if let Some(list) = &p.forbid_paths {
                policy.forbid_paths = list
                    .iter()
                    .enumerate()
                    .map(|(i, s)| safe(s, &format!("policy.forbid_paths[{i}]")))
                    .collect::<Result<_, _>>()?;
            }
            let set = |slot: &mut bool, v: Option<bool>| {
                if let Some(v) = v {
                    *slot = v;
                }
            };
            set(&mut policy.allow_degraded_fs, p.allow_degraded_fs);
            set(
                &mut policy.require_sidecar_integrity,
                p.require_sidecar_integrity,
            );
            set(&mut policy.require_smoke_runner, p.require_smoke_runner);
            set(&mut policy.disable_auto_rollback, p.disable_auto_rollback);
            set(
                &mut policy.strict_source_ownership,
                p.strict_source_ownership,
            );
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

        let mut links = Vec::new();
        for (i, l) in raw.link.iter().enumerate() {
            let t = safe(&l.target, &format!("link[{i}].target"))?;
            let s = safe(&l.source, &format!("link[{i}].source"))?;
            let origin = Origin {
                field: format!("link[{i}].target"),
                at: l.target.span(),
            };
            links.push((t, s, origin));
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
        let mut restores = Vec::new();
        for (i, r) in raw.restore.iter().enumerate() {
            let t = safe(&r.target, &format!("restore[{i}].target"))?;
            restores.push((
                t,
                Origin {
                    field: format!("restore[{i}].target"),
                    at: r.target.span(),
                },
            ));
        }
        if links.is_empty() && link_dirs.is_empty() && restores.is_empty() {
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
            file: file.to_owned(),
            text,
            policy,
            links,
            link_dirs,
            restores,
            checks,
        };
        m.check_targets(&m.static_requests())?;
        Ok(m)
    }

    fn pos(&self, r: &Range<usize>) -> Option<(usize, usize)> {
        Some(line_col(&self.text, r.start))
    }

    /// `[[link]]` and `[[restore]]` requests as (target, source, origin).
    fn static_requests(&self) -> Vec<(SafePath, Option<SafePath>, Origin)> {
        self.links
            .iter()
            .map(|(t, s, o)| (t.clone(), Some(s.clone()), o.clone()))
            .chain(
                self.restores
                    .iter()
                    .map(|(t, o)| (t.clone(), None, o.clone())),
            )
            .collect()
    }

    /// Duplicate targets, self-links and targets that are also sources are errors.
    fn check_targets(&self, reqs: &[(SafePath, Option<SafePath>, Origin)]) -> Result<(), Error> {
        let mut seen: std::collections::BTreeMap<&SafePath, &Origin> = Default::default();
        for (t, s, o) in reqs {
            if let Some(first) = seen.get(t) {
                let (l, c) = line_col(&self.text, first.at.start);
                return Err(usage(
                    &self.file,
                    self.pos(&o.at),
                    &o.field,
                    format!("duplicate target {t} (already {} at {l}:{c})", first.field),
                ));
            }
            seen.insert(t, o);
            if s.as_ref() == Some(t) {
                return Err(usage(
                    &self.file,
                    self.pos(&o.at),
                    &o.field,
                    format!("{t} links to itself"),
                ));
            }
        }
        for (t, s, o) in reqs {
            let Some(s) = s else { continue };
            if let Some(other) = seen.get(s) {
                let (l, c) = line_col(&self.text, other.at.start);
                return Err(usage(
                    &self.file,
                    self.pos(&o.at),
                    &o.field.replace(".target", ".source"),
                    format!(
                        "{s} is the source of {t} and also a target ({} at {l}:{c})",
                        other.field
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The plan input, expanding each `[[link_dir]]` by listing its two directories
    /// under `root` (read-only, refusing symlinks: S1).
    pub fn plan_input(&self, root: &Path) -> Result<PlanInput, Error> {
        let mut reqs = self.static_requests();
        if !self.link_dirs.is_empty() {
            let root = Root::open(root).map_err(|e| {
                Error::new(
                    ErrorId::Usage,
                    format!("cannot open root {}: {e}", root.display()),
                )
            })?;
            for d in &self.link_dirs {
                reqs.extend(self.expand(&root, d)?);
            }
            self.check_targets(&reqs)?;
        }
        let mut input = PlanInput::default();
        for (t, s, _) in reqs {
            input = match s {
                Some(s) => input.link(t, s),
                None => input.restore(t),
            };
        }
        Ok(input)
    }

    fn expand(
        &self,
        root: &Root,
        d: &LinkDir,
    ) -> Result<Vec<(SafePath, Option<SafePath>, Origin)>, Error> {
        let field = |f: &str| format!("link_dir[{}].{f}", d.index);
        let list = |dir: &SafePath, f: &str| -> Result<Vec<String>, Error> {
            list_dir(root, dir).map_err(|e| {
                let f = field(f);
                if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
                    // S1: a symlinked directory is a policy matter, as in preflight.
                    let err = usage(
                        &self.file,
                        self.pos(&d.at),
                        &f,
                        format!("{dir} is or contains a symlink; refusing to follow it (S1)"),
                    );
                    Error::new(ErrorId::Policy, err.message())
                } else {
                    usage(
                        &self.file,
                        self.pos(&d.at),
                        &f,
                        format!("cannot list directory {dir}: {e}"),
                    )
                }
            })
        };
        let targets = list(&d.targets, "targets")?;
        let sources = list(&d.sources, "sources")?;
        let mut out = Vec::new();
        for name in targets.iter().filter(|n| sources.binary_search(n).is_ok()) {
            let join = |dir: &SafePath| SafePath::new(&format!("{dir}/{name}"));
            match (join(&d.targets), join(&d.sources)) {
                (Ok(t), Ok(s)) => out.push((
                    t,
                    Some(s),
                    Origin {
                        field: format!("{} ({name})", field("targets")),
                        at: d.at.clone(),
                    },
                )),
                (Err(e), _) | (_, Err(e)) => {
                    return Err(usage(
                        &self.file,
                        self.pos(&d.at),
                        &field("targets"),
                        format!("{name}: {}", path_error(&e)),
                    ))
                }
            }
        }
        if out.is_empty() {
            return Err(usage(
                &self.file,
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

/// Sorted entry names of `dir` (skipping Switchyard's own `.switchyard.*` entries).
fn list_dir(root: &Root, dir: &SafePath) -> std::io::Result<Vec<String>> {
    let fd = root.open_dir(dir.as_str())?;
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::read_from(&fd)? {
        let entry = entry?;
        let Ok(name) = entry.file_name().to_str() else {
            continue;
        };
        if name == "." || name == ".." || name.starts_with(".switchyard.") {
            continue;
        }
        names.push(name.to_owned());
    }
    names.sort();
    Ok(names)
}

fn check(file: &str, text: &str, i: usize, c: &RawCheck) -> Result<CommandCheck, Error> {
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
