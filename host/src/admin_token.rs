//! The admin token: `server.admin_token` in the config, or a file named by
//! `server.admin_token_file` that the server fills with a random token the
//! first time it starts.
//!
//! The file lets a config work out of the box — `./x run`, then
//! `switchyard status` — without a secret written into it, and without an
//! admin API open to anyone: the token is 32 random bytes from the
//! kernel, hex-encoded, in a file only its owner can read (mode 0600).

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use anyhow::Context as _;

use crate::config::ServerConfig;

/// The token the server checks: `admin_token`, or the one in
/// `admin_token_file`, written there first when the file does not exist.
/// `None` when neither is set (the admin API then refuses everything).
///
/// # Errors
///
/// When the file cannot be read or created.
pub fn for_server(server: &ServerConfig) -> anyhow::Result<Option<String>> {
    if let Some(token) = &server.admin_token {
        return Ok(Some(token.clone()));
    }
    let Some(path) = &server.admin_token_file else { return Ok(None) };
    match read(path) {
        Ok(token) => Ok(Some(token)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let token = generate().context("generating an admin token")?;
            write_new(path, &token).with_context(|| format!("writing the admin token to {}", path.display()))?;
            tracing::info!(file = %path.display(), "admin token generated (the CLI reads it from there)");
            Ok(Some(token))
        }
        Err(e) => Err(e).with_context(|| format!("reading the admin token from {}", path.display())),
    }
}

/// The token the CLI sends: `admin_token`, or the content of
/// `admin_token_file`.
///
/// # Errors
///
/// When neither is set, or the file cannot be read (the server writes it
/// on its first start).
pub fn for_client(server: &ServerConfig) -> anyhow::Result<String> {
    if let Some(token) = &server.admin_token {
        return Ok(token.clone());
    }
    let Some(path) = &server.admin_token_file else {
        anyhow::bail!("the config has neither server.admin_token nor server.admin_token_file")
    };
    read(path).with_context(|| {
        format!("reading the admin token from {} (the server writes it when it first starts)", path.display())
    })
}

fn read(path: &Path) -> std::io::Result<String> {
    let token = std::fs::read_to_string(path)?.trim().to_owned();
    if token.is_empty() {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "the file is empty"));
    }
    Ok(token)
}

fn generate() -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn write_new(path: &Path, token: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    writeln!(f, "{token}")?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_writes_a_token_file_once_and_the_client_reads_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data/admin.token");
        let server = ServerConfig { admin_token_file: Some(path.clone()), ..ServerConfig::default() };
        assert!(for_client(&server).is_err(), "nothing written yet");
        let token = for_server(&server).unwrap().unwrap();
        assert_eq!(token.len(), 64);
        assert_eq!(for_server(&server).unwrap().unwrap(), token, "kept across restarts");
        assert_eq!(for_client(&server).unwrap(), token);
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o600);
        let none = ServerConfig::default();
        assert_eq!(for_server(&none).unwrap(), None);
        assert!(for_client(&none).unwrap_err().to_string().contains("neither"));
    }
}
