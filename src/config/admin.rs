//! `[admin]`: the admin API's own listener (off by default) and where its key comes from; loading that key under the same rules as client keys.

use std::path::PathBuf;

use super::keys::{
    check_strength, digest, file as keyfile, ClientKey, Env, KeyError, KeyOrigin, KeySet, Secret,
};

/// The variable that carries the admin key (or use `[admin] key_file`).
pub const ADMIN_KEY_ENV: &str = "GATEWAYD_ADMIN_KEY";

/// `[admin]` as written.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSection {
    /// Opens the admin API (runtime keys, usage). Off unless asked for.
    pub enabled: bool,
    /// `HOST:PORT` of its own listener, judged by the startup guard like the main one.
    pub listen: String,
    /// A file holding the admin key (or set GATEWAYD_ADMIN_KEY; exactly one of them).
    pub key_file: Option<PathBuf>,
}

impl Default for AdminSection {
    fn default() -> Self {
        AdminSection {
            enabled: false,
            listen: "127.0.0.1:8643".into(),
            key_file: None,
        }
    }
}

/// The admin key as a one-key set named `admin`, or `None` when the admin API is off.
/// The rules are those of API_SERVER_KEY: the strong-key policy, a file that exists but
/// cannot be read refuses to start, and two sources are ambiguous.
pub fn load_admin_key(env: &dyn Env, admin: &AdminSection) -> Result<Option<KeySet>, KeyError> {
    if !admin.enabled {
        return Ok(None);
    }
    let inline = env.var(ADMIN_KEY_ENV).filter(|v| !v.is_empty());
    let mut warnings = Vec::new();
    let (source_name, secret) = match (inline, &admin.key_file) {
        (Some(_), Some(_)) => return Err(KeyError::AmbiguousAdmin),
        (None, None) => return Err(KeyError::MissingAdmin),
        (Some(key), None) => (ADMIN_KEY_ENV.to_string(), Secret::new(key)),
        (None, Some(path)) => {
            let file = keyfile::read(path)?;
            warnings.extend(file.warning);
            ("[admin] key_file".to_string(), file.secret)
        }
    };
    check_strength(secret.expose()).map_err(|problem| KeyError::Weak {
        source_name,
        problem,
    })?;
    let key = ClientKey {
        name: "admin".into(),
        digest: digest(secret.expose().as_bytes()),
        requests_per_minute: None,
        concurrent_requests: None,
        policy: Default::default(),
        origin: KeyOrigin::Config,
    };
    Ok(Some(KeySet {
        keys: vec![std::sync::Arc::new(key)],
        warnings,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct OneVar(Option<String>);
    impl Env for OneVar {
        fn var(&self, name: &str) -> Option<String> {
            (name == ADMIN_KEY_ENV).then(|| self.0.clone()).flatten()
        }
    }

    const GOOD: &str = "gwd_Q9vK2mX7pL4rT8wZ3nB6cF1hJ5sD0aGe";

    fn enabled(key_file: Option<&str>) -> AdminSection {
        AdminSection {
            enabled: true,
            key_file: key_file.map(PathBuf::from),
            ..Default::default()
        }
    }

    #[test]
    fn off_by_default_and_exactly_one_source_when_on() {
        let off = AdminSection::default();
        assert!(load_admin_key(&OneVar(Some(GOOD.into())), &off)
            .unwrap()
            .is_none());
        let set = load_admin_key(&OneVar(Some(GOOD.into())), &enabled(None))
            .unwrap()
            .unwrap();
        assert_eq!(set.keys[0].digest, digest(GOOD.as_bytes()));
        assert!(matches!(
            load_admin_key(&OneVar(None), &enabled(None)),
            Err(KeyError::MissingAdmin)
        ));
        assert!(matches!(
            load_admin_key(&OneVar(Some(GOOD.into())), &enabled(Some("/x"))),
            Err(KeyError::AmbiguousAdmin)
        ));
        assert!(matches!(
            load_admin_key(&OneVar(None), &enabled(Some("/nonexistent/admin"))),
            Err(KeyError::Unreadable { .. })
        ));
        let weak = load_admin_key(&OneVar(Some("changeme-please-0000".into())), &enabled(None))
            .unwrap_err()
            .to_string();
        assert!(
            weak.contains(ADMIN_KEY_ENV) && !weak.contains("changeme"),
            "{weak}"
        );
    }
}
