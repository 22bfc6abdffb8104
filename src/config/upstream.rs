//! One `[[upstreams]]` entry as written: where it is, its credentials, models, timeouts, wire
//! options and routing settings.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

/// One provider: OpenAI-compatible, or speaking Anthropic's Messages API (`api`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    pub name: String,
    /// Base URL including the version path, e.g. https://api.openai.com/v1.
    pub base_url: String,
    /// Which API the upstream speaks: OpenAI's (chat completions and the rest) or
    /// Anthropic's Messages API, to which `/v1/messages` is forwarded byte for byte.
    #[serde(default)]
    pub api: UpstreamApi,
    /// Env var holding the upstream's key; read once at startup.
    pub api_key_env: Option<String>,
    /// File holding the upstream's key (one trailing newline stripped).
    pub api_key_file: Option<PathBuf>,
    /// Exact model names or trailing-`*` patterns; `"*"` serves any model.
    #[serde(default)]
    pub models: Vec<String>,
    /// Client-facing name → upstream model name.
    #[serde(default)]
    pub aliases: BTreeMap<String, String>,
    #[serde(default = "defaults::connect_timeout")]
    pub connect_timeout_secs: u64,
    #[serde(default = "defaults::first_byte_timeout")]
    pub first_byte_timeout_secs: u64,
    #[serde(default = "defaults::idle_timeout")]
    pub idle_timeout_secs: u64,
    /// `/models` of a pattern upstream must answer within this; a slow one must not
    /// hold up the whole list.
    #[serde(default = "defaults::models_timeout")]
    pub models_timeout_secs: u64,
    /// Header that carries the upstream key: `api-key` for Azure OpenAI, `x-api-key`
    /// for some others. Default `Authorization` (`x-api-key` with `api = "anthropic"`).
    pub auth_header: Option<String>,
    /// Scheme before the key in `auth_header`; `""` sends the bare key. Default `Bearer`
    /// (`""` with `api = "anthropic"`).
    pub auth_scheme: Option<String>,
    /// Static headers sent on every request; a value `env:NAME` or `file:PATH` is read
    /// once at startup and never logged.
    #[serde(default)]
    pub headers: BTreeMap<String, HeaderSource>,
    /// Fixed query parameters on every upstream URL, e.g. Azure's `api-version`.
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    /// Client request headers forwarded beyond the default safe list (exact names or a
    /// trailing `*`). Credentials, cookies and proxy headers are never forwarded.
    #[serde(default)]
    pub forward_headers: Vec<String>,
    /// How a complete event stream ends; anything else is a truncated stream.
    #[serde(default)]
    pub stream_end: StreamEnd,
    /// How `/v1/responses` reaches this upstream: translated onto chat completions, or
    /// passed through to its own `/v1/responses` (which then holds the content).
    #[serde(default)]
    pub responses: ResponsesMode,
    /// The most output tokens this upstream's models accept. An Anthropic Messages
    /// request asking for more (Claude Code asks for 32,000) is clamped to it, rather than
    /// refused by a local model with a smaller context.
    pub max_output_tokens: Option<u64>,
    /// PEM CA certificates trusted for this upstream, besides the OS store and the
    /// built-in roots (an upstream behind a private CA). Re-read on SIGHUP.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (chain allowed) for mutual TLS; needs `client_key_file`.
    pub client_cert_file: Option<PathBuf>,
    /// PEM private key of `client_cert_file`. Never logged.
    pub client_key_file: Option<PathBuf>,
    /// Share of a `weighted` pool's requests, relative to the other upstreams' weights.
    #[serde(default = "defaults::weight")]
    pub weight: u32,
    /// Tier: 0 is tried first; a higher tier is used only while every upstream of the
    /// tiers before it is open or at its `max_in_flight`.
    #[serde(default)]
    pub priority: u32,
    /// The most requests (streams included) sent to it at once; 0 = no limit.
    #[serde(default)]
    pub max_in_flight: u32,
    /// Overrides `[routing] failure_threshold` for this upstream.
    pub failure_threshold: Option<u32>,
    /// Overrides `[routing] cooldown_secs` for this upstream.
    pub cooldown_secs: Option<u64>,
    /// Overrides `[routing] max_cooldown_secs` for this upstream.
    pub max_cooldown_secs: Option<u64>,
    /// What a probe asks for, below `base_url`: `models` unless set.
    pub probe_path: Option<String>,
}

/// Which API an upstream speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamApi {
    /// OpenAI's: chat completions, completions, embeddings, and optionally Responses.
    #[default]
    Openai,
    /// Anthropic's Messages API (`messages`, `messages/count_tokens`, `models`), with
    /// the key in `x-api-key` and an `anthropic-version` header. Anthropic itself or a
    /// compatible server.
    Anthropic,
}

impl UpstreamApi {
    /// The name as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamApi::Openai => "openai",
            UpstreamApi::Anthropic => "anthropic",
        }
    }
}

/// Whether an upstream implements the Responses API itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResponsesMode {
    /// Translated onto `/v1/chat/completions`; gatewayd stores the state.
    #[default]
    Translate,
    /// Forwarded byte for byte to the upstream's `/v1/responses`; gatewayd records only
    /// which key owns each response id, and at which upstream.
    Native,
}

/// A static upstream header value as written: literal, `env:NAME` or `file:PATH`. Its
/// `Debug` shows only where the value comes from, never the value.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct HeaderSource(pub String);

impl std::fmt::Debug for HeaderSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.split_once(':') {
            Some((kind @ ("env" | "file"), _)) => write!(f, "{kind}:[REDACTED]"),
            _ => f.write_str("[REDACTED]"),
        }
    }
}

/// How an upstream marks the end of a complete stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamEnd {
    /// `data: [DONE]`, as OpenAI sends it. A stream that ends without it is truncated.
    #[default]
    Done,
    /// The end of the body, for an upstream known to omit `[DONE]`.
    Eof,
}

pub(super) mod defaults {
    pub fn connect_timeout() -> u64 {
        5
    }
    pub fn first_byte_timeout() -> u64 {
        60
    }
    pub fn idle_timeout() -> u64 {
        60
    }
    pub fn models_timeout() -> u64 {
        5
    }
    pub fn weight() -> u32 {
        1
    }
}
