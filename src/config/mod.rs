//! Config: plain data, parsed and validated once, immutable afterwards. It imports no
//! runtime module; the runtime takes its settings (and small types such as
//! `SessionLimits` or `RedisUrl`) from here. Declarations and re-exports only.

pub mod admin;
pub mod changes;
pub mod cli;
pub mod file_read;
pub mod keys;
pub mod left_behind;
pub mod limits;
mod load;
pub mod proxies;
pub mod routing;
mod sections;
pub mod telemetry;
pub mod tls;
mod upstream;

pub use admin::AdminSection;
pub use limits::{Backend, Limits, RedisFailure, RedisUrl};
pub use load::{reread, Config, ConfigError, FileConfig, STDIN_CONFIG};
pub use proxies::{parse_trusted, ForwardedHeader};
pub use routing::{BreakerPolicy, ModelRouting, RoutingSection, Strategy};
pub use sections::{ResponsesSection, ServerSection, SessionLimits, SessionsSection, ToolPolicy};
pub use telemetry::{TelemetrySection, TraceExport};
pub use tls::TlsFiles;
pub use upstream::{HeaderSource, ResponsesMode, StreamEnd, UpstreamApi, UpstreamConfig};
