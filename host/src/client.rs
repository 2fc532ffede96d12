//! The admin API's client, behind `switchyard status`, `reload`, `pause`,
//! `resume`, `purge`, `replay`, `dead-letters`, `violations` and `audit`: it finds the running
//! server through the config's `admin_listen` and `admin_token`, and reads
//! the answers as the typed [`crate::admin_api`] replies.

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Method;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;

use crate::admin_api::{
    AuditReport, DeadLetterPage, DestinationList, ErrorReply, PauseReply, PurgeReply, ReloadReply, ReplayReply,
    ViolationList,
};
use crate::config::Config;

/// A connection to a running server's admin API.
pub struct AdminClient {
    addr: std::net::SocketAddr,
    token: String,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl AdminClient {
    /// The admin API of the server `config` describes.
    ///
    /// # Errors
    ///
    /// When the config has no `server.admin_listen` or `server.admin_token`.
    pub fn new(config: &Config) -> anyhow::Result<AdminClient> {
        let Some(addr) = config.server.admin_listen else { bail!("the config has no server.admin_listen") };
        let token = crate::admin_token::for_client(&config.server)?;
        let client = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
        Ok(AdminClient { addr, token, client })
    }

    /// Every destination's state.
    ///
    /// # Errors
    ///
    /// When the server cannot be reached or refuses.
    pub async fn destinations(&self) -> anyhow::Result<DestinationList> {
        self.call(Method::GET, "/admin/destinations").await
    }

    /// Reloads the config and plugins.
    ///
    /// # Errors
    ///
    /// When the server refuses the reload (the message says why) or cannot
    /// be reached.
    pub async fn reload(&self) -> anyhow::Result<ReloadReply> {
        self.call(Method::POST, "/admin/reload").await
    }

    /// Pauses or resumes `destination`.
    ///
    /// # Errors
    ///
    /// When no such destination runs, or the server cannot be reached.
    pub async fn set_paused(&self, destination: &str, paused: bool) -> anyhow::Result<PauseReply> {
        let action = if paused { "pause" } else { "resume" };
        self.call(Method::POST, &format!("/admin/destinations/{destination}/{action}")).await
    }

    /// Purges a destination removed from the config.
    ///
    /// # Errors
    ///
    /// When it is still configured or unknown, or the server cannot be
    /// reached.
    pub async fn purge(&self, destination: &str) -> anyhow::Result<PurgeReply> {
        self.call(Method::DELETE, &format!("/admin/destinations/{destination}")).await
    }

    /// The oldest dead letters of `destination` and how many there are.
    ///
    /// # Errors
    ///
    /// When no such destination runs, or the server cannot be reached.
    pub async fn dead_letters(&self, destination: &str) -> anyhow::Result<DeadLetterPage> {
        self.call(Method::GET, &format!("/admin/destinations/{destination}/dead-letters")).await
    }

    /// Replays up to `limit` of `destination`'s dead letters.
    ///
    /// # Errors
    ///
    /// When no such destination runs, the log refuses them, or the server
    /// cannot be reached.
    pub async fn replay(&self, destination: &str, limit: usize) -> anyhow::Result<ReplayReply> {
        self.call(Method::POST, &format!("/admin/destinations/{destination}/dead-letters/replay?limit={limit}")).await
    }

    /// What `source`'s tracking plan found.
    ///
    /// # Errors
    ///
    /// When no such source exists, or the server cannot be reached.
    pub async fn violations(&self, source: &str) -> anyhow::Result<ViolationList> {
        self.call(Method::GET, &format!("/admin/sources/{source}/violations")).await
    }

    /// The destination audit.
    ///
    /// # Errors
    ///
    /// When the server cannot be reached.
    pub async fn audit(&self) -> anyhow::Result<AuditReport> {
        self.call(Method::GET, "/admin/audit").await
    }

    async fn call<T: DeserializeOwned>(&self, method: Method, path: &str) -> anyhow::Result<T> {
        let addr = self.addr;
        let req = hyper::Request::builder()
            .method(method)
            .uri(format!("http://{addr}{path}"))
            .header("authorization", format!("Bearer {}", self.token))
            .body(Full::new(Bytes::new()))?;
        let resp = self.client.request(req).await.with_context(|| format!("cannot reach the admin API at {addr}"))?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            let why = serde_json::from_slice::<ReloadReply>(&body)
                .ok()
                .and_then(|r| r.error)
                .or_else(|| serde_json::from_slice::<ErrorReply>(&body).ok().map(|e| e.error))
                .unwrap_or_else(|| "(no message)".into());
            bail!("admin API answered {status}: {why}");
        }
        serde_json::from_slice(&body).with_context(|| format!("unexpected answer from the admin API at {addr}{path}"))
    }
}

/// Lists `destination`'s dead letters, or replays them all in chunks,
/// printing progress.
///
/// # Errors
///
/// When the config has no admin listener or token, or the server refuses.
pub async fn dead_letters(config: &Config, destination: &str, replay: bool) -> anyhow::Result<()> {
    let client = AdminClient::new(config)?;
    if !replay {
        let page = client.dead_letters(destination).await?;
        println!("{} dead letters for `{destination}`", page.count);
        for d in page.dead_letters {
            println!("{:?}\t{:?}\t{} attempts\t{:?}", d.message_id, d.kind, d.attempts, d.reason);
        }
        return Ok(());
    }
    let mut total = 0u64;
    loop {
        let r = client.replay(destination, 1000).await?;
        total += r.replayed;
        eprintln!("replaying `{destination}`: {total} done, {} remaining", r.remaining);
        if r.replayed == 0 || r.remaining == 0 {
            break;
        }
    }
    println!("replayed {total} dead letters to `{destination}`");
    Ok(())
}

/// Prints each destination's state, backlog and last failure.
///
/// # Errors
///
/// When the config has no admin listener or token, or the server refuses.
pub async fn status(config: &Config) -> anyhow::Result<()> {
    let list = AdminClient::new(config)?.destinations().await?;
    println!(
        "{:<20} {:<12} {:>10} {:>10} {:>12} {:>8}  {:<14} why",
        "DESTINATION", "STATE", "BACKLOG", "LOG", "DELIVERED", "DEAD", "PLUGIN"
    );
    let number = |n: Option<u64>| n.map_or_else(|| "-".to_owned(), |n| n.to_string());
    for d in list.destinations {
        let why = d.why().unwrap_or_else(|| "-".into());
        let hash: String = d.plugin.as_ref().map(|p| p.hash.chars().take(12).collect()).unwrap_or_default();
        println!(
            "{:<20} {:<12} {:>10} {:>10} {:>12} {:>8}  {:<14} {why}",
            d.name,
            d.state,
            number(d.backlog),
            d.log_bytes.map_or_else(|| "-".to_owned(), human_bytes),
            number(d.delivered),
            number(d.dead_lettered),
            hash,
        );
    }
    Ok(())
}

/// `bytes` in B, KiB, MiB or GiB, as `status` shows the log a destination
/// holds.
fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

/// Asks the server to reload its config and plugins; prints what changed.
///
/// # Errors
///
/// When the server refuses the reload (the message says why) or cannot be
/// reached.
pub async fn reload(config: &Config) -> anyhow::Result<()> {
    let changes = AdminClient::new(config)?.reload().await?.changes.unwrap_or_default();
    println!(
        "reloaded: added [{}], removed [{}], updated [{}], sources {}",
        changes.added.join(", "),
        changes.removed.join(", "),
        changes.updated.join(", "),
        if changes.sources_changed { "changed" } else { "unchanged" }
    );
    Ok(())
}

/// Pauses or resumes `destination`.
///
/// # Errors
///
/// When no such destination runs, or the server cannot be reached.
pub async fn set_paused(config: &Config, destination: &str, paused: bool) -> anyhow::Result<()> {
    AdminClient::new(config)?.set_paused(destination, paused).await?;
    println!("`{destination}` {}", if paused { "paused" } else { "resumed" });
    Ok(())
}

/// Purges a destination removed from the config.
///
/// # Errors
///
/// When it is still configured or unknown, or the server cannot be reached.
pub async fn purge(config: &Config, destination: &str) -> anyhow::Result<()> {
    let r = AdminClient::new(config)?.purge(destination).await?;
    println!("purged `{destination}`: {} undelivered events dropped", r.dropped_events);
    Ok(())
}

/// Prints what `source`'s tracking plan found: a table, or the JSON.
///
/// # Errors
///
/// When the config has no admin listener or token, or the server refuses.
pub async fn violations(config: &Config, source: &str, json: bool) -> anyhow::Result<()> {
    let list = AdminClient::new(config)?.violations(source).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    let plan = list.tracking_plan.as_deref().unwrap_or("no tracking plan");
    println!("source {} ({plan}): {} blocked, {} forwarded", list.source, list.blocked, list.forwarded);
    if list.violations.is_empty() {
        println!("no violations");
        return Ok(());
    }
    println!("{:<28} {:<28} {:<22} {:>8}  {:<24} DESCRIPTION", "EVENT", "FIELD", "KIND", "COUNT", "LAST SEEN");
    for v in &list.violations {
        let last = chrono::DateTime::from_timestamp_millis(v.last_seen_ms).map(crate::normalize::fmt_time);
        println!(
            "{:<28} {:<28} {:<22} {:>8}  {:<24} {}",
            v.event,
            v.field,
            v.kind,
            v.count,
            last.unwrap_or_default(),
            v.description
        );
    }
    Ok(())
}

/// Prints the destination audit: a table, or the JSON. Exits non-zero
/// (for automation) when `fail_on_findings` and something was found.
///
/// # Errors
///
/// When the config has no admin listener or token, or the server refuses.
pub async fn audit(config: &Config, json: bool, fail_on_findings: bool) -> anyhow::Result<()> {
    let report = AdminClient::new(config)?.audit().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if report.findings.is_empty() {
        println!("audit: nothing found");
    } else {
        println!("{:<24} {:<24} DETAIL", "FINDING", "SUBJECT");
        for f in &report.findings {
            println!("{:<24} {:<24} {}", f.kind, f.subject, f.detail);
        }
    }
    if fail_on_findings && !report.findings.is_empty() {
        bail!("the audit found {} problem(s)", report.findings.len());
    }
    Ok(())
}
