//! What a reload changes: the settings that differ between two configs, split into those a running gatewayd applies to new requests and those that need a restart.
//!
//! This is the one place that says which setting reloads live. Each section is taken
//! apart field by field with no `..`, so a field added to the config does not compile
//! until it is judged here.

use std::fmt::Debug;

use super::load::Config;

/// The settings (as written in the config file) that differ, in file order.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// In force for the requests that start after the reload.
    pub live: Vec<&'static str>,
    /// Differ in the file, but the running process keeps the old value until restarted.
    pub restart: Vec<&'static str>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.live.is_empty() && self.restart.is_empty()
    }
}

/// Compares by the `Debug` text, which every config type has; secrets (which `Debug`
/// redacts) are compared by value.
fn differs<T: Debug + ?Sized>(old: &T, new: &T) -> bool {
    format!("{old:?}") != format!("{new:?}")
}

/// A setting that takes effect for the requests that start after a reload.
macro_rules! live {
    ($changes:ident, $old:ident, $new:ident, $name:literal, $($field:ident).+) => {
        if differs(&$old.$($field).+, &$new.$($field).+) {
            $changes.live.push($name);
        }
    };
}

/// A setting the running process took at start: a new value is reported and the old one
/// stays in force until a restart.
macro_rules! restart {
    ($changes:ident, $old:ident, $new:ident, $name:literal, $($field:ident).+) => {
        if differs(&$old.$($field).+, &$new.$($field).+) {
            $changes.restart.push($name);
            $new.$($field).+ = $old.$($field).+.clone();
        }
    };
}

/// The config to run with after a reload from `old` to the file's `new`: the settings
/// that reload live from `new`, the others still from `old`; and what differed.
pub fn apply(old: &Config, mut new: Config) -> (Config, Changes) {
    let mut c = Changes::default();
    // Every field is named, with no `..`, so that a new one must be judged here.
    let Config {
        host: _,
        port: _,
        data_dir: _,
        log_format: _,
        log_filter: _,
        cors_origins: _,
        shutdown_grace: _,
        workers: _,
        stream_keepalive: _,
        max_attempts: _,
        key_entries: _,
        upstreams: _,
        limits: _,
        sessions: _,
        responses: _,
        routing: _,
        telemetry: _,
        traces: _,
        metrics_addr: _,
        trusted_proxies: _,
        forwarded_header: _,
        require_key: _,
        tls: _,
        allow_plaintext: _,
        admin: _,
        // Given by flags, which a reload cannot change.
        upstream_from_flag: _,
        config_path: _,
    } = old;
    let n = &mut new;
    restart!(c, old, n, "server.host", host);
    restart!(c, old, n, "server.port", port);
    restart!(c, old, n, "server.data_dir", data_dir);
    restart!(c, old, n, "server.metrics_addr", metrics_addr);
    restart!(c, old, n, "server.log_format", log_format);
    live!(c, old, n, "server.log_filter", log_filter);
    live!(c, old, n, "server.cors_origins", cors_origins);
    restart!(c, old, n, "server.shutdown_grace_secs", shutdown_grace);
    restart!(c, old, n, "server.workers", workers);
    live!(c, old, n, "server.stream_keepalive_secs", stream_keepalive);
    live!(c, old, n, "server.max_attempts", max_attempts);
    // Also exempts proxies from the per-address connection limit, set at start.
    restart!(c, old, n, "server.trusted_proxies", trusted_proxies);
    live!(c, old, n, "server.forwarded_header", forwarded_header);
    // Judged by the guard before binding.
    restart!(c, old, n, "server.require_key", require_key);
    restart!(c, old, n, "server.allow_plaintext", allow_plaintext);
    // TLS on or off, or other files. New contents of the same files load on every reload.
    restart!(c, old, n, "server.tls", tls);
    // The admin listener and its key are taken at start.
    restart!(c, old, n, "admin", admin);
    live!(c, old, n, "keys", key_entries);
    live!(c, old, n, "upstreams", upstreams);
    live!(c, old, n, "routing", routing);
    limits(&mut c, old, n);
    sessions(&mut c, old, n);
    let super::ResponsesSection {
        unsupported_tools: _,
        retention_days: _,
        max_bytes_per_key: _,
    } = &old.responses;
    live!(
        c,
        old,
        n,
        "responses.unsupported_tools",
        responses.unsupported_tools
    );
    live!(
        c,
        old,
        n,
        "responses.max_bytes_per_key",
        responses.max_bytes_per_key
    );
    restart!(
        c,
        old,
        n,
        "responses.retention_days",
        responses.retention_days
    );
    // The trace export is derived from [telemetry] (reported just below) and the
    // environment, which a reload cannot change: it stays as started.
    n.traces = old.traces.clone();
    restart!(c, old, n, "telemetry", telemetry);
    (new, c)
}

fn limits(c: &mut Changes, old: &Config, n: &mut Config) {
    let super::Limits {
        max_body_bytes: _,
        max_header_bytes: _,
        max_headers: _,
        header_read_timeout_secs: _,
        keepalive_idle_secs: _,
        max_connections: _,
        per_key_requests_per_minute: _,
        per_key_concurrent_requests: _,
        failed_auth_per_minute: _,
        max_connections_per_ip: _,
        unauthenticated_idle_secs: _,
        body_read_timeout_secs: _,
        send_timeout_secs: _,
        backend: _,
        redis_url: _,
        redis_prefix: _,
        redis_timeout_ms: _,
        redis_failure: _,
        redis_lease_ttl_secs: _,
        budget_default_max_tokens: _,
    } = &old.limits;
    live!(c, old, n, "limits.max_body_bytes", limits.max_body_bytes);
    live!(
        c,
        old,
        n,
        "limits.per_key_requests_per_minute",
        limits.per_key_requests_per_minute
    );
    live!(
        c,
        old,
        n,
        "limits.per_key_concurrent_requests",
        limits.per_key_concurrent_requests
    );
    live!(
        c,
        old,
        n,
        "limits.budget_default_max_tokens",
        limits.budget_default_max_tokens
    );
    // The listeners' limits and timeouts, set once when serving starts.
    restart!(
        c,
        old,
        n,
        "limits.max_header_bytes",
        limits.max_header_bytes
    );
    restart!(c, old, n, "limits.max_headers", limits.max_headers);
    restart!(
        c,
        old,
        n,
        "limits.header_read_timeout_secs",
        limits.header_read_timeout_secs
    );
    restart!(
        c,
        old,
        n,
        "limits.keepalive_idle_secs",
        limits.keepalive_idle_secs
    );
    restart!(c, old, n, "limits.max_connections", limits.max_connections);
    restart!(
        c,
        old,
        n,
        "limits.max_connections_per_ip",
        limits.max_connections_per_ip
    );
    restart!(
        c,
        old,
        n,
        "limits.unauthenticated_idle_secs",
        limits.unauthenticated_idle_secs
    );
    restart!(
        c,
        old,
        n,
        "limits.body_read_timeout_secs",
        limits.body_read_timeout_secs
    );
    restart!(
        c,
        old,
        n,
        "limits.send_timeout_secs",
        limits.send_timeout_secs
    );
    // The failed-auth counts and the Redis connection would be lost with a rebuild.
    restart!(
        c,
        old,
        n,
        "limits.failed_auth_per_minute",
        limits.failed_auth_per_minute
    );
    restart!(c, old, n, "limits.backend", limits.backend);
    let url = |config: &Config| config.limits.redis_url.as_ref().map(|url| url.0.clone());
    if url(old) != url(n) {
        c.restart.push("limits.redis_url");
        n.limits.redis_url = old.limits.redis_url.clone();
    }
    restart!(c, old, n, "limits.redis_prefix", limits.redis_prefix);
    restart!(
        c,
        old,
        n,
        "limits.redis_timeout_ms",
        limits.redis_timeout_ms
    );
    restart!(c, old, n, "limits.redis_failure", limits.redis_failure);
    restart!(
        c,
        old,
        n,
        "limits.redis_lease_ttl_secs",
        limits.redis_lease_ttl_secs
    );
}

fn sessions(c: &mut Changes, old: &Config, n: &mut Config) {
    let super::SessionsSection {
        database_url: _,
        max_messages: _,
        max_bytes: _,
        max_sessions_per_key: _,
        busy_timeout_secs: _,
        retention_days: _,
        max_database_bytes: _,
        cache_bytes: _,
    } = &old.sessions;
    let url = |config: &Config| {
        let url = config.sessions.database_url.as_ref();
        url.map(|url| url.expose().to_owned())
    };
    if url(old) != url(n) {
        c.restart.push("sessions.database_url");
        n.sessions.database_url = old.sessions.database_url.clone();
    }
    live!(c, old, n, "sessions.max_messages", sessions.max_messages);
    live!(c, old, n, "sessions.max_bytes", sessions.max_bytes);
    live!(
        c,
        old,
        n,
        "sessions.max_sessions_per_key",
        sessions.max_sessions_per_key
    );
    live!(
        c,
        old,
        n,
        "sessions.busy_timeout_secs",
        sessions.busy_timeout_secs
    );
    // The purge task and the database's size cap are set up when the store opens.
    restart!(
        c,
        old,
        n,
        "sessions.retention_days",
        sessions.retention_days
    );
    restart!(
        c,
        old,
        n,
        "sessions.max_database_bytes",
        sessions.max_database_bytes
    );
    // The history cache is sized when the store opens.
    restart!(c, old, n, "sessions.cache_bytes", sessions.cache_bytes);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::cli::ServeArgs;

    fn config(toml: &str) -> Config {
        let dir = std::env::temp_dir().join(format!("gwd-changes-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!(
            "{:x}.toml",
            toml.len() * 31 + toml.bytes().map(usize::from).sum::<usize>()
        ));
        std::fs::write(&path, toml).unwrap();
        let args = ServeArgs {
            config: Some(path),
            ..Default::default()
        };
        Config::load(&args, None).unwrap()
    }

    #[test]
    fn the_same_file_changes_nothing() {
        let text = "[limits]\nper_key_requests_per_minute = 5\n";
        assert!(apply(&config(text), config(text)).1.is_empty());
    }

    #[test]
    fn live_settings_and_restart_settings_are_told_apart() {
        let old = config("[server]\nport = 9000\n");
        let new = config(
            "[server]\nport = 9001\ncors_origins = [\"https://a.example\"]\n\
             [limits]\nper_key_requests_per_minute = 5\n[sessions]\nmax_messages = 7\n",
        );
        let (in_force, changes) = apply(&old, new);
        assert_eq!(in_force.port, 9000, "the port in use stays until a restart");
        assert_eq!(in_force.limits.per_key_requests_per_minute, 5);
        assert_eq!(
            changes.live,
            [
                "server.cors_origins",
                "limits.per_key_requests_per_minute",
                "sessions.max_messages"
            ]
        );
        assert_eq!(changes.restart, ["server.port"]);
    }

    #[test]
    fn a_new_database_password_is_a_change() {
        let old = config("[sessions]\ndatabase_url = \"postgres://gw:one@db/gw\"\n");
        let new = config("[sessions]\ndatabase_url = \"postgres://gw:two@db/gw\"\n");
        assert_eq!(apply(&old, new).1.restart, ["sessions.database_url"]);
    }
}
