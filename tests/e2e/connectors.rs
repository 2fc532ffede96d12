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

/// A vendor pushes two versions to a real registry (Debian's
/// `docker-registry` on loopback); the component is a standard CNCF Wasm
/// artifact; a Switchyard with the registry in `[[registries]]` and an
/// empty store pulls the highest matching version at start, verifies it
/// and delivers; `connector install <oci-ref>` installs one by reference.
#[tokio::test]
async fn a_package_pushed_to_a_registry_is_pulled_by_name_and_version() {
    let work = tempfile::tempdir().unwrap();
    let registry = switchyard_tests::OciRegistry::start(work.path());
    let repo = format!("{}/connectors/{WEBHOOK}", registry.host());
    let dev_secret = workspace().join("target/dev-signing.key");
    let first = unpacked_webhook(&work.path().join("v1"));
    let (ok, out) = cli(&["plugin", "push", path(&first), &repo]);
    assert!(ok && out.contains(&format!("-> {repo}:0.1.0")), "{out}\n{}", registry.logs());
    let second = unpacked_webhook(&work.path().join("v5"));
    edit_manifest(&second, "version = \"0.1.0\"", "version = \"0.5.0\"");
    assert!(cli(&["plugin", "sign", path(&second), "--key", path(&dev_secret)]).0);
    let (ok, out) = cli(&["plugin", "push", path(&second), &format!("{repo}:0.4.0")]);
    assert!(!ok && out.contains("the tag must be the package version (0.5.0)"), "{out}");
    let (ok, out) = cli(&["plugin", "push", path(&second), &repo]);
    assert!(ok, "{out}");

    // What standard Wasm tooling sees under the version tag.
    let base = format!("http://{}/v2/connectors/{WEBHOOK}", registry.host());
    let accept = [("accept", "application/vnd.oci.image.manifest.v1+json")];
    let (status, manifest) = http(hyper::Method::GET, &format!("{base}/manifests/0.5.0"), &accept, Vec::new()).await;
    assert_eq!(status, 200);
    let manifest: Value = serde_json::from_slice(&manifest).unwrap();
    assert_eq!(manifest["config"]["mediaType"], "application/vnd.wasm.config.v0+json", "{manifest}");
    assert_eq!(manifest["layers"].as_array().map(Vec::len), Some(1), "{manifest}");
    assert_eq!(manifest["layers"][0]["mediaType"], "application/wasm", "{manifest}");
    let config_digest = manifest["config"]["digest"].as_str().unwrap();
    let (_, config) = http(hyper::Method::GET, &format!("{base}/blobs/{config_digest}"), &[], Vec::new()).await;
    let config: Value = serde_json::from_slice(&config).unwrap();
    assert_eq!((config["architecture"].as_str(), config["os"].as_str()), (Some("wasm"), Some("wasip2")), "{config}");
    let imports = config["component"]["imports"].as_array().unwrap();
    assert!(imports.iter().any(|i| i.as_str().unwrap().starts_with("switchyard:destination/http@")), "{config}");
    assert!(config["component"]["exports"].as_array().unwrap().iter().any(|e| e == "deliver"), "{config}");

    // Pulled at start: nothing installed, the registry configured.
    let op = Operator::new();
    let receiver = Receiver::always(200).await;
    let cfg = op.config().registry(&format!("{}/connectors", registry.host())).connector(
        "hook",
        &format!("{WEBHOOK}@>=0.1"),
        &hook(&receiver, ""),
    );
    let sy = Switchyard::start(&cfg.build()).await;
    let (ids, body) = events("oci", 20);
    assert_eq!(post_json(&sy.url("/v1/batch"), Some("wk"), &body).await.0, 200);
    eventually(WAIT, "delivered through the pulled package", || {
        let got = receiver.message_ids();
        ids.iter().all(|id| got.contains(id))
    })
    .await;
    let list = destinations(&sy).await;
    assert_eq!(list["destinations"][0]["connector"]["version"], "0.5.0", "the highest match: {list}");
    assert!(sy.logs().contains("pulled connector"), "{}", sy.logs());
    assert!(op.data().join("connectors").join(WEBHOOK).join("0.5.0").join("connector.toml").exists());

    // By reference, into another store; and a reference that is not there.
    let other = Operator::new();
    let config = other.write(&other.config());
    let (ok, out) = cli(&["connector", "install", &format!("{repo}:0.1.0"), "--config", path(&config)]);
    assert!(ok && out.contains("installed dev.switchyard.webhook@0.1.0") && out.contains("signed by dev"), "{out}");
    let missing = format!("{}/connectors/dev.switchyard.nope:1.0.0", registry.host());
    let (ok, out) = cli(&["connector", "install", &missing, "--config", path(&config)]);
    assert!(!ok && out.contains(&missing), "names the reference: {out}");
    let e = other
        .validate(&other.config().registry(&format!("{}/connectors", registry.host())).connector(
            "hook",
            &format!("{WEBHOOK}@^9"),
            &hook(&receiver, ""),
        ))
        .unwrap_err();
    assert!(e.contains("no version matches ^9 (versions: 0.1.0, 0.5.0)"), "{e}");
}

/// The first-party packages, as `./x plugins` signed them.
fn first_party(wasm: &str) -> PathBuf {
    let dir = workspace().join("target/connectors/src").join(wasm);
    assert!(dir.exists(), "{} is missing: run `./x plugins` first (`./x test` does)", dir.display());
    dir
}

/// The conformance kit passes every first-party connector, and fails a
/// deliberately broken plugin for each contract breach it is built to
/// catch: the wrong number of outcomes, a request to an undeclared host.
#[tokio::test]
async fn the_conformance_kit_passes_first_party_connectors_and_fails_broken_ones() {
    let reports = tempfile::tempdir().unwrap();
    for wasm in ["webhook_destination", "amplitude_destination", "statsig_destination", "warehouse_destination"] {
        let report = reports.path().join(format!("{wasm}.md"));
        let (ok, out) = cli(&["plugin", "test", path(&first_party(wasm)), "--report", path(&report)]);
        assert!(ok, "{wasm} must pass the kit:\n{out}");
        let text = std::fs::read_to_string(&report).unwrap();
        assert!(text.starts_with("# Conformance report: dev.switchyard."), "{text}");
        assert!(text.contains(" 0 failed"), "{text}");
        assert!(text.contains("| HTTP 503: retried, not delivered |"), "{text}");
    }

    let hostile = switchyard_tests::plugin("hostile_destination");
    let (ok, out) = cli(&["plugin", "test", path(&hostile), "--setting", "mode=wrong-count"]);
    assert!(!ok && out.contains("wrong outcome count"), "{out}");
    let (ok, out) = cli(&[
        "plugin",
        "test",
        path(&hostile),
        "--setting",
        "mode=forbidden-host",
        "--setting",
        "url=https://undeclared.example/steal",
        "--allow-http",
        "https://declared.example",
    ]);
    assert!(
        !ok && out.contains("a request outside the origins its manifest asks for")
            && out.contains("undeclared.example"),
        "{out}"
    );
}

/// `plugin run` prints each request and each event's outcome from a
/// script of answers; a secret setting is never printed.
#[tokio::test]
async fn plugin_run_shows_requests_and_outcomes_from_scripted_answers() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    std::fs::write(
        &events,
        "{\"type\":\"track\",\"event\":\"Signed Up\",\"userId\":\"user-0001\",\"messageId\":\"run-1\"}\n\
         {\"type\":\"identify\",\"userId\":\"user-0002\",\"messageId\":\"run-2\",\"traits\":{\"plan\":\"pro\"}}\n",
    )
    .unwrap();
    let answers = dir.path().join("answers.json");
    std::fs::write(&answers, r#"[{"status": 429, "headers": {"retry-after": "3"}}, {"status": 200}]"#).unwrap();
    let amplitude = first_party("amplitude_destination");
    let (ok, out) = cli(&[
        "plugin",
        "run",
        path(&amplitude),
        "--events",
        path(&events),
        "--responses",
        path(&answers),
        "--setting",
        "api_key=sekrit-amp-key-1234",
        "--batch",
        "1",
    ]);
    assert!(ok, "{out}");
    assert!(out.contains("-> POST https://api2.amplitude.com/2/httpapi"), "{out}");
    assert!(out.contains("<- 429 (scripted)") && out.contains("<- 200 (scripted)"), "{out}");
    assert!(out.contains("run-1 track    retry after 3000 ms"), "{out}");
    assert!(out.contains("run-2 identify delivered"), "{out}");
    assert!(!out.contains("sekrit-amp-key-1234") && out.contains("[secret]"), "{out}");

    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"type\":\"track\",\"userId\":\"u\"}\n").unwrap();
    let (ok, out) = cli(&["plugin", "run", path(&amplitude), "--events", path(&bad), "--setting", "api_key=k"]);
    assert!(!ok && out.contains("bad.jsonl:1: the tracking API would refuse this event"), "{out}");
}

/// An author's whole path from nothing: `plugin new` → the crate's own
/// tests → `build` → `test` → `sign` → `push` to a real registry; a
/// Switchyard that has never seen it pulls it by name and delivers.
#[tokio::test]
async fn an_author_goes_from_plugin_new_to_a_pulled_and_delivering_connector() {
    if switchyard_tests::nats::jetstream_run() {
        return; // nothing here depends on the log: once is enough
    }
    let work = tempfile::tempdir().unwrap();
    let sdk = workspace().join("plugin-sdk");
    let (ok, out) = cli(&[
        "plugin",
        "new",
        "acme-hook",
        "--id",
        "com.acme.hook",
        "--publisher",
        "Acme",
        "--sdk",
        path(&sdk),
        "--dir",
        path(work.path()),
    ]);
    assert!(ok, "{out}");
    let crate_dir = work.path().join("acme-hook");
    // The workspace's lock file keeps dependency versions (and so the
    // compiled artifacts in the shared target dir) the same.
    std::fs::copy(workspace().join("Cargo.lock"), crate_dir.join("Cargo.lock")).unwrap();
    let target = workspace().join("target");
    let cargo = |args: &[&str]| {
        let out = Command::new("cargo")
            .args(args)
            .current_dir(&crate_dir)
            .env("CARGO_TARGET_DIR", &target)
            .output()
            .expect("run cargo");
        (
            out.status.success(),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        )
    };
    let (ok, out) = cargo(&["test", "--quiet"]);
    assert!(ok && out.contains("3 passed"), "the template's own tests pass out of the box:\n{out}");
    let build = Command::new(binary())
        .args(["plugin", "build", path(&crate_dir)])
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .expect("plugin build");
    let text = format!("{}{}", String::from_utf8_lossy(&build.stdout), String::from_utf8_lossy(&build.stderr));
    assert!(build.status.success() && text.contains("built com.acme.hook@0.1.0"), "{text}");
    assert!(text.contains("imports http"), "{text}");
    let (ok, out) = cli(&["plugin", "test", path(&crate_dir)]);
    assert!(ok && out.contains(" 0 failed"), "the template passes the conformance kit:\n{out}");

    let key = work.path().join("acme");
    assert!(cli(&["plugin", "keygen", path(&key)]).0);
    let (ok, out) = cli(&["plugin", "sign", path(&crate_dir), "--key", path(&key.with_extension("key"))]);
    assert!(ok, "{out}");
    let registry = switchyard_tests::OciRegistry::start(work.path());
    let (ok, out) = cli(&["plugin", "pack", path(&crate_dir), "--out", path(work.path())]);
    assert!(ok && out.contains("packed com.acme.hook@0.1.0"), "{out}");
    let repo = format!("{}/vendors/com.acme.hook", registry.host());
    let (ok, out) = cli(&["plugin", "push", path(&crate_dir), &repo]);
    assert!(ok, "{out}\n{}", registry.logs());
    let (ok, out) = cli(&["plugin", "inspect", &format!("{repo}:0.1.0")]);
    assert!(ok && out.contains("publisher:  Acme") && out.contains("imports:    http"), "{out}");

    let op = Operator::new();
    let receiver = Receiver::always(200).await;
    let cfg = op
        .config()
        .trust("acme", &key.with_extension("pub"), "com.acme.")
        .registry(&format!("{}/vendors", registry.host()))
        .connector(
            "acme",
            "com.acme.hook@^0.1",
            &format!(
                "settings = {{ url = \"{0}/in\", api_key = \"${{ACME_KEY}}\" }}\nallow_http = [\"{0}\"]\n\
                 batch = {{ max_events = 10, linger_ms = 5 }}",
                receiver.origin()
            ),
        );
    let sy = Switchyard::start_with_env(&cfg.build(), &[("ACME_KEY", "acme-secret-9")]).await;
    let (ids, body) = events("acme", 15);
    assert_eq!(post_json(&sy.url("/v1/batch"), Some("wk"), &body).await.0, 200);
    eventually(WAIT, "delivered through the vendor's connector", || {
        let got = receiver.message_ids();
        ids.iter().all(|id| got.contains(id))
    })
    .await;
    let list = destinations(&sy).await;
    assert_eq!(list["destinations"][0]["connector"]["publisher"], "Acme", "{list}");
    assert!(list["destinations"][0]["connector"]["signature"].as_str().unwrap().contains("signed by acme"), "{list}");
}
