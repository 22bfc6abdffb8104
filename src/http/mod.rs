//! The edge: everything between a socket and a handler. Serving and admission, the client
//! address, deadlines, the edge service (request id, hardening, security headers), the auth
//! boundary, request bodies and TLS. It never imports the gateway (they are siblings), nor
//! the api above it. Declarations only.

pub mod admission;
pub mod auth;
pub mod body;
pub mod body_deadline;
pub mod client_addr;
pub mod dialect;
pub mod edge;
pub mod hardening;
pub mod hold;
pub mod listener;
pub mod peer;
pub mod preface;
pub mod relief;
pub mod server;
pub mod state;
pub mod tls;
pub mod watchdog;
