//! One judgment for `serve` and `check-config`: from flags, env, config file, key sources and inherited sockets to serve-or-refuse.
//!
//! Both commands call [`judge`] and nothing else decides; `check-config` prints the
//! verdict, `serve` acts on it. So the two can never disagree about an environment.

use std::net::SocketAddr;

use super::guard::{self, GuardError, Resolver};
use super::startup::{self, StartupError};
use super::systemd::{self, Inherited};
use crate::config::admin::load_admin_key;
use crate::config::cli::ServeArgs;
use crate::config::keys::{self, Env, KeyError, KeySet};
use crate::config::tls::TlsError;
use crate::config::{Config, ConfigError};
use crate::http::hardening::check_cors_origins;
use crate::http::tls::ListenerTls;
use crate::upstream::{Registry, UpstreamError};

/// Everything `serve` needs, judged and accepted.
pub struct Verdict {
    pub config: Config,
    pub keys: KeySet,
    /// The admin key (`[admin]`), `None` when the admin API is off.
    pub admin_keys: Option<KeySet>,
    pub plan: Plan,
    /// Sockets systemd passed, each already judged; `None` when none were passed.
    pub inherited: Option<Vec<Inherited>>,
    pub registry: Registry,
    /// `[server.tls]`, its certificate and key already read and checked.
    pub tls: Option<std::sync::Arc<ListenerTls>>,
    /// Said once at start by `serve` (a log warning) and `check-config` (stderr).
    pub warnings: Vec<String>,
}

/// What the guard accepted, decided before any socket exists.
pub struct Plan {
    /// `None` when systemd passes the sockets.
    pub main: Option<Vec<SocketAddr>>,
    pub metrics: Option<Vec<SocketAddr>>,
    /// `[admin] listen`, when the admin API is on.
    pub admin: Option<Vec<SocketAddr>>,
}

/// Why gatewayd would not serve. Each message names the problem and the fix.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error(transparent)]
    Startup(#[from] StartupError),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("--metrics-addr {0:?} must be HOST:PORT, e.g. 127.0.0.1:9464")]
    MetricsAddr(String),
    #[error("[admin] listen {0:?} must be HOST:PORT, e.g. 127.0.0.1:8643")]
    AdminListen(String),
    #[error("{0}")]
    Policy(String),
}

impl From<GuardError> for Refusal {
    fn from(err: GuardError) -> Self {
        Refusal::Startup(StartupError::Refused(err))
    }
}

impl Refusal {
    /// 78 (EX_CONFIG) for anything the operator must fix in the configuration; 1 for a
    /// passed socket that cannot be used.
    pub fn exit_code(&self) -> u8 {
        match self {
            Refusal::Startup(err) => err.exit_code(),
            _ => 78,
        }
    }
}

/// The single judgment. `env` supplies the key sources and CORS origins; sockets passed
/// by systemd are taken (LISTEN_FDS / LISTEN_PID, exactly as serving would) and judged.
pub fn judge(args: &ServeArgs, env: &dyn Env, resolver: &dyn Resolver) -> Result<Verdict, Refusal> {
    let config = Config::load(args, env.var("API_SERVER_CORS_ORIGINS"))?;
    let keys = keys::load(env, &config.key_entries)?;
    let admin_keys = load_admin_key(env, &config.admin)?;
    if let Some(admin) = &admin_keys {
        // Client listeners must refuse the admin key: it may be in no client key set.
        if admin
            .keys
            .iter()
            .any(|a| keys.keys.iter().any(|k| k.digest == a.digest))
        {
            return Err(KeyError::AdminIsClientKey.into());
        }
    }
    let strong_key = !keys.is_empty();
    check_cors_origins(&config.cors_origins, !strong_key).map_err(Refusal::Policy)?;
    check_key_required(&config, strong_key)?;
    let inherited = systemd::inherited_sockets(strong_key)?;
    let plan = plan(&config, strong_key, inherited.is_some(), resolver)?;
    let registry = Registry::with_routing(&config.upstreams, &config.routing)?;
    let tls = match &config.tls {
        Some(files) => Some(std::sync::Arc::new(ListenerTls::load(files)?)),
        None => None,
    };
    let warnings = plaintext_warning(&config, &plan, inherited.as_deref())
        .into_iter()
        .collect();
    Ok(Verdict {
        config,
        keys,
        admin_keys,
        plan,
        inherited,
        registry,
        tls,
        warnings,
    })
}

/// Keys in clear text: a TCP address other machines can reach, served without TLS,
/// unless `[server] allow_plaintext` says TLS ends in front of gatewayd.
fn plaintext_warning(
    config: &Config,
    plan: &Plan,
    inherited: Option<&[Inherited]>,
) -> Option<String> {
    if config.tls.is_some() || config.allow_plaintext {
        return None;
    }
    let mut exposed: Vec<SocketAddr> = plan
        .main
        .iter()
        .chain(&plan.metrics)
        .flatten()
        .copied()
        .collect();
    exposed.extend(
        inherited
            .unwrap_or_default()
            .iter()
            .filter_map(|socket| match socket {
                Inherited::Tcp(tcp) => tcp.local_addr().ok(),
                Inherited::Unix(_) => None,
            }),
    );
    let first = exposed
        .iter()
        .find(|addr| guard::exposure(addr) == guard::Exposure::Network)?;
    Some(format!(
        "serving plain HTTP on {first}, which other machines can reach: API keys and \
         prompts travel in clear text. Configure [server.tls] cert_file and key_file, or \
         terminate TLS in a reverse proxy, list it in [server] trusted_proxies and set \
         [server] allow_plaintext = true"
    ))
}

/// `require_key`, and trusted proxies (a proxy means other machines reach gatewayd),
/// each refuse keyless mode even on loopback.
pub(super) fn check_key_required(config: &Config, strong_key: bool) -> Result<(), Refusal> {
    if strong_key {
        return Ok(());
    }
    if config.require_key {
        return Err(Refusal::Policy(
            "[server] require_key = true, but no API key is configured. Set \
             API_SERVER_KEY_FILE (or API_SERVER_KEY, systemd LoadCredential=api_server_key, \
             or [[keys]]); `gatewayd keygen` prints a strong key"
                .into(),
        ));
    }
    if !config.trusted_proxies.is_empty() {
        return Err(Refusal::Policy(
            "[server] trusted_proxies is set, so a reverse proxy carries other machines' \
             requests to this gatewayd, but no API key is configured: everyone the proxy \
             serves could use it. Configure a key (API_SERVER_KEY_FILE), or remove \
             trusted_proxies"
                .into(),
        ));
    }
    Ok(())
}

/// Every address serve would bind, judged. `main` is `None` when systemd passes sockets.
pub fn plan(
    config: &Config,
    strong_key: bool,
    inherited: bool,
    resolver: &dyn Resolver,
) -> Result<Plan, Refusal> {
    let main = if inherited {
        None
    } else {
        Some(startup::plan(
            &config.host,
            config.port,
            strong_key,
            resolver,
        )?)
    };
    let metrics = match &config.metrics_addr {
        Some(addr) => {
            let (host, port) =
                split_host_port(addr).ok_or_else(|| Refusal::MetricsAddr(addr.clone()))?;
            Some(startup::plan(host, port, strong_key, resolver)?)
        }
        None => None,
    };
    let admin = match config.admin.enabled {
        true => Some(admin_plan(config, resolver)?),
        false => None,
    };
    Ok(Plan {
        main,
        metrics,
        admin,
    })
}

/// The admin listener, judged by the same guard as the client listeners (it always has
/// its strong admin key). Beyond them: the admin key can create keys, so it never
/// crosses a network in clear text. A non-loopback admin address needs [server.tls], or
/// `allow_plaintext` saying TLS ends in front of gatewayd.
fn admin_plan(config: &Config, resolver: &dyn Resolver) -> Result<Vec<SocketAddr>, Refusal> {
    let listen = &config.admin.listen;
    let (host, port) =
        split_host_port(listen).ok_or_else(|| Refusal::AdminListen(listen.clone()))?;
    let addrs = startup::plan(host, port, true, resolver)?;
    let exposed = addrs
        .iter()
        .find(|addr| guard::exposure(addr) == guard::Exposure::Network);
    if let (Some(addr), None, false) = (exposed, &config.tls, config.allow_plaintext) {
        return Err(Refusal::Policy(format!(
            "refusing to serve the admin API on {addr} in plain HTTP: other machines can              reach it, and the admin key would cross the network in clear text. Set [admin]              listen to a loopback address (127.0.0.1:8643), or configure [server.tls], or,              when TLS ends in a proxy in front of gatewayd, set [server] allow_plaintext = true"
        )));
    }
    Ok(addrs)
}

fn split_host_port(addr: &str) -> Option<(&str, u16)> {
    let (host, port) = addr.rsplit_once(':')?;
    Some((host, port.parse().ok()?))
}

/// How the gateway authenticates, for check-config and the startup line.
pub fn auth_mode(keys: &KeySet) -> String {
    if keys.is_empty() {
        "keyless (loopback only)".into()
    } else {
        format!("api key required (keys: {})", keys.names().join(", "))
    }
}
