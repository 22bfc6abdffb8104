//! `gatewayd keys create|list|revoke|usage`: runtime keys and usage straight in the store the config names, for when the daemon is stopped.

use std::io::Write;

use crate::config::cli::{KeysCommand, PolicyFlags, ServeArgs};
use crate::config::keys::{self, is_key_name, Env, KeySettings, PolicyText};
use crate::config::Config;
use crate::store::{is_day, Created, GroupBy, SessionError, SessionStore, UsageFilter};

/// Runs one `keys` command; `Err` is the one line to print (the caller adds the prefix).
pub fn run(args: &ServeArgs, env: &dyn Env, command: KeysCommand) -> Result<(), String> {
    let config = Config::load(args, None).map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async move {
        let store = open(&config).await?;
        match command {
            KeysCommand::Create { name, policy } => {
                create(&config, env, &store, &name, &policy).await
            }
            KeysCommand::List => list(&config, env, &store).await,
            KeysCommand::Revoke { name } => revoke(&config, &store, &name).await,
            KeysCommand::Usage {
                key,
                model,
                from,
                to,
                group_by,
            } => {
                let filter = usage_filter(key, model, from, to, &group_by)?;
                usage(&store, &filter).await
            }
        }
    })
}

/// The store as `serve` opens it. On SQLite that takes the data dir's owner lock, so
/// the CLI never writes under a running daemon.
async fn open(config: &Config) -> Result<SessionStore, String> {
    let limits = config.sessions.limits();
    let opened = match &config.sessions.database_url {
        Some(url) => SessionStore::open_postgres(url.expose(), limits).await,
        None => SessionStore::open_sqlite(&config.data_dir, limits).await,
    };
    opened.map_err(|err| match err {
        SessionError::InUse(dir) => format!(
            "the daemon is running and owns the SQLite store in {dir}; use the admin API \
             ([admin] enabled = true), or stop it and run this again. Nothing was changed"
        ),
        other => other.to_string(),
    })
}

fn failed(err: SessionError) -> String {
    err.to_string()
}

async fn create(
    config: &Config,
    env: &dyn Env,
    store: &SessionStore,
    name: &str,
    flags: &PolicyFlags,
) -> Result<(), String> {
    if !is_key_name(name) {
        return Err("--name must be 1 to 128 characters of A-Z a-z 0-9 - _ .".into());
    }
    let config_keys = keys::load(env, &config.key_entries).map_err(|e| e.to_string())?;
    if config_keys.names().contains(&name) {
        return Err(format!(
            "a key named {name:?} is already defined by the config; choose another name"
        ));
    }
    let text = PolicyText {
        models: flags.models.clone(),
        tokens_per_day: flags.tokens_per_day,
        tokens_per_month: flags.tokens_per_month,
        tokens_total: flags.tokens_total,
        expires_at: flags.expires_at.clone(),
        disabled: Some(flags.disabled),
    };
    let policy = text.check()?;
    for (flag, value) in [
        ("--requests-per-minute", flags.requests_per_minute),
        ("--concurrent-requests", flags.concurrent_requests),
    ] {
        if value == Some(0) {
            return Err(format!(
                "{flag} must be above 0; leave it out for the default"
            ));
        }
    }
    let settings = KeySettings {
        policy,
        requests_per_minute: flags.requests_per_minute,
        concurrent_requests: flags.concurrent_requests,
    };
    let key = keys::generate().map_err(|e| format!("the OS random source failed: {e}"))?;
    let digest = keys::digest(key.as_bytes());
    match store
        .create_key(name, &digest, &settings)
        .await
        .map_err(failed)?
    {
        Created::Exists => Err(format!(
            "a runtime key named {name:?} already exists; revoke it first or choose another name"
        )),
        Created::Created => {
            println!("{key}");
            eprintln!(
                "gatewayd: created key {name:?}. This is the only time the key is shown; \
                 only its SHA-256 is stored"
            );
            Ok(())
        }
    }
}

async fn list(config: &Config, env: &dyn Env, store: &SessionStore) -> Result<(), String> {
    let config_keys = keys::load(env, &config.key_entries).map_err(|e| e.to_string())?;
    let stored = store.list_keys().await.map_err(failed)?;
    let mut out = std::io::stdout().lock();
    let mut line = |name: &str, origin: &str, s: &KeySettings| {
        let p = &s.policy;
        let show = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
        let _ = writeln!(
            out,
            "{name}\t{origin}\tmodels={}\tday={}\tmonth={}\ttotal={}\texpires={}\t{}",
            p.models.as_ref().map_or("*".into(), |m| m.join(",")),
            show(p.tokens_per_day),
            show(p.tokens_per_month),
            show(p.tokens_total),
            p.expires_at
                .map_or("never".into(), crate::wire::time::rfc3339),
            if p.disabled { "disabled" } else { "enabled" },
        );
    };
    for key in &config_keys.keys {
        let settings = KeySettings {
            policy: key.policy.clone(),
            requests_per_minute: key.requests_per_minute,
            concurrent_requests: key.concurrent_requests,
        };
        line(&key.name, "config", &settings);
    }
    for key in &stored {
        line(&key.name, "runtime", &key.settings);
    }
    Ok(())
}

async fn revoke(config: &Config, store: &SessionStore, name: &str) -> Result<(), String> {
    if config.key_entries.iter().any(|e| e.name == name) {
        return Err(format!(
            "{name:?} is a [[keys]] entry in the config file; remove it there and reload"
        ));
    }
    match store.delete_key(name).await.map_err(failed)? {
        true => {
            println!("revoked {name}");
            Ok(())
        }
        false => Err(format!("no runtime key named {name:?}")),
    }
}

fn usage_filter(
    key: Option<String>,
    model: Option<String>,
    from: Option<String>,
    to: Option<String>,
    group_by: &str,
) -> Result<UsageFilter, String> {
    for day in from.iter().chain(&to) {
        if !is_day(day) {
            return Err("--from and --to take a UTC day written YYYY-MM-DD".into());
        }
    }
    let group_by = match group_by {
        "day" => GroupBy::Day,
        "model" => GroupBy::Model,
        "key" => GroupBy::Key,
        _ => return Err("--group-by takes day, model or key".into()),
    };
    Ok(UsageFilter {
        key,
        model,
        from,
        to,
        group_by,
    })
}

async fn usage(store: &SessionStore, filter: &UsageFilter) -> Result<(), String> {
    let rows = store.usage_rows(filter).await.map_err(failed)?;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "key\tmodel\tday\tinput_tokens\toutput_tokens\tcached_input_tokens\treasoning_tokens\trequests\testimated_requests"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            r.key,
            r.model.as_deref().unwrap_or("-"),
            r.day.as_deref().unwrap_or("-"),
            r.input_tokens,
            r.output_tokens,
            r.cached_input_tokens,
            r.reasoning_tokens,
            r.requests,
            r.estimated_requests
        );
    }
    Ok(())
}
