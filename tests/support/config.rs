//! The one way the end-to-end tests write a config: a [`Config`] built
//! from its parts. The `[server]` section listens on loopback ports and
//! keeps its data in the test's directory through three placeholders,
//! `{port}`, `{admin_port}` and `{data_dir}`, filled in when the file is
//! written ([`Switchyard::start`](crate::Switchyard::start) or
//! [`Config::write`]).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::free_port;

/// A `switchyard.toml` under construction. Cloning it and adding to the
/// clone gives a variant, as reload tests need.
///
/// ```ignore
/// let cfg = Config::new()
///     .admin("t0ken")
///     .source("web", "wk_test")
///     .destination("hook", plugin("webhook_destination"), &format!(r#"settings = {{ url = "{origin}/hook" }}"#))
///     .build();
/// let sy = Switchyard::start(&cfg).await;
/// ```
#[derive(Debug, Clone, Default)]
pub struct Config {
    admin_token: Option<String>,
    data_dir: Option<PathBuf>,
    server: Vec<String>,
    sources: Vec<(String, String, String)>,
    destinations: Vec<String>,
    trust: Vec<String>,
    registries: Vec<String>,
    sections: Vec<String>,
}

impl Config {
    /// A config with the `[server]` section only: `listen`, `admin_listen`
    /// and `data_dir` on their placeholders, no admin token.
    pub fn new() -> Config {
        Config::default()
    }

    /// Sets `admin_token`.
    pub fn admin(mut self, token: &str) -> Config {
        self.admin_token = Some(token.to_owned());
        self
    }

    /// Keeps the data in `dir` instead of the test's directory.
    pub fn data_dir(mut self, dir: &Path) -> Config {
        self.data_dir = Some(dir.to_owned());
        self
    }

    /// Adds a line to `[server]`, e.g. `log_segment_mb = 1`.
    pub fn server(mut self, line: &str) -> Config {
        self.server.push(line.to_owned());
        self
    }

    /// Adds a `[[sources]]` entry.
    pub fn source(self, name: &str, write_key: &str) -> Config {
        self.source_with(name, write_key, "")
    }

    /// Adds a `[[sources]]` entry with more lines (`tracking_plan = …`,
    /// `[sources.schema_settings.track]` tables, …), as they would stand in
    /// the file.
    pub fn source_with(mut self, name: &str, write_key: &str, toml: &str) -> Config {
        let lines: String = toml.trim().lines().map(|l| format!("{}\n", l.trim_start())).collect();
        self.sources.push((name.to_owned(), write_key.to_owned(), lines));
        self
    }

    /// Adds a section at the end of the file, e.g. `[governance.audit]` and
    /// its lines.
    pub fn section(mut self, toml: &str) -> Config {
        let lines: String = toml.trim().lines().map(|l| format!("{}\n", l.trim_start())).collect();
        self.sections.push(lines);
        self
    }

    /// Adds a `[[destinations]]` entry: `name`, `plugin`, then `toml` (the
    /// destination's other lines, as they would stand in the file).
    pub fn destination(mut self, name: &str, plugin: impl AsRef<Path>, toml: &str) -> Config {
        let mut entry = format!("name = \"{name}\"\nplugin = \"{}\"\n", plugin.as_ref().display());
        for line in toml.trim().lines() {
            entry.push_str(line.trim_start());
            entry.push('\n');
        }
        self.destinations.push(entry);
        self
    }

    /// Adds a `[[destinations]]` entry running the installed connector
    /// `reference` (`id@requirement`); `toml` as for [`Config::destination`].
    pub fn connector(mut self, name: &str, reference: &str, toml: &str) -> Config {
        let mut entry = format!("name = \"{name}\"\nconnector = \"{reference}\"\n");
        for line in toml.trim().lines() {
            entry.push_str(line.trim_start());
            entry.push('\n');
        }
        self.destinations.push(entry);
        self
    }

    /// Adds a `[[trust]]` entry: the public key file `key_file` may sign
    /// ids starting with `ids`.
    pub fn trust(mut self, name: &str, key_file: &Path, ids: &str) -> Config {
        self.trust.push(format!(
            "\n[[trust]]\nname = \"{name}\"\nkey_file = \"{}\"\nids = [\"{ids}\"]\n",
            key_file.display()
        ));
        self
    }

    /// Adds a `[[registries]]` entry: connectors missing from the store are
    /// pulled from `url` (`host:port/path`).
    pub fn registry(mut self, url: &str) -> Config {
        self.registries.push(format!("\n[[registries]]\nurl = \"{url}\"\n"));
        self
    }

    /// Adds a destination running the webhook plugin (`./x plugins`) that
    /// posts to `url`, with `url`'s origin as its only `allow_http`; `toml`
    /// as for [`Config::destination`].
    pub fn webhook(self, name: &str, url: &str, toml: &str) -> Config {
        let origin: String = url.split('/').take(3).collect::<Vec<_>>().join("/");
        let lines = format!("settings = {{ url = \"{url}\" }}\nallow_http = [\"{origin}\"]\n{toml}");
        self.destination(name, crate::plugin("webhook_destination"), &lines)
    }

    /// The file's text, placeholders still in it.
    pub fn build(&self) -> String {
        let mut out =
            String::from("[server]\nlisten = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:{admin_port}\"\n");
        if let Some(token) = &self.admin_token {
            let _ = writeln!(out, "admin_token = \"{token}\"");
        }
        match &self.data_dir {
            Some(dir) => {
                let _ = writeln!(out, "data_dir = \"{}\"", dir.display());
            }
            None => out.push_str("data_dir = \"{data_dir}\"\n"),
        }
        for line in &self.server {
            let _ = writeln!(out, "{line}");
        }
        for entry in self.trust.iter().chain(&self.registries) {
            out.push_str(entry);
        }
        for (name, key, lines) in &self.sources {
            let _ = write!(out, "\n[[sources]]\nname = \"{name}\"\nwrite_key = \"{key}\"\n{lines}");
        }
        for entry in &self.destinations {
            let _ = write!(out, "\n[[destinations]]\n{entry}");
        }
        for section in &self.sections {
            let _ = write!(out, "\n{section}");
        }
        out
    }

    /// Writes the file into `dir` on two free ports, with `dir/data` as
    /// its data dir.
    pub fn write(&self, dir: &Path) -> Written {
        write_config(&self.build(), dir)
    }
}

/// A config file written to disk, and the ports it listens on.
#[derive(Debug, Clone)]
pub struct Written {
    pub path: PathBuf,
    pub port: u16,
    pub admin_port: u16,
}

/// Writes the config text `template` as `dir/switchyard.toml` on two free
/// ports, with `dir/data` as its data dir.
pub fn write_config(template: &str, dir: &Path) -> Written {
    let (port, admin_port) = (free_port(), free_port());
    let path = dir.join("switchyard.toml");
    std::fs::write(&path, fill(template, port, admin_port, &dir.join("data"))).expect("write config");
    Written { path, port, admin_port }
}

/// `template` with its placeholders filled in.
pub fn fill(template: &str, port: u16, admin_port: u16, data_dir: &Path) -> String {
    template
        .replace("{port}", &port.to_string())
        .replace("{admin_port}", &admin_port.to_string())
        .replace("{data_dir}", &data_dir.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_the_sections_in_order() {
        let text = Config::new()
            .admin("t")
            .server("log_segment_mb = 1")
            .source("web", "wk")
            .destination("d", "/p.wasm", "\n    settings = { url = \"x\" }\n")
            .build();
        assert_eq!(
            text,
            "[server]\nlisten = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:{admin_port}\"\nadmin_token = \"t\"\n\
             data_dir = \"{data_dir}\"\nlog_segment_mb = 1\n\n[[sources]]\nname = \"web\"\nwrite_key = \"wk\"\n\n\
             [[destinations]]\nname = \"d\"\nplugin = \"/p.wasm\"\nsettings = { url = \"x\" }\n"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let w = Config::new().write(dir.path());
        let written = std::fs::read_to_string(&w.path).expect("read");
        assert!(written.contains(&format!("listen = \"127.0.0.1:{}\"", w.port)), "{written}");
        assert!(!written.contains("{data_dir}"), "{written}");
    }
}
