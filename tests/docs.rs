//! The docs stay true: every key in the example config is documented in
//! docs/configuration.md, the example holds only defaults and passes `gatewayd
//! check-config` as shipped and with every commented-out line switched on, every file in
//! config/examples/ passes it too, and the README's and docs' relative links point at files.
// Tests fail by panicking; unwrap/expect here are assertions, not error handling.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod pki;

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

/// `gatewayd check-config` on `path`, with the environment the examples name (upstream
/// keys); panics with its stderr unless it passes. Returns what it printed.
fn check_config(path: &Path) -> String {
    let output = common::binary()
        .args(["check-config", "--config"])
        .arg(path)
        .env("OPENAI_API_KEY", "sk-docs-test")
        .env("AZURE_OPENAI_API_KEY", "azure-docs-test")
        .env("AZURE_TENANT_ID", "tenant-docs-test")
        .env("ANTHROPIC_API_KEY", "sk-ant-docs-test")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{} fails check-config ({:?}): {}",
        path.display(),
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn the_example_config_passes_check_config_as_shipped_and_with_every_line_on() {
    let path = repo().join("config/gatewayd.example.toml");
    let shipped = check_config(&path);
    assert!(shipped.contains("upstreams: echo"), "{shipped}");
    let dir = common::temp_dir("docs");
    let all_on = dir.join("all.toml");
    std::fs::write(&all_on, uncommented(&read("config/gatewayd.example.toml"))).unwrap();
    let printed = check_config(&all_on);
    assert!(printed.contains("upstreams: local"), "{printed}");
    let config = load(&all_on).unwrap();
    assert_eq!(config.key_entries.len(), 1);
    assert_eq!(config.upstreams.len(), 1);
}

#[test]
fn the_example_config_holds_only_defaults() {
    let dir = common::temp_dir("docs-defaults");
    let empty = dir.join("empty.toml");
    std::fs::write(&empty, "").unwrap();
    // Where each was read from differs, and "./data" is "data".
    let comparable = |mut config: Config| {
        config.config_path = None;
        if let Ok(relative) = config.data_dir.strip_prefix(".") {
            config.data_dir = relative.to_path_buf();
        }
        format!("{config:?}")
    };
    let defaults = comparable(load(&empty).unwrap());
    let example = comparable(load(&repo().join("config/gatewayd.example.toml")).unwrap());
    assert_eq!(
        example, defaults,
        "a value in the example is not the default"
    );
}

/// The files a config/examples/ file names under /etc/gatewayd/, made in `dir`: a test CA,
/// a server pair, a client pair.
fn example_files(dir: &Path) {
    let ca = pki::Ca::new("docs test CA");
    std::fs::create_dir_all(dir.join("tls")).unwrap();
    let server = ca.server(&["localhost"]);
    std::fs::write(dir.join("tls/cert.pem"), &server.cert).unwrap();
    std::fs::write(dir.join("tls/key.pem"), &server.key).unwrap();
    for name in ["upstream-ca.pem", "internal-ca.pem"] {
        std::fs::write(dir.join(name), ca.pem()).unwrap();
    }
    let client = ca.client("gatewayd");
    std::fs::write(dir.join("client.pem"), &client.cert).unwrap();
    std::fs::write(dir.join("client-key.pem"), &client.key).unwrap();
}

#[test]
fn every_file_in_config_examples_passes_check_config() {
    let dir = common::temp_dir("docs-examples");
    let etc = dir.join("etc");
    example_files(&etc);
    let index = read("config/gatewayd.example.toml");
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(repo().join("config/examples")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        assert!(
            name.ends_with(".toml"),
            "config/examples/{name}: not a .toml"
        );
        assert!(
            index.contains(&name),
            "config/gatewayd.example.toml does not point at config/examples/{name}"
        );
        // The example's /etc/gatewayd/ files, made here.
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("/etc/gatewayd/", &format!("{}/", etc.display()));
        let copy = dir.join(&name);
        std::fs::write(&copy, text).unwrap();
        check_config(&copy);
        checked.push(name);
    }
    checked.sort();
    assert!(checked.len() >= 6, "found only {checked:?}");
}

#[test]
fn the_multi_instance_example_has_shared_limits_sessions_and_tls() {
    let config = load(&repo().join("config/examples/multi-instance.toml")).unwrap();
    assert_eq!(config.limits.backend, gatewayd::ratelimit::Backend::Redis);
    assert!(config.limits.redis_url.is_some());
    assert!(config.sessions.database_url.is_some());
    assert!(config.tls.is_some());
    assert!(config.require_key);
    assert!(config.upstreams[0].ca_file.is_some());
    // The Redis URL (which may hold a password) never shows in Debug output.
    assert!(!format!("{config:?}").contains("redis.internal"));
    let docs = read("docs/operations.md");
    assert!(docs.contains("config/examples/multi-instance.toml"));
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
