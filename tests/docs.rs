//! The docs stay true: every key in the example config is documented in
//! docs/configuration.md, the example loads (as shipped and with every commented-out
//! example switched on), and the README's and docs' relative links point at files.
// Tests fail by panicking; unwrap/expect here are assertions, not error handling.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};

use gatewayd::cli::ServeArgs;
use gatewayd::config::Config;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap()
}

fn load(path: &Path) -> Result<Config, String> {
    let args = ServeArgs {
        config: Some(path.to_path_buf()),
        ..Default::default()
    };
    Config::load(&args, None).map_err(|e| e.to_string())
}

/// The example with `# key = value` and `# [[section]]` lines uncommented.
fn uncommented(example: &str) -> String {
    example
        .lines()
        .map(|line| match line.strip_prefix("# ") {
            Some(rest) if rest.starts_with('[') || is_assignment(rest) => rest,
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `key = value`: the key, when the line is one.
fn assigned_key(line: &str) -> Option<&str> {
    let (key, _) = line.split_once('=')?;
    let key = key.trim();
    let ok = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    ok.then_some(key)
}

fn is_assignment(line: &str) -> bool {
    assigned_key(line).is_some()
}

#[test]
fn every_example_config_key_is_documented() {
    let example = read("config/gatewayd.example.toml");
    let docs = read("docs/configuration.md");
    let keys: Vec<&str> = example
        .lines()
        .map(|line| line.strip_prefix("# ").unwrap_or(line))
        .filter_map(assigned_key)
        .collect();
    assert!(keys.len() > 30, "found only {keys:?}");
    let missing: Vec<&&str> = keys
        .iter()
        .filter(|key| !docs.contains(&format!("| `{key}` |")))
        .collect();
    assert!(
        missing.is_empty(),
        "not in a docs/configuration.md table: {missing:?}"
    );
}

#[test]
fn the_example_config_loads_as_shipped_and_with_every_option_on() {
    let path = repo().join("config/gatewayd.example.toml");
    load(&path).unwrap();
    let dir = common::temp_dir("docs");
    let all_on = dir.join("all.toml");
    std::fs::write(&all_on, uncommented(&read("config/gatewayd.example.toml"))).unwrap();
    let config = load(&all_on).unwrap();
    let upstream = &config.upstreams[0];
    assert_eq!(upstream.auth_header.as_deref(), Some("Authorization"));
    assert_eq!(upstream.query["api-version"], "2024-06-01");
    assert_eq!(config.key_entries.len(), 1);
}

#[test]
fn the_multi_instance_example_loads_with_shared_limits_sessions_and_tls() {
    let config = load(&repo().join("config/gatewayd.multi-instance.toml")).unwrap();
    assert_eq!(config.limits.backend, gatewayd::ratelimit::Backend::Redis);
    assert!(config.limits.redis_url.is_some());
    assert!(config.sessions.database_url.is_some());
    assert!(config.tls.is_some());
    assert!(config.require_key);
    assert!(config.upstreams[0].ca_file.is_some());
    // The Redis URL (which may hold a password) never shows in Debug output.
    assert!(!format!("{config:?}").contains("redis.internal"));
    let docs = read("docs/operations.md");
    assert!(docs.contains("config/gatewayd.multi-instance.toml"));
}

#[test]
fn relative_links_in_readme_and_docs_resolve() {
    let mut files = vec![repo().join("README.md")];
    for entry in std::fs::read_dir(repo().join("docs")).unwrap() {
        files.push(entry.unwrap().path());
    }
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (at, _) in text.match_indices("](") {
            let rest = &text[at + 2..];
            let target = &rest[..rest.find(')').unwrap()];
            if target.starts_with("http") || target.starts_with('#') {
                continue;
            }
            let path = target.split('#').next().unwrap();
            let resolved = file.parent().unwrap().join(path);
            assert!(
                resolved.exists(),
                "{}: broken link {target}",
                file.display()
            );
        }
    }
}
