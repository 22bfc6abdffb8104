//! Every file gatewayd reads, replaced by a FIFO, /dev/zero, a directory or a dangling symlink, on the real binary: refused at start (78, naming the path, never a hang), and on SIGHUP the old state stays and the next good reload — a key removal — is honoured; `--config -` reads standard input under the same cap and deadline.
// Tests fail by panicking; unwrap/expect here are assertions, not error handling.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod pki;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{binary, output_within, start, temp_dir};
use pki::{client_trusting, Ca};

const HOST: &str = "gateway.test";
/// Only a hang reaches this: a refusal takes milliseconds, the read deadline 5 s.
const EXIT_BOUND: Duration = Duration::from_secs(20);
/// gatewayd's address space in these tests: a read of /dev/zero fails here instead of
/// eating the machine's memory.
const ADDRESS_SPACE: &str = "--as=4294967296";

/// One file gatewayd reads.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Config,
    TlsCert,
    TlsKey,
    CaFile,
    ApiKeyFile,
    HeaderFile,
    KeyFile,
}

/// What the file is replaced by, and the words naming it in the refusal.
#[derive(Clone, Copy, Debug)]
enum Shape {
    Fifo,
    DevZero,
    Directory,
    Dangling,
}

const SHAPES: [Shape; 4] = [
    Shape::Fifo,
    Shape::DevZero,
    Shape::Directory,
    Shape::Dangling,
];

impl Shape {
    fn named(self) -> &'static str {
        match self {
            Shape::Fifo => "a FIFO",
            Shape::DevZero => "a character device",
            Shape::Directory => "a directory",
            Shape::Dangling => "a symbolic link whose target does not exist",
        }
    }
}

fn remove_any(path: &Path) {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir(path).unwrap(),
        Ok(_) => std::fs::remove_file(path).unwrap(),
        Err(_) => {}
    }
}

fn make(path: &Path, shape: Shape) {
    remove_any(path);
    match shape {
        Shape::Fifo => {
            let status = Command::new("mkfifo").arg(path).status().unwrap();
            assert!(status.success());
        }
        Shape::DevZero => std::os::unix::fs::symlink("/dev/zero", path).unwrap(),
        Shape::Directory => std::fs::create_dir(path).unwrap(),
        Shape::Dangling => std::os::unix::fs::symlink(path.with_extension("gone"), path).unwrap(),
    }
}

fn write(path: &Path, text: &str) {
    remove_any(path);
    std::fs::write(path, text).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// A config using every kind of file at once: a TLS listener, an upstream with a
/// `ca_file`, an `api_key_file` and a `file:` header, `[[keys]]` and a key file.
struct World {
    dir: PathBuf,
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
    /// `[[keys]]` k0..k4; the first `removed` are no longer in the config.
    keys: Vec<String>,
    removed: usize,
}

impl World {
    fn new(tag: &str) -> World {
        let ca = Ca::new("file kinds CA");
        let pair = ca.server(&[HOST]);
        let world = World {
            dir: temp_dir(tag),
            ca_pem: ca.pem(),
            cert_pem: pair.cert,
            key_pem: pair.key,
            keys: (0..5)
                .map(|_| gatewayd::keys::generate().unwrap())
                .collect(),
            removed: 0,
        };
        for kind in [
            Kind::Config,
            Kind::TlsCert,
            Kind::TlsKey,
            Kind::CaFile,
            Kind::ApiKeyFile,
            Kind::HeaderFile,
            Kind::KeyFile,
        ] {
            world.restore(kind);
        }
        world
    }

    fn path(&self, kind: Kind) -> PathBuf {
        self.dir.join(match kind {
            Kind::Config => "gatewayd.toml",
            Kind::TlsCert => "cert.pem",
            Kind::TlsKey => "key.pem",
            Kind::CaFile => "upstream-ca.pem",
            Kind::ApiKeyFile => "upstream-key",
            Kind::HeaderFile => "header-value",
            Kind::KeyFile => "client-key",
        })
    }

    fn config_text(&self) -> String {
        let mut toml = format!(
            "[server]\ndata_dir = {:?}\n\n[server.tls]\ncert_file = {:?}\nkey_file = {:?}\n\n",
            self.dir.join("data"),
            self.path(Kind::TlsCert),
            self.path(Kind::TlsKey)
        );
        for (index, key) in self.keys.iter().enumerate().skip(self.removed) {
            toml.push_str(&format!(
                "[[keys]]\nname = \"k{index}\"\nsha256 = \"{}\"\n\n",
                common::sha256_hex(key)
            ));
        }
        toml.push_str(&format!(
            "[[upstreams]]\nname = \"up\"\nbase_url = \"https://127.0.0.1:1/v1\"\nmodels = [\"m\"]\n\
             ca_file = {:?}\napi_key_file = {:?}\nheaders = {{ \"X-Extra\" = \"file:{}\" }}\n",
            self.path(Kind::CaFile),
            self.path(Kind::ApiKeyFile),
            self.path(Kind::HeaderFile).display()
        ));
        toml
    }

    fn restore(&self, kind: Kind) {
        let text = match kind {
            Kind::Config => self.config_text(),
            Kind::TlsCert => self.cert_pem.clone(),
            Kind::TlsKey => self.key_pem.clone(),
            Kind::CaFile => self.ca_pem.clone(),
            Kind::ApiKeyFile => "sk-upstream-file-kinds\n".into(),
            Kind::HeaderFile => "header-from-a-file\n".into(),
            Kind::KeyFile => format!("{}\n", common::KEY_A),
        };
        write(&self.path(kind), &text);
    }

    /// The binary on this world's config and key file, its address space bounded.
    fn command(&self, args: &[&str]) -> Command {
        self.command_on(args, self.path(Kind::Config).as_os_str())
    }

    /// [`World::command`] with `--config config`.
    fn command_on(&self, args: &[&str], config: &std::ffi::OsStr) -> Command {
        let plain = binary();
        let mut command = Command::new("prlimit");
        command.args([ADDRESS_SPACE, "--"]).arg(plain.get_program());
        for (key, value) in plain.get_envs() {
            match value {
                Some(value) => command.env(key, value),
                None => command.env_remove(key),
            };
        }
        command
            .args(args)
            .args(["--port", "0", "--config"])
            .arg(config)
            .env("API_SERVER_KEY_FILE", self.path(Kind::KeyFile));
        command
    }
}

fn refused_at_start(kind: Kind) {
    let world = World::new("kinds-start");
    let good = output_within(world.command(&["check-config"]), EXIT_BOUND);
    let err = String::from_utf8_lossy(&good.stderr);
    assert_eq!(
        good.status.code(),
        Some(0),
        "the intact world is served: {err}"
    );
    let path = world.path(kind);
    for shape in SHAPES {
        make(&path, shape);
        for subcommand in ["check-config", "serve"] {
            let started = Instant::now();
            let output = output_within(world.command(&[subcommand]), EXIT_BOUND);
            let err = String::from_utf8_lossy(&output.stderr);
            let case = format!("{kind:?} as {shape:?}, {subcommand}");
            assert_eq!(output.status.code(), Some(78), "{case}: {err}");
            assert!(err.contains(path.to_str().unwrap()), "{case}: {err}");
            assert!(err.contains(shape.named()), "{case}: {err}");
            assert!(!err.contains("listening"), "{case}: {err}");
            assert!(
                started.elapsed() < EXIT_BOUND,
                "{case}: took {:?}",
                started.elapsed()
            );
        }
    }
}

#[test]
fn a_bad_config_file_is_refused_at_start() {
    refused_at_start(Kind::Config);
}

#[test]
fn a_bad_tls_certificate_or_key_is_refused_at_start() {
    refused_at_start(Kind::TlsCert);
    refused_at_start(Kind::TlsKey);
}

#[test]
fn a_bad_upstream_ca_file_is_refused_at_start() {
    refused_at_start(Kind::CaFile);
}

#[test]
fn a_bad_upstream_api_key_file_is_refused_at_start() {
    refused_at_start(Kind::ApiKeyFile);
}

#[test]
fn a_bad_file_header_is_refused_at_start() {
    refused_at_start(Kind::HeaderFile);
}

#[test]
fn a_bad_client_key_file_is_refused_at_start() {
    refused_at_start(Kind::KeyFile);
}

fn signal(process: &common::Process, name: &str) {
    let status = Command::new("kill")
        .args([format!("-{name}"), process.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Waits (the harness collects stderr lines as they come) until `needle` has been
/// logged more than `before` times; returns the log.
async fn logged_again(process: &common::Process, needle: &str, before: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = process.stderr();
        if log.matches(needle).count() > before {
            return log;
        }
        assert!(Instant::now() < deadline, "never logged {needle:?}: {log}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends SIGHUP and waits for `needle` once more; returns the lines logged since.
async fn hup(process: &common::Process, needle: &str) -> String {
    let before_lines = process.stderr_lines.lock().unwrap().len();
    let before = process.stderr().matches(needle).count();
    signal(process, "HUP");
    logged_again(process, needle, before).await;
    process.stderr_lines.lock().unwrap()[before_lines..].join("\n")
}

/// A running gatewayd on `world`, and an HTTPS client that trusts its CA.
struct Running {
    process: common::Process,
    https: reqwest::Client,
}

impl Running {
    fn start(world: &World) -> Running {
        let process = start(world.command(&["serve"]));
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], process.addr.port()));
        let https = client_trusting(&world.ca_pem, HOST, addr).build().unwrap();
        Running { process, https }
    }

    fn url(&self, path: &str) -> String {
        format!("https://{HOST}:{}{path}", self.process.addr.port())
    }

    async fn health(&self) -> u16 {
        let response = self.https.get(self.url("/health")).send().await.unwrap();
        response.status().as_u16()
    }

    async fn status(&self, path: &str, key: &str) -> u16 {
        let response = self
            .https
            .get(self.url(path))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        response.status().as_u16()
    }
}

/// What a reload logs when it meets a bad file of `kind`. The config file, and the
/// upstreams' api_key_file and `file:` headers it names, are part of the config: a bad
/// one keeps the whole previous configuration, keys included.
fn rejection(kind: Kind) -> &'static str {
    match kind {
        Kind::Config | Kind::ApiKeyFile | Kind::HeaderFile => "config reload rejected",
        Kind::KeyFile => "key reload rejected",
        Kind::TlsCert | Kind::TlsKey => "TLS certificate reload rejected",
        Kind::CaFile => "upstream TLS reload rejected",
    }
}

/// For each shape: the file goes bad and a SIGHUP keeps the old state (logged, naming
/// the file); then the file is fixed, a key is removed, and the next SIGHUP is honoured.
async fn survives_reloads(kind: Kind) {
    let mut world = World::new("kinds-hup");
    let running = Running::start(&world);
    let path = world.path(kind);
    for (round, shape) in SHAPES.into_iter().enumerate() {
        let case = format!("{kind:?} as {shape:?}");
        let doomed = world.keys[round].clone();
        make(&path, shape);
        let lines = hup(&running.process, rejection(kind)).await;
        assert!(lines.contains(path.to_str().unwrap()), "{case}: {lines}");
        assert!(lines.contains(shape.named()), "{case}: {lines}");
        assert_eq!(running.health().await, 200, "{case}");
        assert_eq!(running.status("/v1/models", &doomed).await, 200, "{case}");
        assert_eq!(running.status("/v1/models", common::KEY_A).await, 200);

        world.restore(kind);
        world.removed = round + 1;
        world.restore(Kind::Config);
        hup(&running.process, "keys reloaded").await;
        assert_eq!(running.status("/v1/models", &doomed).await, 401, "{case}");
        assert_eq!(running.status("/v1/models", &world.keys[4]).await, 200);
        assert_eq!(running.status("/v1/models", common::KEY_A).await, 200);
    }
}

#[tokio::test]
async fn a_bad_config_file_on_sighup_keeps_serving_and_the_next_reload_is_honoured() {
    survives_reloads(Kind::Config).await;
}

#[tokio::test]
async fn a_bad_tls_certificate_on_sighup_keeps_serving_and_the_next_reload_is_honoured() {
    survives_reloads(Kind::TlsCert).await;
}

#[tokio::test]
async fn a_bad_ca_file_on_sighup_keeps_serving_and_the_next_reload_is_honoured() {
    survives_reloads(Kind::CaFile).await;
}

#[tokio::test]
async fn a_bad_api_key_file_on_sighup_keeps_serving_and_the_next_reload_is_honoured() {
    survives_reloads(Kind::ApiKeyFile).await;
}

#[tokio::test]
async fn a_bad_file_header_on_sighup_keeps_serving_and_the_next_reload_is_honoured() {
    survives_reloads(Kind::HeaderFile).await;
}

#[tokio::test]
async fn a_bad_client_key_file_on_sighup_keeps_serving_and_the_next_reload_is_honoured() {
    survives_reloads(Kind::KeyFile).await;
}

/// The frozen reload: the certificate becomes a FIFO, SIGHUP; a key is removed
/// while the certificate is still a FIFO, SIGHUP again: that key is refused.
#[tokio::test]
async fn a_fifo_certificate_never_freezes_reloads_and_revocation_still_works() {
    let mut world = World::new("kinds-frozen");
    let running = Running::start(&world);
    let cert = world.path(Kind::TlsCert);
    make(&cert, Shape::Fifo);
    let lines = hup(&running.process, "TLS certificate reload rejected").await;
    assert!(lines.contains("FIFO"), "{lines}");
    assert!(lines.contains(cert.to_str().unwrap()), "{lines}");

    let revoked = world.keys[0].clone();
    assert_eq!(running.status("/v1/models", &revoked).await, 200);
    world.removed = 1;
    world.restore(Kind::Config);
    let lines = hup(&running.process, "TLS certificate reload rejected").await;
    assert!(lines.contains("keys reloaded"), "{lines}");
    assert!(!lines.contains("still running"), "{lines}");
    assert_eq!(running.status("/v1/models", &revoked).await, 401);
    assert_eq!(running.status("/v1/models", &world.keys[1]).await, 200);

    let body = running
        .https
        .get(running.url("/metrics"))
        .bearer_auth(&world.keys[1])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        body.contains("gatewayd_reload_stuck_threads 0"),
        "nothing is left behind by a FIFO: {body}"
    );

    world.restore(Kind::TlsCert);
    hup(&running.process, "TLS certificate reloaded").await;
}

/// `--config -` with stdin from `stdin`.
fn from_stdin(world: &World, subcommand: &str, stdin: Stdio) -> Command {
    let mut command = world.command_on(&[subcommand], "-".as_ref());
    command.stdin(stdin);
    command
}

#[test]
fn config_from_standard_input_is_read_with_the_same_cap_and_deadline() {
    let world = World::new("kinds-stdin");
    let config = std::fs::File::open(world.path(Kind::Config)).unwrap();
    let good = output_within(
        from_stdin(&world, "check-config", config.into()),
        EXIT_BOUND,
    );
    let out = String::from_utf8_lossy(&good.stdout);
    assert_eq!(
        good.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    assert!(out.contains("k0, k1, k2, k3, k4"), "{out}");

    let zero = std::fs::File::open("/dev/zero").unwrap();
    let endless = output_within(from_stdin(&world, "check-config", zero.into()), EXIT_BOUND);
    let err = String::from_utf8_lossy(&endless.stderr);
    assert_eq!(endless.status.code(), Some(78), "{err}");
    assert!(err.contains("larger than 4194304 bytes"), "{err}");
    assert!(err.contains("standard input"), "{err}");

    // A pipe whose writer never writes nor closes: refused at the read deadline.
    let (reader, writer) = std::io::pipe().unwrap();
    let started = Instant::now();
    let open = output_within(from_stdin(&world, "serve", reader.into()), EXIT_BOUND);
    let err = String::from_utf8_lossy(&open.stderr);
    assert_eq!(open.status.code(), Some(78), "{err}");
    assert!(err.contains("did not finish within 5 s"), "{err}");
    assert!(started.elapsed() >= Duration::from_secs(5));
    drop(writer);
}

#[tokio::test]
async fn a_config_from_standard_input_keeps_its_keys_across_sighup() {
    let world = World::new("kinds-stdin-hup");
    let config = std::fs::File::open(world.path(Kind::Config)).unwrap();
    let process = start(from_stdin(&world, "serve", config.into()));
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], process.addr.port()));
    let running = Running {
        process,
        https: client_trusting(&world.ca_pem, HOST, addr).build().unwrap(),
    };
    hup(&running.process, "keys reloaded").await;
    assert_eq!(running.status("/v1/models", &world.keys[0]).await, 200);
    assert_eq!(running.status("/v1/models", common::KEY_A).await, 200);
}
