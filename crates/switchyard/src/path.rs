//! Path containment (S1): [`SafePath`] names a node inside the root; [`Root`] is the
//! directory handle every open goes through.
//!
//! Contract:
//! - A `SafePath` is non-empty, valid UTF-8, free of NUL, `.` and `..` components,
//!   relative to the root, with components of at most 255 bytes and a total of at
//!   most 4095. A leading `/` means the root (chroot semantics, S1 in `docs/GUARANTEES.md`).
//! - [`Root::open_parent`] reaches a target's parent directory without following any
//!   symlink (`openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS)`, or an `O_NOFOLLOW`
//!   walk where the kernel lacks `openat2`): a symlinked parent is refused even when
//!   it points inside the root.
//! - [`Root::open_resolved`] follows symlinks the way a process chrooted into the
//!   root would (`RESOLVE_IN_ROOT`), so it can never leave the root.
//! - Mutations happen only through the directory handles returned here.

use rustix::fs::{openat, openat2, readlinkat, AtFlags, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use std::fmt;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

/// Longest file name component Linux accepts (`NAME_MAX`).
pub const NAME_MAX: usize = 255;
/// Longest path Linux accepts, less the terminating NUL (`PATH_MAX - 1`).
pub const PATH_MAX: usize = 4095;

/// Why a string is not a [`SafePath`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path is empty")]
    /// The path names nothing below the root.
    Empty,
    #[error("path contains a NUL byte")]
    /// The path contains a NUL byte.
    Nul,
    #[error("path is not valid UTF-8")]
    /// The path is not valid UTF-8.
    NonUtf8,
    #[error("path contains a `..` component")]
    /// The path has a `..` component.
    DotDot,
    #[error("path {0:?} is outside the root {1:?}")]
    /// A host path is not below the root (path, root).
    OutsideRoot(String, String),
    #[error("path component is longer than {NAME_MAX} bytes")]
    /// A component is longer than 255 bytes.
    NameTooLong,
    #[error("path is longer than {PATH_MAX} bytes")]
    /// The path is longer than 4095 bytes.
    TooLong,
}

/// A normalized path confined to the root. See the module docs.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SafePath(String);

impl SafePath {
    /// Parses a root-relative path (`usr/bin/ls` or `/usr/bin/ls`).
    ///
    /// # Errors
    ///
    /// A [`PathError`] naming the rule the text breaks (empty, NUL, `..`, a
    /// component over 255 bytes, over 4095 bytes in all).
    pub fn new(s: &str) -> Result<SafePath, PathError> {
        if s.contains('\0') {
            return Err(PathError::Nul);
        }
        let mut out = String::with_capacity(s.len());
        for comp in s.split('/') {
            match comp {
                "" | "." => continue,
                ".." => return Err(PathError::DotDot),
                c if c.len() > NAME_MAX => return Err(PathError::NameTooLong),
                c => {
                    if !out.is_empty() {
                        out.push('/');
                    }
                    out.push_str(c);
                }
            }
        }
        if out.is_empty() {
            return Err(PathError::Empty);
        }
        if out.len() > PATH_MAX {
            return Err(PathError::TooLong);
        }
        Ok(SafePath(out))
    }

    /// Converts a host path (absolute, or relative to the current directory is not
    /// accepted) that lies lexically under `root` into a `SafePath`.
    ///
    /// # Errors
    ///
    /// [`PathError::OutsideRoot`] when `host` is not below `root`, or any error of
    /// [`SafePath::new`].
    pub fn from_host(root: &Path, host: &Path) -> Result<SafePath, PathError> {
        let s = host.to_str().ok_or(PathError::NonUtf8)?;
        let root_s = root.to_str().ok_or(PathError::NonUtf8)?;
        if s.split('/').any(|c| c == "..") {
            return Err(PathError::DotDot);
        }
        let outside = || PathError::OutsideRoot(s.to_owned(), root_s.to_owned());
        let rest = host.strip_prefix(root).map_err(|_| outside())?;
        SafePath::new(rest.to_str().ok_or(PathError::NonUtf8)?)
    }

    /// Parses raw bytes (e.g. from a manifest), rejecting non-UTF-8.
    ///
    /// # Errors
    ///
    /// [`PathError::NonUtf8`], or any error of [`SafePath::new`].
    pub fn from_bytes(b: &[u8]) -> Result<SafePath, PathError> {
        SafePath::new(std::str::from_utf8(b).map_err(|_| PathError::NonUtf8)?)
    }

    /// The normalized root-relative form, e.g. `usr/bin/ls`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The parent directory, root-relative (`""` for a top-level entry).
    pub fn parent(&self) -> &str {
        self.0.rsplit_once('/').map_or("", |(dir, _)| dir)
    }

    /// The last component.
    pub fn file_name(&self) -> &str {
        self.0
            .rsplit_once('/')
            .map_or(self.0.as_str(), |(_, name)| name)
    }

    /// Whether `self` is `prefix` or lies below it (component-wise).
    pub fn starts_with(&self, prefix: &SafePath) -> bool {
        self.0 == prefix.0
            || (self.0.starts_with(&prefix.0)
                && self.0.as_bytes().get(prefix.0.len()) == Some(&b'/'))
    }

    /// The relative symlink text that makes a link at `self` point at `dest`
    /// (e.g. `usr/bin/ls` → `usr/lib/uutils/ls` gives `../lib/uutils/ls`).
    pub fn relative_link_to(&self, dest: &SafePath) -> String {
        let from: Vec<&str> = self.parent().split('/').filter(|c| !c.is_empty()).collect();
        let to: Vec<&str> = dest.0.split('/').collect();
        let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
        let mut parts: Vec<&str> = vec![".."; from.len() - common];
        parts.extend(&to[common..]);
        parts.join("/")
    }
}

impl TryFrom<String> for SafePath {
    type Error = PathError;
    fn try_from(s: String) -> Result<Self, PathError> {
        SafePath::new(&s)
    }
}

impl From<SafePath> for String {
    fn from(p: SafePath) -> String {
        p.0
    }
}

impl fmt::Display for SafePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SafePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SafePath({:?})", self.0)
    }
}

impl schemars::JsonSchema for SafePath {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "SafePath".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"type": "string", "minLength": 1})
    }
}

/// How [`Root`] resolves paths below its handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resolver {
    /// `openat2` with `RESOLVE_*` flags (Linux ≥ 5.6).
    Openat2,
    /// Component-by-component `openat(O_NOFOLLOW)`, following symlinks by hand.
    Walk,
}

/// Most symlinks followed while resolving one path (as the kernel: `MAXSYMLINKS`).
const MAX_SYMLINKS: usize = 40;

fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

/// The root directory, held open: it corresponds to a process's `/` after
/// `chroot(2)`, but only for this handle. Every path below it is reached through
/// its directory descriptor, never by host path, so renaming or replacing the root
/// path afterwards cannot redirect it.
#[derive(Debug)]
pub struct Root {
    path: PathBuf,
    fd: OwnedFd,
    resolver: Resolver,
}

impl Root {
    /// Opens `path` as the root (`openat(2)` with `O_DIRECTORY|O_NOFOLLOW`), probing
    /// whether the kernel has `openat2(2)`; without it, paths are resolved by a
    /// hand-written `O_NOFOLLOW` walk.
    ///
    /// # Errors
    ///
    /// The `openat` error: `ENOENT`, `ENOTDIR`, `ELOOP` (the last component is a
    /// symlink), `EACCES`.
    pub fn open(path: &Path) -> std::io::Result<Root> {
        let fd = openat(rustix::fs::CWD, path, dir_flags(), Mode::empty())?;
        let resolver = match openat2(&fd, ".", dir_flags(), Mode::empty(), ResolveFlags::BENEATH) {
            Err(Errno::NOSYS) | Err(Errno::PERM) => Resolver::Walk,
            _ => Resolver::Openat2,
        };
        Ok(Root {
            path: path.to_path_buf(),
            fd,
            resolver,
        })
    }

    /// Forces a resolver (tests exercise both).
    #[cfg(test)]
    pub(crate) fn with_resolver(mut self, resolver: Resolver) -> Root {
        self.resolver = resolver;
        self
    }

    /// The root's host path (for messages and for running checks).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The host path of `p` (for messages and for running checks).
    pub fn host_path(&self, p: &SafePath) -> PathBuf {
        self.path.join(p.as_str())
    }

    /// Opens the root-relative directory `dir` (`""` = the root) without following
    /// any symlink: `openat2(2)` with `RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS` (retried
    /// on `EAGAIN`), or an `openat(2)` walk with `O_NOFOLLOW|O_DIRECTORY`. A symlink
    /// component fails with `ELOOP` in both modes.
    pub(crate) fn open_dir(&self, dir: &str) -> std::io::Result<OwnedFd> {
        if dir.is_empty() {
            return Ok(openat(&self.fd, ".", dir_flags(), Mode::empty())?);
        }
        match self.resolver {
            Resolver::Openat2 => loop {
                // No O_NOFOLLOW here: RESOLVE_NO_SYMLINKS refuses every symlink,
                // the last one included, with ELOOP (O_NOFOLLOW would say ENOTDIR).
                let flags = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS;
                let oflags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
                match openat2(&self.fd, dir, oflags, Mode::empty(), flags) {
                    Err(Errno::AGAIN) => continue,
                    r => return Ok(r?),
                }
            },
            Resolver::Walk => {
                let mut cur = openat(&self.fd, ".", dir_flags(), Mode::empty())?;
                for comp in dir.split('/') {
                    cur = openat(&cur, comp, dir_flags(), Mode::empty()).map_err(|e| {
                        // O_NOFOLLOW|O_DIRECTORY on a symlink gives ENOTDIR; report ELOOP
                        // like openat2 so callers see one error for "symlinked parent".
                        match rustix::fs::statat(&cur, comp, AtFlags::SYMLINK_NOFOLLOW) {
                            Ok(st)
                                if rustix::fs::FileType::from_raw_mode(st.st_mode).is_symlink() =>
                            {
                                Errno::LOOP
                            }
                            _ => e,
                        }
                    })?;
                }
                Ok(cur)
            }
        }
    }

    /// Opens the parent directory of `p` (see [`Root::open_dir`]).
    pub(crate) fn open_parent(&self, p: &SafePath) -> std::io::Result<OwnedFd> {
        self.open_dir(p.parent())
    }

    /// Opens what `p` resolves to, following symlinks as inside a chroot at the root
    /// (absolute link text restarts at the root, `..` stops at it): `openat2(2)` with
    /// `RESOLVE_IN_ROOT|RESOLVE_NO_MAGICLINKS`, or [`Root::walk`].
    pub(crate) fn open_resolved(&self, p: &SafePath, flags: OFlags) -> std::io::Result<OwnedFd> {
        let flags = flags | OFlags::CLOEXEC;
        match self.resolver {
            Resolver::Openat2 => loop {
                let r = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
                match openat2(&self.fd, p.as_str(), flags, Mode::empty(), r) {
                    Err(Errno::AGAIN) => continue,
                    r => return Ok(r?),
                }
            },
            Resolver::Walk => self.walk_resolved(p.as_str(), flags),
        }
    }

    /// The first path that resolving `p` inside the root (as [`Root::open_resolved`]
    /// does) visits and for which `stop` is true: each component, root-relative,
    /// before it is followed. `None` when none does or the path does not resolve.
    pub(crate) fn first_visited(
        &self,
        p: &SafePath,
        stop: impl Fn(&str) -> bool,
    ) -> Option<String> {
        match self.walk(p.as_str(), OFlags::PATH, &stop) {
            Ok(Walked::Stopped(at)) => Some(at),
            Ok(Walked::Opened(_)) | Err(_) => None,
        }
    }

    fn walk_resolved(&self, path: &str, flags: OFlags) -> std::io::Result<OwnedFd> {
        match self.walk(path, flags, &|_| false)? {
            Walked::Opened(fd) => Ok(fd),
            Walked::Stopped(_) => Err(Errno::INVAL.into()),
        }
    }

    /// The one hand-written resolver: follows `path` component by component with
    /// `openat(O_NOFOLLOW)` and `readlinkat`, as inside a chroot at the root (absolute
    /// link text restarts at the root, `..` stops at it, at most [`MAX_SYMLINKS`]
    /// links), calling `stop` with each component's root-relative path first.
    fn walk(
        &self,
        path: &str,
        flags: OFlags,
        stop: &dyn Fn(&str) -> bool,
    ) -> std::io::Result<Walked> {
        // `stack` holds the directories from the root to the current one, `names`
        // their names below the root.
        let mut stack: Vec<OwnedFd> = vec![openat(&self.fd, ".", dir_flags(), Mode::empty())?];
        let mut names: Vec<String> = Vec::new();
        let mut todo: Vec<String> = path.split('/').rev().map(str::to_owned).collect();
        let mut followed = 0;
        while let Some(comp) = todo.pop() {
            let last = todo.is_empty();
            match comp.as_str() {
                "" | "." => {
                    if last {
                        return Ok(Walked::Opened(cur_dir(&stack)?.try_clone()?));
                    }
                    continue;
                }
                ".." => {
                    if stack.len() > 1 {
                        stack.pop();
                        names.pop();
                    }
                    if last {
                        return Ok(Walked::Opened(cur_dir(&stack)?.try_clone()?));
                    }
                    continue;
                }
                _ => {}
            }
            let here = names
                .iter()
                .map(String::as_str)
                .chain([comp.as_str()])
                .collect::<Vec<_>>()
                .join("/");
            if stop(&here) {
                return Ok(Walked::Stopped(here));
            }
            let dir = cur_dir(&stack)?;
            let st = rustix::fs::statat(dir, comp.as_str(), AtFlags::SYMLINK_NOFOLLOW)?;
            if rustix::fs::FileType::from_raw_mode(st.st_mode).is_symlink() {
                followed += 1;
                if followed > MAX_SYMLINKS {
                    return Err(Errno::LOOP.into());
                }
                let target = readlinkat(dir, comp.as_str(), Vec::new())?;
                let target = target.to_str().map_err(|_| Errno::INVAL)?.to_owned();
                if target.starts_with('/') {
                    stack.truncate(1);
                    names.clear();
                }
                todo.extend(target.split('/').rev().map(str::to_owned));
                continue;
            }
            if last {
                let fd = openat(dir, comp.as_str(), flags | OFlags::NOFOLLOW, Mode::empty())?;
                return Ok(Walked::Opened(fd));
            }
            let next = openat(dir, comp.as_str(), dir_flags(), Mode::empty())?;
            stack.push(next);
            names.push(comp);
        }
        Ok(Walked::Opened(cur_dir(&stack)?.try_clone()?))
    }
}

/// How [`Root::walk`] ended.
enum Walked {
    /// The path resolved; its final node, opened.
    Opened(OwnedFd),
    /// The visitor stopped the walk at this root-relative path.
    Stopped(String),
}

fn cur_dir(stack: &[OwnedFd]) -> std::io::Result<&OwnedFd> {
    stack.last().ok_or_else(|| Errno::NOENT.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_and_rejects() {
        assert_eq!(
            SafePath::new("/usr//bin/./ls/").map(String::from),
            Ok("usr/bin/ls".into())
        );
        assert_eq!(SafePath::new(""), Err(PathError::Empty));
        assert_eq!(SafePath::new("/"), Err(PathError::Empty));
        assert_eq!(SafePath::new("usr/../etc"), Err(PathError::DotDot));
        assert_eq!(SafePath::new("a\0b"), Err(PathError::Nul));
        assert_eq!(SafePath::new(&"x".repeat(256)), Err(PathError::NameTooLong));
        assert_eq!(SafePath::new(&"x/".repeat(2100)), Err(PathError::TooLong));
        assert_eq!(SafePath::from_bytes(b"usr/\xff"), Err(PathError::NonUtf8));
    }

    #[test]
    fn host_paths_must_be_under_root() {
        let root = Path::new("/tmp/r");
        assert_eq!(
            SafePath::from_host(root, Path::new("/tmp/r/usr/bin/ls")).map(String::from),
            Ok("usr/bin/ls".into())
        );
        assert!(matches!(
            SafePath::from_host(root, Path::new("/etc/passwd")),
            Err(PathError::OutsideRoot(..))
        ));
        assert!(matches!(
            SafePath::from_host(root, Path::new("/tmp/rx/a")),
            Err(PathError::OutsideRoot(..))
        ));
        assert_eq!(
            SafePath::from_host(root, Path::new("/tmp/r/../r/a")),
            Err(PathError::DotDot)
        );
    }

    #[test]
    fn relative_links() {
        let p = |s: &str| SafePath::new(s).unwrap();
        assert_eq!(
            p("usr/bin/ls").relative_link_to(&p("usr/lib/uutils/ls")),
            "../lib/uutils/ls"
        );
        assert_eq!(p("ls").relative_link_to(&p("opt/ls")), "opt/ls");
        assert_eq!(p("a/b/c").relative_link_to(&p("x")), "../../x");
        assert_eq!(p("a/b").relative_link_to(&p("a/c")), "c");
    }

    #[test]
    fn starts_with_is_component_wise() {
        let p = |s: &str| SafePath::new(s).unwrap();
        assert!(p("usr/bin/ls").starts_with(&p("usr/bin")));
        assert!(p("usr/bin").starts_with(&p("usr/bin")));
        assert!(!p("usr/binx/ls").starts_with(&p("usr/bin")));
    }

    fn tree() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("usr/bin")).unwrap();
        std::fs::write(t.path().join("usr/bin/ls"), b"ls").unwrap();
        std::os::unix::fs::symlink("usr", t.path().join("link")).unwrap();
        std::os::unix::fs::symlink("usr/bin", t.path().join("bin")).unwrap();
        std::os::unix::fs::symlink("/usr/bin/ls", t.path().join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../../../usr/bin/ls", t.path().join("up")).unwrap();
        t
    }

    #[test]
    fn both_resolvers_refuse_symlinked_parents_and_stay_in_root() {
        let t = tree();
        for r in [Resolver::Openat2, Resolver::Walk] {
            let root = Root::open(t.path()).unwrap().with_resolver(r);
            assert!(root.open_dir("usr/bin").is_ok(), "{r:?}");
            let err = root.open_dir("link/bin").unwrap_err();
            assert_eq!(
                err.raw_os_error(),
                Some(Errno::LOOP.raw_os_error()),
                "{r:?}"
            );
            for p in ["abs", "up", "link/bin/ls"] {
                let fd = root
                    .open_resolved(&SafePath::new(p).unwrap(), OFlags::RDONLY)
                    .unwrap();
                let mut s = String::new();
                std::io::Read::read_to_string(&mut std::fs::File::from(fd), &mut s).unwrap();
                assert_eq!(s, "ls", "{r:?} {p}");
            }
        }
    }
}
