//! The transaction: [`apply`] moves a plan forward (journal, swaps, durability,
//! smoke, commit point), [`undo`] is the one loop that moves actions backwards,
//! [`rollback`] undoes a recorded run and [`recovery`] settles runs a crash
//! interrupted. Each mutating entry point takes the lock and settles pending
//! journals before anything else (A3, L1).

pub(crate) mod apply;
pub(crate) mod package;
pub(crate) mod recovery;
pub(crate) mod rollback;
pub(crate) mod undo;
