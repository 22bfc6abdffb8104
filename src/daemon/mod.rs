//! The daemon: everything before the first request and around the last. The verdict
//! (serve or refuse), the bind guard, binding or inheriting sockets, signals, SIGHUP
//! reloads (and `gatewayd reload`, which asks for one) and systemd. Declarations and re-exports only.

pub mod control;
pub mod guard;
pub mod key_book;
pub mod keys_cli;
pub mod life;
pub mod reload;
pub mod report;
pub mod startup;
pub mod swap;
pub mod systemd;
pub mod verdict;
pub mod workers;

pub use life::{run, DaemonError};
