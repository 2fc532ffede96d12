//! Which endpoint a request is for: every path the Segment and RudderStack
//! SDKs call, by the names they use (see `SDK-WIRE.md` in the project's
//! reference notes).
//!
//! | path | what | who calls it |
//! |---|---|---|
//! | `/v1/batch`, `/v1/b`, `/v1/import`, `/v1/import/` | a batch | server SDKs (`/v1/import/`: Java), Swift and Kotlin (`/v1/b`), analytics.js batching (`/v1/b`) |
//! | `/beacon/v1/batch?writeKey=…` | a batch, the key in the query | RudderStack's beacon plugin |
//! | `/v1/{identify,track,page,screen,group,alias}` | one event | server SDKs, RudderStack JS |
//! | `/v1/{i,t,p,s,g,a}` | one event | analytics.js (first letter of the type) |
//! | `/v1/m` | the browser SDK's own metrics: accepted, counted, dropped | analytics.js |
//! | `GET /v1/projects/{writeKey}/settings`, `GET /projects/{writeKey}/settings` | the settings an SDK needs to start | analytics.js (`cdnURL`), Swift and Kotlin (`cdnHost`) |
//! | `GET /sourceConfig/?writeKey=…` | RudderStack's source config | RudderStack JS v3 (`configUrl`) |
//!
//! A trailing slash is ignored everywhere. `OPTIONS` on any of them is a
//! CORS preflight.

use crate::normalize::EventType;

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `{"batch": […]}`; `query_key` is a write key given in the query.
    Batch { query_key: Option<String> },
    /// One event of the type the path names.
    Single(EventType),
    /// The browser SDK's own metrics.
    SdkMetrics,
    /// Segment's settings for `write_key`.
    Settings { write_key: String },
    /// RudderStack's source config; the key is in the query or Basic auth.
    SourceConfig { query_key: Option<String> },
}

impl Route {
    /// Whether the route is read with `GET` (else `POST`).
    pub fn is_get(&self) -> bool {
        matches!(self, Route::Settings { .. } | Route::SourceConfig { .. })
    }
}

/// The route for `path` (and its `query`), or `None` for no such endpoint.
pub fn route(path: &str, query: Option<&str>) -> Option<Route> {
    let path = path.trim_end_matches('/');
    let query_key = || query.and_then(|q| query_param(q, "writeKey"));
    match path {
        "/v1/batch" | "/v1/b" | "/v1/import" => return Some(Route::Batch { query_key: None }),
        "/beacon/v1/batch" => return Some(Route::Batch { query_key: query_key() }),
        "/v1/m" => return Some(Route::SdkMetrics),
        "/sourceConfig" => return Some(Route::SourceConfig { query_key: query_key() }),
        _ => {}
    }
    let settings = path.strip_prefix("/v1/projects/").or_else(|| path.strip_prefix("/projects/"));
    if let Some(key) = settings.and_then(|rest| rest.strip_suffix("/settings")) {
        return (!key.is_empty() && !key.contains('/')).then(|| Route::Settings { write_key: percent_decode(key) });
    }
    let name = path.strip_prefix("/v1/")?;
    let kind = match name {
        "i" => EventType::Identify,
        "t" => EventType::Track,
        "p" => EventType::Page,
        "s" => EventType::Screen,
        "g" => EventType::Group,
        "a" => EventType::Alias,
        other => EventType::parse(other)?,
    };
    Some(Route::Single(kind))
}

/// The value of `name` in a query string, percent-decoded.
pub fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name && !v.is_empty()).then(|| percent_decode(v))
    })
}

/// Decodes `%XX` escapes (and `+` as a space); invalid escapes stay as
/// they are.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sdk_path_has_its_route() {
        for path in ["/v1/batch", "/v1/b", "/v1/import", "/v1/import/", "/v1/batch/"] {
            assert_eq!(route(path, None), Some(Route::Batch { query_key: None }), "{path}");
        }
        assert_eq!(
            route("/beacon/v1/batch", Some("writeKey=wk%3A1&x=2")),
            Some(Route::Batch { query_key: Some("wk:1".into()) })
        );
        for (path, kind) in [
            ("/v1/t", EventType::Track),
            ("/v1/track", EventType::Track),
            ("/v1/i", EventType::Identify),
            ("/v1/p", EventType::Page),
            ("/v1/s", EventType::Screen),
            ("/v1/g", EventType::Group),
            ("/v1/a", EventType::Alias),
            ("/v1/alias/", EventType::Alias),
        ] {
            assert_eq!(route(path, None), Some(Route::Single(kind)), "{path}");
        }
        assert_eq!(route("/v1/m", None), Some(Route::SdkMetrics));
        for path in ["/v1/projects/wk/settings", "/projects/wk/settings", "/v1/projects/wk/settings/"] {
            assert_eq!(route(path, None), Some(Route::Settings { write_key: "wk".into() }), "{path}");
        }
        assert_eq!(
            route("/sourceConfig/", Some("p=npm&v=3&writeKey=abc")),
            Some(Route::SourceConfig { query_key: Some("abc".into()) })
        );
        for path in ["/", "/v1", "/v1/x", "/v1/projects//settings", "/v1/projects/a/b/settings", "/v2/track"] {
            assert_eq!(route(path, None), None, "{path}");
        }
    }

    #[test]
    fn query_values_are_percent_decoded() {
        assert_eq!(query_param("a=1&writeKey=x%2By+z", "writeKey").as_deref(), Some("x+y z"));
        assert_eq!(query_param("writeKey=bad%zz", "writeKey").as_deref(), Some("bad%zz"));
        assert_eq!(query_param("writeKey=", "writeKey"), None);
        assert_eq!(query_param("writeKey=%4", "writeKey").as_deref(), Some("%4"));
    }
}
