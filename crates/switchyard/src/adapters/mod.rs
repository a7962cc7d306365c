//! Adapters: the pluggable pieces around the transaction — the lock manager (L1–L4)
//! and the smoke runner (H2–H4). The engine depends only on the traits here.

pub(crate) mod dpkg;
pub mod lock;
pub mod smoke;
