//! Connector packages through the real binary: an author keys, signs, packs
//! and verifies a package; an operator installs it and runs it by name and
//! version; upgrades swap under load; every kind of bad package is refused
//! with a message naming the problem. The packages are the first-party ones
//! `./x plugins` packs into `target/connectors` (signed by the development
//! key at `target/dev-signing.pub`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use switchyard_tests::{Config, Receiver, Switchyard, binary, eventually, http, post_json, workspace, write_config};

const WAIT: Duration = Duration::from_secs(90);
const TOKEN: &str = "adm1n-token";
const WEBHOOK: &str = "dev.switchyard.webhook";

/// A first-party package `./x plugins` packed, e.g. `tarball("webhook")`.
fn tarball(name: &str) -> PathBuf {
    let path = workspace().join(format!("target/connectors/dev.switchyard.{name}-0.1.0.tar.gz"));
    assert!(path.exists(), "{} is missing: run `./x plugins` first (`./x test` does)", path.display());
    path
}

fn dev_key() -> PathBuf {
    workspace().join("target/dev-signing.pub")
}

/// Runs `switchyard <args>`; whether it succeeded, and what it printed.
fn cli(args: &[&str]) -> (bool, String) {
    let out = Command::new(binary()).args(args).output().expect("run switchyard");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// An operator's config and data directory: `cfg` written (ports filled in)
/// where `connector install` and `validate` read it.
struct Operator {
    dir: tempfile::TempDir,
}

impl Operator {
    fn new() -> Operator {
        Operator { dir: tempfile::tempdir().unwrap() }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `cfg` on this operator's data dir, trusting the development key.
    fn config(&self) -> Config {
        Config::new()
            .admin(TOKEN)
            .data_dir(&self.data())
            .trust("dev", &dev_key(), "dev.switchyard.")
            .source("web", "wk")
    }

    fn write(&self, cfg: &Config) -> PathBuf {
        write_config(&cfg.build(), self.dir.path()).path
    }

    fn install(&self, package: &Path) -> String {
        let config = self.write(&self.config());
        let (ok, out) = cli(&["connector", "install", path(package), "--config", path(&config)]);
        assert!(ok, "{out}");
        out
    }

    /// `switchyard validate` on `cfg`: Ok(output) or Err(output).
    fn validate(&self, cfg: &Config) -> Result<String, String> {
        let config = self.write(cfg);
        let (ok, out) = cli(&["validate", "--config", path(&config)]);
        if ok { Ok(out) } else { Err(out) }
    }
}

/// The webhook package's files, unpacked into `dir` for an author to edit.
fn unpacked_webhook(dir: &Path) -> PathBuf {
    let src = workspace().join("target/connectors/src/webhook_destination");
    let dest = dir.join("webhook");
    std::fs::create_dir_all(&dest).unwrap();
    for entry in std::fs::read_dir(&src).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dest.join(entry.file_name())).unwrap();
    }
    dest
}

fn edit_manifest(dir: &Path, from: &str, to: &str) {
    let path = dir.join("connector.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "{from} not in {text}");
    std::fs::write(&path, text.replace(from, to)).unwrap();
}

fn hook(receiver: &Receiver, extra: &str) -> String {
    format!(
        "settings = {{ url = \"{0}/hook\" }}\nallow_http = [\"{0}\"]\nbatch = {{ max_events = 50, linger_ms = 5 }}\n{extra}",
        receiver.origin()
    )
}

/// `GET /admin/destinations`, as JSON.
async fn destinations(sy: &Switchyard) -> Value {
    let auth = [("authorization", "Bearer adm1n-token")];
    let (_, list) = http(hyper::Method::GET, &sy.admin_url("/admin/destinations"), &auth, Vec::new()).await;
    serde_json::from_slice(&list).unwrap()
}

fn events(tag: &str, n: usize) -> (Vec<String>, Value) {
    let ids: Vec<String> = (0..n).map(|i| format!("{tag}-{i}")).collect();
    let batch: Vec<Value> =
        ids.iter().map(|id| json!({"type": "track", "event": "E", "userId": "u", "messageId": id})).collect();
    (ids, json!({ "batch": batch }))
}

#[tokio::test]
async fn a_signed_package_installs_by_name_and_delivers() {
    let op = Operator::new();
    let out = op.install(&tarball("webhook"));
    assert!(out.contains("signed by dev"), "{out}");
    assert!(out.contains("HTTP to the origin of setting `url`"), "the permission review: {out}");
    let receiver = Receiver::always(200).await;
    let cfg = op.config().connector("hook", &format!("{WEBHOOK}@^0.1"), &hook(&receiver, ""));
    let sy = Switchyard::start(&cfg.build()).await;
    let (ids, body) = events("pkg", 20);
    assert_eq!(post_json(&sy.url("/v1/batch"), Some("wk"), &body).await.0, 200);
    eventually(WAIT, "delivered through the installed package", || {
        let got = receiver.message_ids();
        ids.iter().all(|id| got.contains(id))
    })
    .await;
    let list = destinations(&sy).await;
    let connector = &list["destinations"][0]["connector"];
    assert_eq!(connector["id"], WEBHOOK, "{list}");
    assert_eq!(connector["version"], "0.1.0");
    assert_eq!(connector["publisher"], "Switchyard");
    assert!(connector["signature"].as_str().unwrap().starts_with("signed by dev (key "), "{connector}");
}

/// An author's whole path with the CLI — keygen, sign, pack, verify,
/// inspect — then an operator upgrades to the new version by editing the
/// config while events flow: every event is delivered, the new version runs.
#[tokio::test]
async fn an_author_publishes_a_new_version_and_the_operator_upgrades_under_load() {
    let author = tempfile::tempdir().unwrap();
    let dir = unpacked_webhook(author.path());
    edit_manifest(&dir, "version = \"0.1.0\"", "version = \"0.2.0\"");
    let key = author.path().join("acme");
    let (ok, out) = cli(&["plugin", "keygen", path(&key)]);
    assert!(ok, "{out}");
    let (secret, public) = (key.with_extension("key"), key.with_extension("pub"));
    let (ok, out) = cli(&["plugin", "sign", path(&dir), "--key", path(&secret)]);
    assert!(ok && out.contains("signed dev.switchyard.webhook@0.2.0"), "{out}");
    let (ok, out) = cli(&["plugin", "pack", path(&dir), "--out", path(author.path())]);
    assert!(ok, "{out}");
    let package = author.path().join("dev.switchyard.webhook-0.2.0.tar.gz");
    let (ok, out) = cli(&["plugin", "verify", path(&package), "--key", path(&public)]);
    assert!(ok && out.contains("component sha256 matches"), "{out}");
    let (ok, out) = cli(&["plugin", "verify", path(&package), "--key", path(&dev_key())]);
    assert!(!ok && out.contains("which [trust] does not list"), "another key must not verify it: {out}");
    let (ok, out) = cli(&["plugin", "inspect", path(&package)]);
    assert!(ok && out.contains("imports:    http") && out.contains("\"required\""), "{out}");

    let op = Operator::new();
    op.install(&tarball("webhook"));
    op.install(&package);
    let receiver = Receiver::always(200).await;
    let with = |version: &str| {
        op.config().trust("acme", &public, "dev.switchyard.webhook").connector(
            "hook",
            &format!("{WEBHOOK}@={version}"),
            &hook(&receiver, ""),
        )
    };
    let sy = Switchyard::start(&with("0.1.0").build()).await;
    let mut all = Vec::new();
    for round in 0..30 {
        if round == 10 {
            sy.rewrite_config(&with("0.2.0").build());
        }
        let (ids, body) = events(&format!("up{round}"), 20);
        assert_eq!(post_json(&sy.url("/v1/batch"), Some("wk"), &body).await.0, 200);
        all.extend(ids);
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert_eq!(sy.wait_metric("switchyard_reloads_total{result=\"applied\"}", 1).await, 1, "{}", sy.logs());
    let (ids, body) = events("after", 20);
    assert_eq!(post_json(&sy.url("/v1/batch"), Some("wk"), &body).await.0, 200);
    all.extend(ids);
    eventually(WAIT, "every event delivered across the upgrade", || {
        let got = receiver.message_ids();
        all.iter().all(|id| got.contains(id))
    })
    .await;
    let list = destinations(&sy).await;
    assert_eq!(list["destinations"][0]["connector"]["version"], "0.2.0", "{list}");
    assert!(list["destinations"][0]["connector"]["signature"].as_str().unwrap().contains("acme"), "{list}");
}

#[tokio::test]
async fn bad_packages_and_grants_are_refused_with_the_problem_named() {
    let op = Operator::new();
    op.install(&tarball("webhook"));
    op.install(&tarball("amplitude"));
    let receiver = Receiver::always(200).await;
    let webhook = |extra: &str| op.config().connector("hook", &format!("{WEBHOOK}@^0.1"), &hook(&receiver, extra));
    op.validate(&webhook("")).expect("the good config validates");

    // An origin the package never asks for.
    let cfg = op.config().connector(
        "hook",
        &format!("{WEBHOOK}@^0.1"),
        &format!(
            "settings = {{ url = \"{0}/hook\" }}\nallow_http = [\"{0}\", \"https://evil.example\"]",
            receiver.origin()
        ),
    );
    let e = op.validate(&cfg).unwrap_err();
    assert!(
        e.contains("allow_http[1]")
            && e.contains("grants https://evil.example:443, which dev.switchyard.webhook@0.1.0 never asks for"),
        "{e}"
    );

    // Settings against the manifest's schema: the line and the setting.
    let cfg = op.config().connector("hook", &format!("{WEBHOOK}@^0.1"), "settings = { url = 5, colour = \"red\" }");
    let e = op.validate(&cfg).unwrap_err();
    assert!(e.contains("setting `url` must be an http(s) URL, not an integer"), "{e}");
    assert!(e.contains("setting `colour` is not a setting of dev.switchyard.webhook"), "{e}");
    assert!(e.contains("switchyard.toml:"), "names the file and line: {e}");

    // A secret written into the file instead of coming from the environment.
    let cfg = op.config().connector("amp", "dev.switchyard.amplitude@^0.1", "settings = { api_key = \"literal\" }");
    let e = op.validate(&cfg).unwrap_err();
    assert!(e.contains("setting `api_key` is a secret: give it from the environment"), "{e}");
    assert!(!e.contains("literal"), "the secret must not be echoed: {e}");

    // No matching version.
    let e = op.validate(&op.config().connector("hook", &format!("{WEBHOOK}@^2"), &hook(&receiver, ""))).unwrap_err();
    assert!(e.contains("no installed version matches (installed: 0.1.0)"), "{e}");

    // Not trusted: the same config without [[trust]].
    let untrusted = Config::new().admin(TOKEN).data_dir(&op.data()).source("web", "wk").connector(
        "hook",
        &format!("{WEBHOOK}@^0.1"),
        &hook(&receiver, ""),
    );
    let e = op.validate(&untrusted).unwrap_err();
    assert!(e.contains("which [trust] does not list"), "{e}");
    let dev_only = Config::new().admin(TOKEN).data_dir(&op.data()).source("web", "wk").connector(
        "hook",
        &format!("{WEBHOOK}@^0.1"),
        &hook(&receiver, "allow_unsigned = true"),
    );
    op.validate(&dev_only).expect("allow_unsigned runs a package no trusted key signed");

    // One byte of the installed component changed.
    let component = op.data().join("connectors").join(WEBHOOK).join("0.1.0").join("webhook_destination.wasm");
    let mut bytes = std::fs::read(&component).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    std::fs::write(&component, &bytes).unwrap();
    let e = op.validate(&webhook("")).unwrap_err();
    assert!(e.contains("but the manifest pins") && e.contains("tampered with"), "{e}");
    let (code, log) = Switchyard::start_expecting_failure(&webhook("").build());
    assert_ne!(code, Some(0));
    assert!(log.contains("but the manifest pins"), "the server refuses to start on it: {log}");
}

/// A component importing a capability its manifest does not ask for, and a
/// package signed by a key nobody trusts, are refused (the first when the
/// component is loaded, the second when the config is).
#[tokio::test]
async fn a_manifest_that_hides_an_import_or_an_unknown_signer_is_refused() {
    let author = tempfile::tempdir().unwrap();
    let dir = unpacked_webhook(author.path());
    // Claims no HTTP, though the component imports it.
    edit_manifest(&dir, "http = [{ setting = \"url\" }]", "http = []");
    edit_manifest(&dir, "version = \"0.1.0\"", "version = \"0.3.0\"");
    let (ok, out) = cli(&["plugin", "sign", path(&dir), "--key", path(&workspace().join("target/dev-signing.key"))]);
    assert!(ok, "{out}");
    let op = Operator::new();
    op.install(&dir);
    let cfg =
        op.config().connector("hook", &format!("{WEBHOOK}@=0.3.0"), "settings = { url = \"http://127.0.0.1:9/x\" }");
    let e = op.validate(&cfg).unwrap_err();
    assert!(e.contains("imports switchyard:destination/http, which its manifest does not ask for"), "{e}");

    let other = tempfile::tempdir().unwrap();
    let dir = unpacked_webhook(other.path());
    edit_manifest(&dir, "version = \"0.1.0\"", "version = \"0.4.0\"");
    let key = other.path().join("stranger");
    assert!(cli(&["plugin", "keygen", path(&key)]).0);
    assert!(cli(&["plugin", "sign", path(&dir), "--key", path(&key.with_extension("key"))]).0);
    op.install(&dir);
    let cfg = op.config().connector(
        "hook",
        &format!("{WEBHOOK}@=0.4.0"),
        "settings = { url = \"http://127.0.0.1:9/x\" }\nallow_http = [\"http://127.0.0.1:9\"]",
    );
    let e = op.validate(&cfg).unwrap_err();
    assert!(
        e.contains("dev.switchyard.webhook@0.4.0: signed by key") && e.contains("which [trust] does not list"),
        "{e}"
    );
}
