//! Client commands: talk to a running server's admin API.

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::config::Config;

/// Lists `destination`'s dead letters, or replays them all in chunks,
/// printing progress.
///
/// # Errors
///
/// When the config has no admin listener or token, or the server refuses.
pub async fn dead_letters(config: &Config, destination: &str, replay: bool) -> anyhow::Result<()> {
    let path = format!("/admin/destinations/{destination}/dead-letters");
    if !replay {
        let body = admin(config, hyper::Method::GET, &path).await?;
        let list = body["dead_letters"].as_array().cloned().unwrap_or_default();
        println!("{} dead letters for `{destination}`", body["count"]);
        for d in list {
            println!("{}\t{}\t{} attempts\t{}", d["messageId"], d["type"], d["attempts"], d["reason"]);
        }
        return Ok(());
    }
    let mut total = 0u64;
    loop {
        let body = admin(config, hyper::Method::POST, &format!("{path}/replay?limit=1000")).await?;
        let n = body["replayed"].as_u64().unwrap_or(0);
        total += n;
        let remaining = body["remaining"].as_u64().unwrap_or(0);
        eprintln!("replaying `{destination}`: {total} done, {remaining} remaining");
        if n == 0 || remaining == 0 {
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
    let body = admin(config, hyper::Method::GET, "/admin/destinations").await?;
    let list = body["destinations"].as_array().cloned().unwrap_or_default();
    println!(
        "{:<20} {:<12} {:>10} {:>12} {:>8}  {:<14} why",
        "DESTINATION", "STATE", "BACKLOG", "DELIVERED", "DEAD", "PLUGIN"
    );
    for d in list {
        let refused = d["plugin"]["refused"]["reason"].as_str().map(|r| format!("reload refused: {r}"));
        let why = d["reason"].as_str().map(str::to_owned).or(refused).or(d["last_failure"].as_str().map(str::to_owned));
        let why = why.as_deref().unwrap_or("-");
        let hash: String = d["plugin"]["hash"].as_str().unwrap_or("").chars().take(12).collect();
        println!(
            "{:<20} {:<12} {:>10} {:>12} {:>8}  {:<14} {why}",
            d["name"].as_str().unwrap_or("?"),
            d["state"].as_str().unwrap_or("?"),
            d["backlog"].as_u64().map_or_else(|| "-".to_owned(), |n| n.to_string()),
            d["delivered"],
            d["dead_lettered"],
            hash,
        );
    }
    Ok(())
}

/// Asks the server to reload its config and plugins; prints what changed.
///
/// # Errors
///
/// When the server refuses the reload (the message says why) or cannot be
/// reached.
pub async fn reload(config: &Config) -> anyhow::Result<()> {
    let body = admin(config, hyper::Method::POST, "/admin/reload").await?;
    let changes = &body["changes"];
    let list =
        |key: &str| changes[key].as_array().map(|a| a.iter().filter_map(|v| v.as_str()).collect::<Vec<_>>().join(", "));
    println!(
        "reloaded: added [{}], removed [{}], updated [{}], sources {}",
        list("added").unwrap_or_default(),
        list("removed").unwrap_or_default(),
        list("updated").unwrap_or_default(),
        if changes["sources_changed"] == true { "changed" } else { "unchanged" }
    );
    Ok(())
}

/// Pauses or resumes `destination`.
///
/// # Errors
///
/// When no such destination runs, or the server cannot be reached.
pub async fn set_paused(config: &Config, destination: &str, paused: bool) -> anyhow::Result<()> {
    let action = if paused { "pause" } else { "resume" };
    admin(config, hyper::Method::POST, &format!("/admin/destinations/{destination}/{action}")).await?;
    println!("`{destination}` {}", if paused { "paused" } else { "resumed" });
    Ok(())
}

/// Purges a destination removed from the config.
///
/// # Errors
///
/// When it is still configured or unknown, or the server cannot be reached.
pub async fn purge(config: &Config, destination: &str) -> anyhow::Result<()> {
    let body = admin(config, hyper::Method::DELETE, &format!("/admin/destinations/{destination}")).await?;
    println!("purged `{destination}`: {} undelivered events dropped", body["dropped_events"]);
    Ok(())
}

async fn admin(config: &Config, method: hyper::Method, path: &str) -> anyhow::Result<Value> {
    let Some(addr) = config.server.admin_listen else { bail!("the config has no server.admin_listen") };
    let Some(token) = &config.server.admin_token else { bail!("the config has no server.admin_token") };
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let req = hyper::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::new()))?;
    let resp = client.request(req).await.with_context(|| format!("cannot reach the admin API at {addr}"))?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if !status.is_success() {
        bail!("admin API answered {status}: {}", json["error"].as_str().unwrap_or("(no message)"));
    }
    Ok(json)
}
