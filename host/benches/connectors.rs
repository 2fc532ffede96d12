//! Connector benchmark: `connector install` time, from a tarball and from
//! an OCI registry on loopback, and start-up time with 20 installed
//! connectors — cold (every component compiled) and warm (from the
//! compiled cache in `data_dir/plugin-cache`).
//!
//! The 20 packages are the webhook package (`./x plugins`) under 20 ids,
//! each component with its own custom section so each has its own hash and
//! compiles on its own, signed with the development key. Start-up is timed
//! from before the config is loaded (which resolves and verifies every
//! package) to the tracking API accepting connections (after every
//! destination's component is loaded and its `init` checked).
//!
//! Run: `./x plugins && cargo bench -p switchyard --bench connectors`.
//! `BENCH_CONNECTORS` (default 20), `BENCH_ROUNDS` start-ups of each kind
//! (default 3). Needs `docker-registry` (Debian) for the registry part.

mod common;

#[path = "../../tests/support/registry.rs"]
mod registry;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::free_port;
use common::{env_or, median, percentile, rss_mb, workspace};
use switchyard_connector::{Package, oci, package, signing};

/// The package of connector `n`: the webhook's files under id
/// `dev.switchyard.bench-<n>`, its component made unique, pinned, signed.
fn make_package(base: &Path, secret: &str, out: &Path, n: usize) -> PathBuf {
    let dir = out.join(format!("bench-{n}"));
    std::fs::create_dir_all(&dir).expect("dir");
    let manifest = std::fs::read_to_string(base.join("connector.toml")).expect("manifest");
    let mut component = std::fs::read(base.join("webhook_destination.wasm")).expect("component");
    let name = b"bench-connector";
    let mut section = vec![name.len() as u8];
    section.extend_from_slice(name);
    section.extend_from_slice(&(n as u32).to_le_bytes());
    component.push(0);
    component.push(section.len() as u8);
    component.extend_from_slice(&section);
    std::fs::write(dir.join("webhook_destination.wasm"), &component).expect("write component");
    let sha = package::sha256_file(&dir.join("webhook_destination.wasm")).expect("hash");
    let manifest = package::pin(&manifest, &sha)
        .replace("id = \"dev.switchyard.webhook\"", &format!("id = \"dev.switchyard.bench-{n}\""));
    std::fs::write(dir.join("connector.toml"), &manifest).expect("write manifest");
    let reference = format!("dev.switchyard.bench-{n}@0.1.0");
    let signature = signing::sign(manifest.as_bytes(), secret, &reference).expect("sign");
    std::fs::write(dir.join(signing::SIGNATURE_FILE), signature).expect("write signature");
    dir
}

fn config_text(data: &Path, port: u16, receiver: SocketAddr, n: usize) -> String {
    let mut text = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\n\n[[trust]]\nname = \"dev\"\nkey_file = \"{}\"\n\
         ids = [\"dev.switchyard.\"]\n\n[[sources]]\nname = \"bench\"\nwrite_key = \"{}\"\n",
        data.display(),
        workspace().join("target/dev-signing.pub").display(),
        common::WRITE_KEY
    );
    for i in 0..n {
        text.push_str(&format!(
            "\n[[destinations]]\nname = \"hook-{i}\"\nconnector = \"dev.switchyard.bench-{i}@^0.1\"\n\
             settings = {{ url = \"http://{receiver}/in\" }}\nallow_http = [\"http://{receiver}\"]\n"
        ));
    }
    text
}

/// Loads `config` and runs the server until the tracking API accepts;
/// returns the time that took, then stops it.
async fn start_up(config: &Path, port: u16) -> Duration {
    let started = Instant::now();
    let loaded = switchyard::config::Config::load(config).unwrap_or_else(|e| panic!("{e}"));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(switchyard::app::run(loaded, async {
        let _ = stop_rx.await;
    }));
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(!task.is_finished(), "the server stopped: {:?}", task.await);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let took = started.elapsed();
    let _ = stop_tx.send(());
    let _ = task.await;
    took
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let n: usize = env_or("BENCH_CONNECTORS", 20);
    let rounds: usize = env_or("BENCH_ROUNDS", 3);
    let base = workspace().join("target/connectors/src/webhook_destination");
    assert!(base.exists(), "{} is missing: run ./x plugins first", base.display());
    let secret = std::fs::read_to_string(workspace().join("target/dev-signing.key")).expect("dev key");
    let work = tempfile::tempdir().expect("tempdir");
    let packages: Vec<PathBuf> = (0..n).map(|i| make_package(&base, &secret, work.path(), i)).collect();
    let tarballs: Vec<PathBuf> = packages
        .iter()
        .map(|dir| {
            let p = Package::open(dir).expect("open");
            let out = work.path().join(format!("{}.tar.gz", p.folder_name()));
            p.pack(&out).expect("pack");
            out
        })
        .collect();
    let trusted = vec![
        switchyard_connector::TrustedKey::new(
            "dev",
            &std::fs::read_to_string(workspace().join("target/dev-signing.pub")).expect("dev pub"),
            vec!["dev.switchyard.".into()],
        )
        .expect("key"),
    ];
    let size = std::fs::metadata(&tarballs[0]).map(|m| m.len()).unwrap_or(0);
    println!("{n} connectors (the webhook package, {size} bytes packed), {rounds} start-ups of each kind\n");

    // Install from tarballs: unpack, verify (pin + signature), copy in.
    let data = work.path().join("data");
    let store = switchyard_connector::Store::new(&data.join("connectors"));
    let mut tar_ms = Vec::new();
    for t in &tarballs {
        let started = Instant::now();
        let into = tempfile::tempdir().expect("tempdir");
        let dir = package::unpack(t, into.path()).expect("unpack");
        let p = Package::open(&dir).expect("open");
        p.verify(&trusted, false).expect("verify");
        store.install(&p, false).expect("install");
        tar_ms.push(ms(started.elapsed()));
    }
    println!(
        "connector install (tarball):  median {:.1} ms  p95 {:.1} ms",
        median(&mut tar_ms.clone()),
        percentile(&mut tar_ms, 95.0)
    );

    // Push to and install from a registry on loopback.
    let reg_dir = tempfile::tempdir().expect("tempdir");
    let reg = registry::OciRegistry::start(reg_dir.path());
    let mut push_ms = Vec::new();
    let mut pull_ms = Vec::new();
    let other = switchyard_connector::Store::new(&work.path().join("data-oci/connectors"));
    for (i, dir) in packages.iter().enumerate() {
        let p = Package::open(dir).expect("open");
        let at = oci::parse_reference(&format!("{}/bench/dev.switchyard.bench-{i}:0.1.0", reg.host())).expect("ref");
        let client = oci::Registry::new(&at, &oci::Access::default());
        let started = Instant::now();
        client.push(&p, &at).await.expect("push");
        push_ms.push(ms(started.elapsed()));
        let started = Instant::now();
        let into = tempfile::tempdir().expect("tempdir");
        let pulled = client.pull(&at, into.path()).await.expect("pull");
        pulled.verify(&trusted, false).expect("verify");
        other.install(&pulled, false).expect("install");
        pull_ms.push(ms(started.elapsed()));
    }
    println!(
        "plugin push (registry):       median {:.1} ms  p95 {:.1} ms",
        median(&mut push_ms.clone()),
        percentile(&mut push_ms, 95.0)
    );
    println!(
        "connector install (registry): median {:.1} ms  p95 {:.1} ms  (pull + verify + install)",
        median(&mut pull_ms.clone()),
        percentile(&mut pull_ms, 95.0)
    );
    drop(reg);

    // Start-up with every connector installed.
    let (_receiver, receiver_addr) = common::listen().await;
    let port = free_port();
    let config = work.path().join("switchyard.toml");
    std::fs::write(&config, config_text(&data, port, receiver_addr, n)).expect("config");
    let (mut cold, mut warm) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let _ = std::fs::remove_dir_all(data.join("plugin-cache"));
        cold.push(ms(start_up(&config, port).await));
        warm.push(ms(start_up(&config, port).await));
    }
    let (cold_ms, warm_ms) = (median(&mut cold), median(&mut warm));
    println!("\nstart-up with {n} connectors, config load to tracking API accepting:");
    println!("  cold (compiling every component): median {cold_ms:.0} ms ({:.0} ms per connector)", cold_ms / n as f64);
    println!("  warm (from the compiled cache):   median {warm_ms:.0} ms ({:.1} ms per connector)", warm_ms / n as f64);
    println!("  cold / warm: {:.1}x", cold_ms / warm_ms.max(0.001));
    println!("  RSS after: {:.0} MiB", rss_mb());
}
