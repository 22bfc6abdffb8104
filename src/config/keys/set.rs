//! Client keys: where they come from (env, key files, `[[keys]]`), digests and `keygen`.

use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine;
use sha2::{Digest, Sha256};

use super::file::{self as keyfile, KeyFileError};
use super::policy::{check_strength, WeakKey};
use super::secret::Secret;
use super::tenancy::{KeyOrigin, KeyPolicy, PolicyText};

/// SHA-256 of a key; what gatewayd keeps and compares instead of the key itself.
pub type KeyDigest = [u8; 32];

pub fn digest(token: &[u8]) -> KeyDigest {
    Sha256::digest(token).into()
}

/// One accepted client key, by name. The name owns sessions and appears in logs.
#[derive(Clone)]
pub struct ClientKey {
    pub name: String,
    pub digest: KeyDigest,
    /// Per-key overrides of `[limits]`; `None` uses the global value.
    pub requests_per_minute: Option<u32>,
    pub concurrent_requests: Option<u32>,
    /// Models, token budgets, expiry and the disabled switch.
    pub policy: KeyPolicy,
    pub origin: KeyOrigin,
}

impl fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientKey")
            .field("name", &self.name)
            .field("digest", &"[REDACTED]")
            .finish()
    }
}

/// The keys in force. Empty means keyless mode, which the guard allows on loopback only.
#[derive(Clone, Debug, Default)]
pub struct KeySet {
    pub keys: Vec<std::sync::Arc<ClientKey>>,
    /// Problems that do not stop gatewayd (a key file readable by others), logged once
    /// at start and on each reload.
    pub warnings: Vec<String>,
}

impl KeySet {
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
    pub fn names(&self) -> Vec<&str> {
        self.keys.iter().map(|k| k.name.as_str()).collect()
    }
}

/// A `[[keys]]` entry as written in the config file: a name and a digest, never a key.
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyEntry {
    /// Who this key belongs to; sessions are owned by this name, so rotating keeps them.
    pub name: String,
    /// Lowercase or uppercase hex SHA-256 of the key (`gatewayd keygen --sha256`).
    pub sha256: String,
    pub requests_per_minute: Option<u32>,
    pub concurrent_requests: Option<u32>,
    /// The models this key may use: exact names or trailing-`*` patterns.
    pub models: Option<Vec<String>>,
    /// Input plus output tokens per UTC day, per UTC month, and ever.
    pub tokens_per_day: Option<u64>,
    pub tokens_per_month: Option<u64>,
    pub tokens_total: Option<u64>,
    /// RFC 3339; from then on the key gets 401.
    pub expires_at: Option<String>,
    /// Refuses the key (401) without removing it, so its sessions and usage stay.
    pub disabled: Option<bool>,
}

impl KeyEntry {
    /// The entry's policy as written, for the one check every source of keys shares.
    pub fn policy_text(&self) -> PolicyText {
        PolicyText {
            models: self.models.clone(),
            tokens_per_day: self.tokens_per_day,
            tokens_per_month: self.tokens_per_month,
            tokens_total: self.tokens_total,
            expires_at: self.expires_at.clone(),
            disabled: self.disabled,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("both API_SERVER_KEY and API_SERVER_KEY_FILE are set; this is ambiguous. Set exactly one of them")]
    AmbiguousEnv,
    #[error("a key is given both in the environment and in $CREDENTIALS_DIRECTORY/api_server_key; this is ambiguous. Keep exactly one")]
    AmbiguousCredential,
    #[error(
        "cannot use key file {path}: {reason}. gatewayd never falls back to running without a key"
    )]
    Unreadable { path: PathBuf, reason: String },
    #[error("{source_name} is not a strong key: {problem}. Generate one with `gatewayd keygen` (or `openssl rand -base64 32`)")]
    Weak {
        source_name: String,
        problem: WeakKey,
    },
    #[error("CREDENTIALS_DIRECTORY names {}, which does not exist. systemd creates it for LoadCredential=; unset CREDENTIALS_DIRECTORY or point it at the credentials directory. gatewayd never falls back to running without a key", .0.display())]
    MissingCredentialsDirectory(PathBuf),
    #[error("both GATEWAYD_ADMIN_KEY and [admin] key_file are set; this is ambiguous. Set exactly one of them")]
    AmbiguousAdmin,
    #[error("[admin] enabled = true, but no admin key is configured. Put a key from `gatewayd keygen` in a file named by [admin] key_file (chmod 600), or in GATEWAYD_ADMIN_KEY; or set [admin] enabled = false")]
    MissingAdmin,
    #[error("the admin key is also a client key, so client listeners would accept it. Give the admin API a key of its own (`gatewayd keygen`)")]
    AdminIsClientKey,
    #[error("[[keys]] entry {name:?}: {problem}")]
    BadEntry { name: String, problem: String },
}

/// A fresh key: `gwd_` + 32 bytes from the OS CSPRNG in base64url without padding.
/// The prefix lets secret scanners recognise a leaked gatewayd key. Retries the rare
/// draw that trips a structural rule, so every key it returns passes the policy.
pub fn generate() -> Result<String, getrandom::Error> {
    loop {
        let mut bytes = [0u8; 32];
        getrandom::getrandom(&mut bytes)?;
        let key = encode_key(&bytes);
        if check_strength(&key).is_ok() {
            return Ok(key);
        }
    }
}

/// The `keygen` format for 32 random bytes (tests check it without `generate`'s retry).
pub fn encode_key(bytes: &[u8; 32]) -> String {
    format!(
        "gwd_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// Reads the environment; injected so key loading is testable without touching real env vars.
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
}

pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var_os(name).map(|v| v.to_string_lossy().into_owned())
    }
}

/// Loads every key source, applying the strong-key policy to each plaintext key.
/// Sources: API_SERVER_KEY, API_SERVER_KEY_FILE, $CREDENTIALS_DIRECTORY/api_server_key
/// (all three name the key "default"; at most one may be set) and `[[keys]]` digests.
pub fn load(env: &dyn Env, entries: &[KeyEntry]) -> Result<KeySet, KeyError> {
    let mut keys = Vec::new();
    let mut warnings = Vec::new();
    let inline = env.var("API_SERVER_KEY").filter(|v| !v.is_empty());
    let file = env.var("API_SERVER_KEY_FILE").filter(|v| !v.is_empty());
    let plaintext = match (inline, file) {
        (Some(_), Some(_)) => return Err(KeyError::AmbiguousEnv),
        (Some(key), None) => Some(("API_SERVER_KEY".to_string(), Secret::new(key))),
        (None, Some(path)) => Some((
            "API_SERVER_KEY_FILE".to_string(),
            read_key_file(Path::new(&path), &mut warnings)?,
        )),
        (None, None) => None,
    };
    let credential = match env.var("CREDENTIALS_DIRECTORY").filter(|v| !v.is_empty()) {
        Some(dir) => {
            // systemd creates the directory before it starts the service, so a missing
            // one is a misconfiguration (a typo, a stale path), never "no credential".
            if let Err(err) = std::fs::metadata(&dir) {
                if err.kind() == std::io::ErrorKind::NotFound {
                    return Err(KeyError::MissingCredentialsDirectory(dir.into()));
                }
            }
            let path = Path::new(&dir).join("api_server_key");
            // Absent only when nothing exists there: a dangling link or EACCES refuses.
            if keyfile::present(&path)? {
                Some((
                    "credential api_server_key".to_string(),
                    read_key_file(&path, &mut warnings)?,
                ))
            } else {
                None
            }
        }
        None => None,
    };
    let default_key = match (plaintext, credential) {
        (Some(_), Some(_)) => return Err(KeyError::AmbiguousCredential),
        (a, b) => a.or(b),
    };
    if let Some((source_name, secret)) = default_key {
        check_strength(secret.expose()).map_err(|problem| KeyError::Weak {
            source_name,
            problem,
        })?;
        keys.push(ClientKey {
            name: "default".into(),
            digest: digest(secret.expose().as_bytes()),
            requests_per_minute: None,
            concurrent_requests: None,
            policy: KeyPolicy::default(),
            origin: KeyOrigin::Config,
        });
    }
    for entry in entries {
        keys.push(parse_entry(entry)?);
    }
    let mut names: Vec<&str> = keys.iter().map(|k| k.name.as_str()).collect();
    names.sort_unstable();
    if let Some(pair) = names.windows(2).find(|p| p[0] == p[1]) {
        return Err(KeyError::BadEntry {
            name: pair[0].to_string(),
            problem: "this key name is used twice; names must be unique".into(),
        });
    }
    Ok(KeySet {
        keys: keys.into_iter().map(std::sync::Arc::new).collect(),
        warnings,
    })
}

/// A key name as every source must write it: it names sessions, usage rows and log lines.
pub fn is_key_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

fn parse_entry(entry: &KeyEntry) -> Result<ClientKey, KeyError> {
    let bad = |problem: &str| KeyError::BadEntry {
        name: entry.name.clone(),
        problem: problem.into(),
    };
    if !is_key_name(&entry.name) {
        return Err(bad("name must be 1 to 128 characters of A-Z a-z 0-9 - _ ."));
    }
    let mut digest = [0u8; 32];
    hex::decode_to_slice(&entry.sha256, &mut digest).map_err(|_| {
        bad("sha256 must be 64 hex characters (from `gatewayd keygen --sha256`), not a key")
    })?;
    let policy = entry
        .policy_text()
        .check()
        .map_err(|problem| bad(&problem))?;
    Ok(ClientKey {
        name: entry.name.clone(),
        digest,
        requests_per_minute: entry.requests_per_minute,
        concurrent_requests: entry.concurrent_requests,
        policy,
        origin: KeyOrigin::Config,
    })
}

/// A key file's content with exactly one trailing newline stripped; nothing else is
/// trimmed. Regular files only, bounded and under a deadline (see `file.rs`).
fn read_key_file(path: &Path, warnings: &mut Vec<String>) -> Result<Secret, KeyError> {
    let file = keyfile::read(path)?;
    warnings.extend(file.warning);
    Ok(file.secret)
}

impl From<KeyFileError> for KeyError {
    fn from(err: KeyFileError) -> Self {
        KeyError::Unreadable {
            path: err.path,
            reason: err.reason,
        }
    }
}
