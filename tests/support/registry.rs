//! A real OCI registry on a free loopback port: the CNCF distribution
//! registry (Debian's `docker-registry`, 2.8), its storage in a directory
//! of its own, without auth.
//!
//! The binary is `$DOCKER_REGISTRY_BIN` or `docker-registry` on the path;
//! `./x test` installs the Debian package when it is missing.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;

/// The registry binary.
pub fn registry_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("DOCKER_REGISTRY_BIN") {
        return PathBuf::from(p);
    }
    let found = std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|d| d.join("docker-registry")).find(|p| p.exists()));
    found.expect("docker-registry is missing: `./x test` installs it (Debian package docker-registry)")
}

/// One registry process.
pub struct OciRegistry {
    child: Child,
    pub port: u16,
    log: PathBuf,
}

impl OciRegistry {
    /// Starts a registry storing under `dir` and waits until it answers.
    pub fn start(dir: &Path) -> OciRegistry {
        let port = free_port();
        let conf = dir.join("registry.yml");
        std::fs::write(
            &conf,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  \
                 delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.join("registry-data").display()
            ),
        )
        .expect("write registry.yml");
        let log = dir.join("registry.log");
        let out = std::fs::File::create(&log).expect("registry log");
        let child = Command::new(registry_binary())
            .arg("serve")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .expect("spawn docker-registry");
        let registry = OciRegistry { child, port, log };
        let start = Instant::now();
        loop {
            use std::io::{Read, Write};
            let answered = std::net::TcpStream::connect(("127.0.0.1", port)).ok().and_then(|mut s| {
                s.write_all(b"GET /v2/ HTTP/1.0\r\n\r\n").ok()?;
                let mut buf = [0u8; 12];
                s.read_exact(&mut buf).ok()?;
                Some(buf.starts_with(b"HTTP/1.1 200") || buf.starts_with(b"HTTP/1.0 200"))
            });
            if answered == Some(true) {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "docker-registry did not answer:\n{}", registry.logs());
            std::thread::sleep(Duration::from_millis(20));
        }
        registry
    }

    /// `127.0.0.1:<port>`, as OCI references write the registry.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// What it logged.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for OciRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
