//! Holds an fcntl write lock on a file (as dpkg and apt lock `var/lib/dpkg/lock*`)
//! until its standard input closes; prints `locked` once it holds it. For tests of M3.

use std::io::{BufRead, Write};

fn main() {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| panic!("usage: dpkglockholder FILE"));
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    rustix::fs::fcntl_lock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive)
        .unwrap_or_else(|e| panic!("locking {path}: {e}"));
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "locked");
    let _ = out.flush();
    drop(out);
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
}
