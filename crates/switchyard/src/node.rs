//! Node snapshots: what a directory entry is, observed without following it.
//!
//! Contract: [`Node::observe`] never follows the final symlink and never changes the
//! node (file contents are read with `O_NOATIME` when permitted, so hashing does not
//! touch timestamps). `sha256` is the hash of the file bytes for a regular file and of
//! the link text for a symlink; it is what sidecar integrity (S6) checks.

use rustix::fs::{openat, readlinkat, statat, AtFlags, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io;
use std::os::fd::{AsFd, OwnedFd};

/// What kind of node a path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum NodeKind {
    /// Nothing is there.
    Absent,
    /// A regular file.
    File,
    /// A symbolic link.
    Symlink,
    /// A directory.
    Dir,
    /// Anything else (device, FIFO, socket).
    Other,
}

impl NodeKind {
    /// Lower-case name, as in facts.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeKind::Absent => "absent",
            NodeKind::File => "file",
            NodeKind::Symlink => "symlink",
            NodeKind::Dir => "dir",
            NodeKind::Other => "other",
        }
    }
}

/// A node's identity and metadata (the sidecar content of S6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Node {
    /// What kind of node it is.
    pub kind: NodeKind,
    /// Link text, for symlinks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_dest: Option<String>,
    /// Permission bits, set-id and sticky bits included (`st_mode & 0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, seconds.
    pub mtime_sec: i64,
    /// Modification time, nanoseconds.
    pub mtime_nsec: i64,
    /// Device number of the filesystem holding it.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
    /// SHA-256 of the file bytes (file) or the link text (symlink).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

impl Node {
    /// The absent node.
    pub fn absent() -> Node {
        Node {
            kind: NodeKind::Absent,
            link_dest: None,
            mode: 0,
            uid: 0,
            gid: 0,
            size: 0,
            mtime_sec: 0,
            mtime_nsec: 0,
            dev: 0,
            ino: 0,
            sha256: None,
        }
    }

    /// The node a `stat` describes (no link text, no hash).
    // `Stat` field types differ between architectures; the casts are not no-ops everywhere.
    #[allow(clippy::unnecessary_cast)]
    pub fn from_stat(st: &Stat) -> Node {
        Node {
            kind: kind_of(st),
            link_dest: None,
            mode: st.st_mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
            size: st.st_size as u64,
            mtime_sec: st.st_mtime as i64,
            mtime_nsec: st.st_mtime_nsec as i64,
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
            sha256: None,
        }
    }

    /// Observes `name` in `dir`; with `hash`, also computes `sha256`.
    pub fn observe(dir: impl AsFd, name: &str, hash: bool) -> io::Result<Node> {
        let dir = dir.as_fd();
        let Some(st) = lstat(dir, name)? else {
            return Ok(Node::absent());
        };
        let mut n = Node::from_stat(&st);
        if n.kind == NodeKind::Symlink {
            n.link_dest = Some(read_link(dir, name)?);
        }
        n.sha256 = match (hash, n.kind) {
            (true, NodeKind::File) => Some(sha256_file(&open_noatime(dir, name)?)?),
            (true, NodeKind::Symlink) => n.link_dest.as_deref().map(|d| sha256_bytes(d.as_bytes())),
            _ => None,
        };
        Ok(n)
    }

    /// Whether `other` is the same node: same kind, device and inode number. The
    /// kind guards against a freed inode number being reused for a new node.
    pub fn same_inode(&self, other: &Node) -> bool {
        self.kind != NodeKind::Absent
            && self.kind == other.kind
            && self.dev == other.dev
            && self.ino == other.ino
    }
}

/// `lstat` of `name` in `dir`; `None` when it does not exist.
pub fn lstat(dir: impl AsFd, name: &str) -> io::Result<Option<Stat>> {
    match statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The [`NodeKind`] of a stat result.
pub fn kind_of(st: &Stat) -> NodeKind {
    match FileType::from_raw_mode(st.st_mode) {
        FileType::RegularFile => NodeKind::File,
        FileType::Symlink => NodeKind::Symlink,
        FileType::Directory => NodeKind::Dir,
        _ => NodeKind::Other,
    }
}

/// Reads a symlink's text, which must be UTF-8.
pub fn read_link(dir: impl AsFd, name: &str) -> io::Result<String> {
    let t = readlinkat(dir, name, Vec::new())?;
    t.into_string()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "symlink text is not UTF-8"))
}

/// Opens a regular file for reading without updating its atime when allowed.
pub fn open_noatime(dir: impl AsFd, name: &str) -> io::Result<OwnedFd> {
    let base = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match openat(dir.as_fd(), name, base | OFlags::NOATIME, Mode::empty()) {
        Err(Errno::PERM) => Ok(openat(dir, name, base, Mode::empty())?),
        r => Ok(r?),
    }
}

/// SHA-256 (lower-case hex) of everything readable from `fd`.
pub fn sha256_file(fd: &OwnedFd) -> io::Result<String> {
    digest_file::<Sha256>(std::fs::File::from(fd.try_clone()?))
}

/// The digest `D` (lower-case hex) of everything readable from `f`, read in 256 KiB
/// chunks through a buffer that is never zeroed (a plan hashes thousands of files).
pub(crate) fn digest_file<D: Digest + io::Write>(f: std::fs::File) -> io::Result<String> {
    let mut h = D::new();
    io::copy(&mut io::BufReader::with_capacity(256 * 1024, f), &mut h)?;
    Ok(hex(&h.finalize()))
}

/// SHA-256 (lower-case hex) of `b`.
pub fn sha256_bytes(b: &[u8]) -> String {
    hex(&Sha256::digest(b))
}

fn hex(b: &[u8]) -> String {
    use std::fmt::Write;
    b.iter()
        .fold(String::with_capacity(b.len() * 2), |mut s, x| {
            let _ = write!(s, "{x:02x}");
            s
        })
}
