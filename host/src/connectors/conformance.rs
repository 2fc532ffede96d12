//! `switchyard plugin test`: the conformance kit. A built component goes
//! through the cases every connector must survive, in the real sandbox
//! with scripted HTTP answers ([`super::harness`]), and the contract is
//! checked on every call:
//!
//! - one outcome per event (the runtime's `outcome_count` breach);
//! - never a request outside the origins its manifest asks for
//!   (`http_origin`);
//! - no trap (a panic, an out-of-bounds access) and no other quota breach;
//! - no reason that contains the value of a `secret` setting (the kit
//!   fills secrets with canaries and reads reasons before redaction).
//!
//! Each case adds what its answer demands: nothing delivered on a 4xx or
//! 5xx, a retry on a retryable status or a dropped connection, the
//! server's `Retry-After` carried into the retry.
//!
//! The report is Markdown, for a vendor to publish beside the package.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use switchyard_connector::manifest::SettingType;
use switchyard_runtime::quota::QuotaKind;
use switchyard_runtime::{CallError, Outcome};

use super::harness::{Answer, Harness, Subject, envelopes};
use crate::config::MAX_BATCH_EVENTS;

/// The statuses after which an event must be retried.
const RETRYABLE: [u16; 6] = [408, 429, 500, 502, 503, 504];
/// The statuses after which an event must not count as delivered.
const PERMANENT: [u16; 6] = [400, 401, 403, 404, 413, 422];
/// The `Retry-After` the kit's 429 carries, seconds.
const RETRY_AFTER_S: u64 = 7;

/// What a case's answers demand beyond the contract.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Answers are 200: nothing is left to retry.
    Accepted,
    /// Answers failed: nothing delivered; with `retry`, something retried.
    NotDelivered { retry: bool },
    /// A 429 with `Retry-After`: every retry waits that long.
    RetryAfter,
    /// A timeout: the call may end (the host retries the batch), but
    /// within the contract.
    Survives,
}

/// One case of the kit.
struct Case {
    name: String,
    events: Vec<Value>,
    script: Vec<Answer>,
    expect: Expect,
    /// Needs the plugin to make HTTP requests to say anything.
    needs_http: bool,
    http_timeout_ms: Option<u64>,
}

impl Case {
    fn new(name: impl Into<String>, events: Vec<Value>, script: Vec<Answer>, expect: Expect) -> Case {
        Case { name: name.into(), events, script, expect, needs_http: false, http_timeout_ms: None }
    }

    fn http(mut self) -> Case {
        self.needs_http = true;
        self
    }
}

/// A well-formed event of `kind`, as an SDK would send it.
fn event(kind: &str, n: usize) -> Value {
    let mut e = json!({
        "type": kind,
        "messageId": format!("conf-{kind}-{n}"),
        "userId": format!("user-{n}"),
        "anonymousId": format!("anon-{n}"),
        "timestamp": "2026-01-01T00:00:00.000Z",
        "context": {
            "library": { "name": "analytics.js", "version": "2.11.1" },
            "ip": "203.0.113.7",
            "userAgent": "Mozilla/5.0 (conformance)",
            "device": { "id": format!("device-{n}") },
            "locale": "en-US",
        },
    });
    let extra = match kind {
        "track" => json!({ "event": "Order Completed", "properties": { "revenue": 12.5, "currency": "EUR" } }),
        "identify" => json!({ "traits": { "email": "ada@example.com", "plan": "pro" } }),
        "page" => json!({ "name": "Pricing", "properties": { "url": "https://example.com/pricing" } }),
        "screen" => json!({ "name": "Home", "properties": { "variant": "b" } }),
        "group" => json!({ "groupId": "org-1", "traits": { "name": "Acme" } }),
        "alias" => json!({ "previousId": format!("anon-{n}") }),
        _ => json!({}),
    };
    if let (Some(e), Some(x)) = (e.as_object_mut(), extra.as_object()) {
        e.extend(x.clone());
    }
    e
}

fn all_types() -> Vec<Value> {
    ["identify", "track", "page", "screen", "group", "alias"].iter().enumerate().map(|(n, k)| event(k, n)).collect()
}

fn tracks(n: usize) -> Vec<Value> {
    (0..n).map(|i| event("track", i)).collect()
}

fn with(mut e: Value, f: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Value {
    if let Some(o) = e.as_object_mut() {
        f(o);
    }
    e
}

/// Every case, in report order.
fn cases() -> Vec<Case> {
    let ok = vec![Answer::status(200)];
    let mut cases = vec![
        Case::new(
            "every event type (identify, track, page, screen, group, alias)",
            all_types(),
            ok.clone(),
            Expect::Accepted,
        ),
        Case::new(
            "missing ids: only anonymousId, only userId, no messageId, no timestamp or context",
            vec![
                with(event("track", 1), |o| {
                    o.remove("userId");
                }),
                with(event("identify", 2), |o| {
                    o.remove("anonymousId");
                }),
                with(event("page", 3), |o| {
                    o.remove("messageId");
                    o.remove("timestamp");
                    o.remove("context");
                }),
            ],
            ok.clone(),
            Expect::Accepted,
        ),
        Case::new(
            "null, array and nested properties; null traits and context members",
            vec![
                with(event("track", 1), |o| {
                    o.insert(
                        "properties".into(),
                        json!({ "a": null, "b": [1, [2, [3]], {"c": null}], "d": {}, "e": [], "f": -0.0, "g": 1e308 }),
                    );
                }),
                with(event("track", 2), |o| {
                    o.insert("properties".into(), Value::Null);
                }),
                with(event("identify", 3), |o| {
                    o.insert("traits".into(), Value::Null);
                    o.insert("context".into(), json!({ "device": null, "library": [], "ip": 7 }));
                }),
            ],
            ok.clone(),
            Expect::Accepted,
        ),
        Case::new(
            "huge properties (a 24 KiB value and 400 keys, near the 32 KiB event limit)",
            vec![with(event("track", 1), |o| {
                let mut props = serde_json::Map::new();
                props.insert("blob".into(), Value::String("x".repeat(24 * 1024)));
                for i in 0..400 {
                    props.insert(format!("k{i}"), json!(i));
                }
                o.insert("properties".into(), Value::Object(props));
            })],
            ok.clone(),
            Expect::Accepted,
        ),
        Case::new(
            "unicode: emoji, CJK, right-to-left, combining marks, NUL and escapes",
            vec![with(event("track", 1), |o| {
                o.insert("event".into(), json!("Kauf abgeschlossen ✓ 🎉 注文完了 تم الطلب"));
                o.insert("userId".into(), json!("ü-\u{0301}-\u{200d}-👩‍💻"));
                o.insert(
                    "properties".into(),
                    json!({ "nul": "a\u{0}b", "quote": "\"'\\/<script>", "rtl": "\u{202e}abc", "astral": "𝄞" }),
                );
            })],
            ok.clone(),
            Expect::Accepted,
        ),
        Case::new("a batch of 1", tracks(1), ok.clone(), Expect::Accepted),
        Case::new(
            format!("a batch of the maximum ({MAX_BATCH_EVENTS} events)"),
            tracks(MAX_BATCH_EVENTS),
            ok,
            Expect::Accepted,
        ),
    ];
    for status in RETRYABLE {
        cases.push(
            Case::new(
                format!("HTTP {status}: retried, not delivered"),
                tracks(3),
                vec![Answer::status(status)],
                Expect::NotDelivered { retry: true },
            )
            .http(),
        );
    }
    for status in PERMANENT {
        cases.push(
            Case::new(
                format!("HTTP {status}: not delivered"),
                tracks(3),
                vec![Answer::status(status)],
                Expect::NotDelivered { retry: false },
            )
            .http(),
        );
    }
    cases.push(
        Case::new(
            format!("HTTP 429 with Retry-After: {RETRY_AFTER_S}: retried after {RETRY_AFTER_S} s"),
            tracks(3),
            vec![Answer::status(429).header("retry-after", &RETRY_AFTER_S.to_string())],
            Expect::RetryAfter,
        )
        .http(),
    );
    let refused = Answer { connection_error: true, ..Answer::status(0) };
    cases.push(
        Case::new("connection refused: retried", tracks(3), vec![refused], Expect::NotDelivered { retry: true }).http(),
    );
    let mut slow = Case::new(
        "a server slower than http_timeout_ms (300 ms)",
        tracks(3),
        vec![Answer { delay_ms: 1500, ..Answer::status(200) }],
        Expect::Survives,
    )
    .http();
    slow.http_timeout_ms = Some(300);
    cases.push(slow);
    cases
}

/// How one case went.
struct Verdict {
    name: String,
    status: &'static str,
    detail: String,
}

/// `plugin test`: runs every case against `subject` and prints the
/// report (also written to `report` when given). Returns whether every
/// case passed.
///
/// # Errors
///
/// A component that does not load; an unwritable report.
pub async fn test(
    subject_path: &Path,
    settings: serde_json::Map<String, Value>,
    allow: &[String],
    report: Option<&Path>,
) -> anyhow::Result<bool> {
    let subject = Subject::open(subject_path)?;
    let settings = fill_settings(&subject, settings);
    let scratch = super::TempDir::new()?;
    let harness = Harness::new(&subject, settings, allow, scratch.path())?;
    let makes_requests = harness.imports("http");
    let mut verdicts = Vec::new();
    for case in cases() {
        if case.needs_http && !makes_requests {
            verdicts.push(Verdict { name: case.name, status: "n/a", detail: "imports no http".into() });
            continue;
        }
        // The kit's own events: one the tracking API refuses is a kit bug.
        let events = envelopes(&case.events).map_err(|e| anyhow::anyhow!("case `{}`: {e}", case.name))?;
        let mut quota = harness.quota.clone();
        if let Some(ms) = case.http_timeout_ms {
            quota.http_timeout_ms = ms;
        }
        let (status, detail) = match harness.call(&events, case.script.clone(), &quota).await {
            Err(e) => ("FAIL", format!("init: {}", e)),
            Ok(call) => judge(&case, events.len(), &call.result, call.requests.len(), &harness.secrets),
        };
        eprintln!("{status:<4} {}", case.name);
        verdicts.push(Verdict { name: case.name, status, detail });
    }
    let text = render(&subject, &harness, &verdicts);
    println!("{text}");
    if let Some(path) = report {
        std::fs::write(path, &text).map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
    }
    Ok(verdicts.iter().all(|v| v.status != "FAIL"))
}

/// Fills the settings it is not given: each required one and each secret
/// with the manifest's `example`, or else a value of its type (for a
/// secret, a canary). Secret values are then looked for in reasons.
fn fill_settings(subject: &Subject, mut settings: serde_json::Map<String, Value>) -> serde_json::Map<String, Value> {
    let Some(m) = &subject.manifest else { return settings };
    for (name, s) in &m.settings {
        if settings.contains_key(name) || (!s.required && !s.secret) || (s.default.is_some() && !s.secret) {
            continue;
        }
        let value = if let Some(example) = &s.example {
            serde_json::to_value(example).unwrap_or(Value::Null)
        } else if s.secret {
            json!(format!("sy-canary-{name}-5f3a9c"))
        } else if let Some(choice) = s.choices.as_ref().and_then(|c| c.first()) {
            serde_json::to_value(choice).unwrap_or(Value::Null)
        } else {
            match s.kind {
                SettingType::Url => json!(format!("https://conformance.example/{name}")),
                SettingType::String => json!(format!("conformance-{name}")),
                SettingType::Integer | SettingType::Number => json!(s.minimum.unwrap_or(1.0).max(1.0) as i64),
                SettingType::Boolean => json!(false),
                SettingType::StringList => json!([]),
                SettingType::StringMap => json!({}),
            }
        };
        settings.insert(name.clone(), value);
    }
    settings
}

/// The contract's checks, then the case's own.
fn judge(
    case: &Case,
    events: usize,
    result: &Result<Vec<Outcome>, CallError>,
    requests: usize,
    secrets: &[String],
) -> (&'static str, String) {
    let fail = |m: String| ("FAIL", m);
    let outcomes = match result {
        Err(CallError::Quota(QuotaKind::HttpTimeout, _)) if matches!(case.expect, Expect::Survives) => {
            return ("pass", "the call ended at the HTTP timeout; the host retries the batch".into());
        }
        Err(CallError::Quota(QuotaKind::OutcomeCount, m)) => return fail(format!("wrong outcome count: {m}")),
        Err(CallError::Quota(QuotaKind::HttpOrigin, m)) => {
            return fail(format!("a request outside the origins its manifest asks for: {m}"));
        }
        Err(CallError::Trap(m)) => return fail(format!("trapped: {}", first_line(m))),
        Err(e) => return fail(e.to_string()),
        Ok(o) => o,
    };
    if outcomes.len() != events {
        return fail(format!("{} outcomes for {events} events", outcomes.len()));
    }
    for o in outcomes {
        let reason = match o {
            Outcome::Retry { reason, .. } | Outcome::Rejected(reason) => reason,
            Outcome::Delivered => continue,
        };
        if secrets.iter().any(|s| reason.contains(s.as_str())) {
            return fail("a reason contains the value of a secret setting".into());
        }
    }
    let count = |f: fn(&Outcome) -> bool| outcomes.iter().filter(|o| f(o)).count();
    let delivered = count(|o| matches!(o, Outcome::Delivered));
    let retried = count(|o| matches!(o, Outcome::Retry { .. }));
    let rejected = events - delivered - retried;
    let tally = format!("{delivered} delivered, {retried} retried, {rejected} rejected; {requests} requests");
    match case.expect {
        Expect::Accepted if retried > 0 => fail(format!("retried events every answer accepted ({tally})")),
        Expect::NotDelivered { .. } if delivered > 0 => {
            fail(format!("counted events delivered the server did not accept ({tally})"))
        }
        Expect::NotDelivered { retry: true } if requests > 0 && retried == 0 => {
            fail(format!("a retryable failure retried nothing ({tally})"))
        }
        Expect::RetryAfter => {
            let want = Duration::from_secs(RETRY_AFTER_S);
            let ignored = outcomes.iter().any(|o| matches!(o, Outcome::Retry { after, .. } if *after != Some(want)));
            if delivered > 0 || (requests > 0 && retried == 0) {
                fail(format!("a 429 must be retried ({tally})"))
            } else if ignored {
                fail(format!("Retry-After: {RETRY_AFTER_S} not carried into the retry ({tally})"))
            } else {
                ("pass", tally)
            }
        }
        _ => ("pass", tally),
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

fn render(subject: &Subject, harness: &Harness, verdicts: &[Verdict]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Conformance report: {}\n", subject.label());
    if let Some(m) = &subject.manifest {
        let _ = writeln!(out, "- publisher: {}", m.publisher);
    }
    let _ = writeln!(out, "- component: sha256 {}", harness.hash());
    let _ = writeln!(out, "- contract: {}", harness.contract());
    let _ = writeln!(out, "- kit: switchyard {} `plugin test`\n", env!("CARGO_PKG_VERSION"));
    let _ = writeln!(out, "| case | result | detail |\n|---|---|---|");
    for v in verdicts {
        let detail = v.detail.replace('|', "\\|").replace('\n', " ");
        let _ = writeln!(out, "| {} | {} | {detail} |", v.name, v.status);
    }
    let failed = verdicts.iter().filter(|v| v.status == "FAIL").count();
    let na = verdicts.iter().filter(|v| v.status == "n/a").count();
    let passed = verdicts.len() - failed - na;
    let _ = writeln!(
        out,
        "\n**{passed} passed, {failed} failed, {na} not applicable** — contract checked on every call: one outcome \
         per event, no request outside the manifest's origins, no trap, no secret in a reason."
    );
    out
}
