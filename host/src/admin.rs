//! The admin listener: `/metrics` (Prometheus), `/health` and `/ready`
//! (open), and the admin API under `/admin/` (bearer token required).
//!
//! | method | path | does |
//! |---|---|---|
//! | GET | `/admin/destinations` | each destination's state (active, paused, quarantined and why, or removed), backlog, plugin version, last success and failure, a refused reload |
//! | POST | `/admin/destinations/{name}/pause` | no new calls; events wait in the log |
//! | POST | `/admin/destinations/{name}/resume` | calls start again |
//! | DELETE | `/admin/destinations/{name}` | purges a destination removed from the config: its undelivered events and dead letters |
//! | GET | `/admin/destinations/{name}/dead-letters` | lists up to 1000 dead letters and the total |
//! | POST | `/admin/destinations/{name}/dead-letters/replay?limit=N` | replays up to N (default 1000) |
//! | POST | `/admin/reload` | reads the config file and plugins again and applies what changed, all or nothing |
//! | GET | `/admin/sources/{name}/violations` | what the source's tracking plan found: counts per event, field and kind, last seen, latest payloads |
//! | GET | `/admin/audit` | orphaned destinations, PII they receive, unused grants, removed destinations holding events, sources without a plan |

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use switchyard_log::{EventLog, LocalLog};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::admin_api::{
    AuditReport, DeadLetterPage, DeadLetterView, DestinationList, DestinationView, ErrorReply, HealthReply, PauseReply,
    PluginView, PurgeReply, ReadyReply, RefusalView, ReloadChanges, ReloadReply, ReplayReply, ViolationList,
    ViolationView,
};
use crate::metrics::Metrics;
use crate::registry::{ActionError, Registry};

/// What the admin listener serves.
pub struct AdminState<L: EventLog = LocalLog> {
    pub metrics: Arc<Metrics>,
    pub token: Option<String>,
    pub log: Arc<L>,
    pub registry: Arc<Registry<L>>,
    /// Set once the server has begun to shut down.
    pub stopping: Arc<AtomicBool>,
    /// What the audit remembers of each destination.
    pub ledger: Arc<crate::audit::Ledger>,
}

type Reply = Response<Full<Bytes>>;

/// Serves the admin listener until `shutdown` turns true.
///
/// # Errors
///
/// Never in practice; accept errors are retried.
pub async fn serve<L: EventLog>(
    listener: TcpListener,
    state: Arc<AdminState<L>>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let stop = crate::stopped(shutdown);
    tokio::pin!(stop);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((s, _)) => s,
                Err(_) => continue,
            },
            () = &mut stop => return Ok(()),
        };
        let state = state.clone();
        let service = service_fn(move |req: Request<hyper::body::Incoming>| {
            let state = state.clone();
            async move { Ok::<_, Infallible>(route(&req, &state).await) }
        });
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

/// `/ready`: 200 while ingest would accept events, else 503 with the
/// reason ingest would give (`disk_below_floor`, `log_unavailable`,
/// `shutting_down`). Per-destination trouble does not make the server
/// unready: events wait in the log (see `/admin/destinations`).
fn ready<L: EventLog>(state: &AdminState<L>) -> Reply {
    let refusal = if state.stopping.load(Ordering::Relaxed) {
        Some(crate::sink::SinkError { code: "shutting_down", message: "the server is shutting down".into() })
    } else {
        state.log.accepting().err().map(crate::sink::SinkError::from)
    };
    match refusal {
        None => reply(StatusCode::OK, &ReadyReply { ready: true, reason: None, message: None }),
        Some(e) => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            &ReadyReply { ready: false, reason: Some(e.code.into()), message: Some(e.message) },
        ),
    }
}

async fn route<L: EventLog>(req: &Request<hyper::body::Incoming>, state: &AdminState<L>) -> Reply {
    let path = req.uri().path();
    match path {
        "/metrics" => return text(StatusCode::OK, "text/plain; version=0.0.4", state.metrics.render(&*state.log)),
        "/health" => return reply(StatusCode::OK, &HealthReply { status: "ok".into() }),
        "/ready" => return ready(state),
        _ => {}
    }
    if !authorized(req, state.token.as_deref()) {
        return error(StatusCode::UNAUTHORIZED, "admin token required (Authorization: Bearer …)".into());
    }
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (req.method(), parts.as_slice()) {
        (&Method::GET, ["admin", "destinations"]) => reply(StatusCode::OK, &destinations(state).await),
        (&Method::GET, ["admin", "sources", name, "violations"]) => match violations(state, name).await {
            Some(list) => reply(StatusCode::OK, &list),
            None => error(StatusCode::NOT_FOUND, format!("no source named `{name}`")),
        },
        (&Method::GET, ["admin", "audit"]) => reply(StatusCode::OK, &audit(state).await),
        (&Method::POST, ["admin", "reload"]) => match state.registry.reload().await {
            Ok(r) => {
                let changes = ReloadChanges {
                    added: r.added,
                    removed: r.removed,
                    updated: r.updated,
                    sources_changed: r.sources_changed,
                };
                reply(StatusCode::OK, &ReloadReply { reloaded: true, changes: Some(changes), error: None })
            }
            Err(e) => reply(
                StatusCode::UNPROCESSABLE_ENTITY,
                &ReloadReply { reloaded: false, changes: None, error: Some(e.to_string()) },
            ),
        },
        (&Method::POST, ["admin", "destinations", name, action @ ("pause" | "resume")]) => {
            let paused = *action == "pause";
            match state.registry.set_paused(name, paused).await {
                Ok(()) => reply(StatusCode::OK, &PauseReply { destination: (*name).to_owned(), paused }),
                Err(e) => action_error(&e),
            }
        }
        (&Method::DELETE, ["admin", "destinations", name]) => match state.registry.purge(name).await {
            Ok(dropped_events) => {
                reply(StatusCode::OK, &PurgeReply { destination: (*name).to_owned(), purged: true, dropped_events })
            }
            Err(e) => action_error(&e),
        },
        (&Method::GET, ["admin", "destinations", name, "dead-letters"]) => {
            let Some(dl) = state.registry.dead_letters(name).await else { return no_destination(name) };
            match tokio::try_join!(dl.pending(1000), dl.count()) {
                Ok((list, count)) => {
                    let dead_letters = list
                        .into_iter()
                        .map(|d| DeadLetterView {
                            seq: d.seq,
                            reason: d.reason,
                            attempts: d.attempts,
                            failed_at_ms: d.failed_at_ms,
                            message_id: d.message_id,
                            kind: d.kind.to_owned(),
                        })
                        .collect();
                    let page = DeadLetterPage { destination: (*name).to_owned(), count, dead_letters };
                    reply(StatusCode::OK, &page)
                }
                Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
            }
        }
        (&Method::POST, ["admin", "destinations", name, "dead-letters", "replay"]) => {
            let Some(dl) = state.registry.dead_letters(name).await else { return no_destination(name) };
            let limit = query_param(req, "limit").and_then(|v| v.parse().ok()).unwrap_or(1000usize).clamp(1, 100_000);
            match dl.replay(&*state.log, name, limit).await {
                Ok(r) => reply(StatusCode::OK, &ReplayReply { replayed: r.replayed, remaining: r.remaining }),
                Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
            }
        }
        _ => error(StatusCode::NOT_FOUND, format!("no such admin endpoint: {} {path}", req.method())),
    }
}

/// What source `name`'s tracking plan found; `None` for no such source.
async fn violations<L: EventLog>(state: &AdminState<L>, name: &str) -> Option<ViolationList> {
    let stats = state.metrics.sources().into_iter().find(|s| s.name == name)?;
    let config = state.registry.config().await;
    let plan = config.sources.iter().find(|s| s.name == name).and_then(|s| s.tracking_plan.as_ref());
    let violations = stats
        .violations
        .summary()
        .into_iter()
        .map(|v| ViolationView {
            event: v.event,
            field: v.field,
            kind: v.kind.to_owned(),
            count: v.count,
            first_seen_ms: v.first_seen_ms,
            last_seen_ms: v.last_seen_ms,
            description: v.description,
            samples: v.samples,
        })
        .collect();
    Some(ViolationList {
        source: name.to_owned(),
        tracking_plan: plan.map(|p| p.display().to_string()),
        blocked: stats.events_blocked.get(),
        forwarded: stats.events_forwarded.get(),
        violations,
    })
}

/// The destination audit ([`crate::audit`]).
async fn audit<L: EventLog>(state: &AdminState<L>) -> AuditReport {
    let config = state.registry.config().await;
    let mut removed = Vec::new();
    for name in state.registry.removed().await {
        let held = state.log.backlog(&name).unwrap_or(0);
        removed.push((name, held));
    }
    let now = chrono::Utc::now().timestamp_millis();
    state.ledger.report(&config, &state.metrics.destinations(), &removed, now)
}

/// Every destination's status, and the removed ones whose events are kept.
async fn destinations<L: EventLog>(state: &AdminState<L>) -> DestinationList {
    let backlog = |name: &str| state.log.backlog(name);
    let end = state.log.end();
    let mut destinations = Vec::new();
    for d in state.metrics.destinations() {
        let status = d.status();
        let dead = match state.registry.dead_letters(&d.name).await {
            Some(dl) => dl.count().await.unwrap_or_else(|e| {
                tracing::debug!(destination = d.name, error = %e, "cannot count dead letters");
                0
            }),
            None => 0,
        };
        let refused =
            status.refused.map(|r| RefusalView { plugin_hash: r.plugin_hash, reason: r.reason, at_ms: r.at_ms });
        destinations.push(DestinationView {
            name: d.name.clone(),
            state: d.state().to_owned(),
            reason: status.quarantined,
            backlog: if state.log.shared() {
                backlog(&d.name)
            } else {
                d.position.backlog(end).or_else(|| backlog(&d.name))
            },
            log_bytes: state.log.held_bytes(&d.name),
            plugin: Some(PluginView {
                hash: status.plugin_hash,
                contract: status.plugin_contract,
                loaded_at_ms: status.plugin_loaded_ms,
                refused,
            }),
            connector: status.connector,
            delivered: Some(d.delivered.get()),
            delivered_by_plugin: status.delivered_by_plugin,
            dead_lettered: Some(dead),
            call_failures: Some(d.call_failures.get()),
            last_success_ms: status.last_success_ms,
            last_failure_ms: status.last_failure_ms,
            last_failure: status.last_failure,
        });
    }
    for name in state.registry.removed().await {
        destinations.push(DestinationView {
            backlog: backlog(&name),
            log_bytes: state.log.held_bytes(&name),
            reason: Some(
                "removed from the config; its undelivered events are kept until purged (DELETE /admin/destinations/{name})"
                    .into(),
            ),
            state: "removed".into(),
            name,
            ..Default::default()
        });
    }
    DestinationList { destinations }
}

fn action_error(e: &ActionError) -> Reply {
    let status = match e {
        ActionError::NotFound(_) => StatusCode::NOT_FOUND,
        ActionError::Configured(_) => StatusCode::CONFLICT,
        ActionError::Io(_) | ActionError::Log(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, e.to_string())
}

fn authorized(req: &Request<hyper::body::Incoming>, token: Option<&str>) -> bool {
    let presented = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match (token, presented) {
        (Some(t), Some(p)) if !t.is_empty() => constant_time_eq(t.as_bytes(), p.trim().as_bytes()),
        _ => false,
    }
}

fn query_param<'a>(req: &'a Request<hyper::body::Incoming>, key: &str) -> Option<&'a str> {
    req.uri().query()?.split('&').find_map(|kv| kv.split_once('=').filter(|(k, _)| *k == key).map(|(_, v)| v))
}

fn no_destination(name: &str) -> Reply {
    error(StatusCode::NOT_FOUND, format!("no destination named `{name}`"))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn reply(status: StatusCode, body: &impl Serialize) -> Reply {
    match serde_json::to_string(body) {
        Ok(json) => text(status, "application/json", json),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", format!("cannot encode the answer: {e}")),
    }
}

fn error(status: StatusCode, error: String) -> Reply {
    reply(status, &ErrorReply { error })
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Reply {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static(content_type));
    resp
}
