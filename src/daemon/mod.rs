//! The daemon: everything before the first request and around the last. The verdict
//! (serve or refuse), the bind guard, binding or inheriting sockets, signals, SIGHUP
//! reloads and systemd. Declarations and re-exports only.

pub mod guard;
pub mod life;
pub mod reload;
pub mod startup;
pub mod systemd;
pub mod verdict;

pub use life::{run, DaemonError};
