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
        let why = d["reason"].as_str().or(d["last_failure"].as_str()).unwrap_or("-");
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
