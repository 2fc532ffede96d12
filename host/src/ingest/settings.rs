//! The settings SDKs fetch before they send anything.
//!
//! analytics.js fetches `{cdnURL}/v1/projects/{writeKey}/settings` and
//! does not load without it; Swift and Kotlin fetch
//! `https://{cdnHost}/projects/{writeKey}/settings` and stop uploading
//! without `integrations["Segment.io"]` (Kotlin even falls back to
//! Segment's own API host). The answer names this server: `apiHost` and
//! `protocol` come from `server.public_url` (what clients see, behind a
//! proxy too), else from the request's `Host`. It holds nothing that makes
//! an SDK call Segment: one integration (`Segment.io`; more would make
//! analytics.js load classic destinations from Segment's CDN), no remote
//! plugins, and the SDK's own metrics sampled at 0.
//!
//! RudderStack's JS SDK fetches `{configUrl}/sourceConfig/?writeKey=…` and
//! needs a `source` with an `id`, a `config` object and a `destinations`
//! array.

use serde_json::{Value, json};

/// Where clients reach this server: `https://ingest.example.com` or
/// `http://127.0.0.1:8088`, possibly with a path prefix, no trailing slash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicUrl {
    /// `http` or `https`.
    pub scheme: String,
    /// Host, port and path prefix: `ingest.example.com/segment`.
    pub host_and_path: String,
}

impl PublicUrl {
    /// Parses `server.public_url`.
    ///
    /// # Errors
    ///
    /// When it is not an `http://` or `https://` URL with a host, or has a
    /// query or fragment.
    pub fn parse(url: &str) -> Result<PublicUrl, String> {
        let url = url.trim().trim_end_matches('/');
        let (scheme, rest) = url.split_once("://").ok_or("must start with http:// or https://")?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "http" && scheme != "https" {
            return Err(format!("scheme `{scheme}` is not http or https"));
        }
        if rest.is_empty() || rest.starts_with('/') {
            return Err("has no host".into());
        }
        if rest.contains(['?', '#', ' ']) {
            return Err("must not have a query, a fragment or spaces".into());
        }
        Ok(PublicUrl { scheme, host_and_path: rest.to_owned() })
    }

    /// From a request: `Host` as the client wrote it, over `scheme`.
    pub fn from_host(host: &str, scheme: &str) -> PublicUrl {
        PublicUrl { scheme: scheme.to_owned(), host_and_path: host.to_owned() }
    }

    /// `apiHost` as the Segment SDKs want it: host and path with `/v1`,
    /// no scheme.
    pub fn api_host(&self) -> String {
        format!("{}/v1", self.host_and_path)
    }
}

/// Segment's settings for `write_key`, pointing the SDK at `public`.
pub fn segment(write_key: &str, public: &PublicUrl) -> Value {
    let all = json!({"__default": {"enabled": true, "integrations": {}}});
    json!({
        "integrations": {
            "Segment.io": {
                "apiKey": write_key,
                "apiHost": public.api_host(),
                "protocol": public.scheme,
                "unbundledIntegrations": [],
                "addBundledMetadata": false,
                "maybeBundledConfigIds": {},
            }
        },
        "plan": {"track": all, "identify": all, "group": all},
        "edgeFunction": {},
        "analyticsNextEnabled": true,
        "middlewareSettings": {},
        "enabledMiddleware": {},
        "metrics": {"sampleRate": 0},
        "legacyVideoPluginsEnabled": false,
        "remotePlugins": [],
    })
}

/// RudderStack's source config for the source `name` with `write_key`.
pub fn rudderstack(name: &str, write_key: &str) -> Value {
    json!({
        "isHosted": false,
        "source": {
            "id": name,
            "name": name,
            "writeKey": write_key,
            "enabled": true,
            "workspaceId": "switchyard",
            "config": {"statsCollection": {"errors": {"enabled": false}, "metrics": {"enabled": false}}},
            "destinations": [],
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_settings_point_the_sdk_here_and_nowhere_else() {
        let public = PublicUrl::parse("https://Ingest.example.com/segment/").unwrap();
        assert_eq!(public.api_host(), "Ingest.example.com/segment/v1");
        let s = segment("wk", &public);
        let io = &s["integrations"]["Segment.io"];
        assert_eq!((io["apiKey"].as_str(), io["protocol"].as_str()), (Some("wk"), Some("https")));
        assert_eq!(s["integrations"].as_object().unwrap().len(), 1, "one integration: no classic destinations");
        assert_eq!(s["metrics"]["sampleRate"], 0);
        assert_eq!(s["remotePlugins"], json!([]));
        let local = PublicUrl::from_host("127.0.0.1:8088", "http");
        assert_eq!(segment("wk", &local)["integrations"]["Segment.io"]["apiHost"], "127.0.0.1:8088/v1");
    }

    #[test]
    fn a_public_url_must_be_http_or_https_with_a_host() {
        for bad in ["ingest.example.com", "ftp://x", "https://", "https:///path", "https://x?y=1"] {
            assert!(PublicUrl::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(PublicUrl::parse("http://127.0.0.1:8088").unwrap().api_host(), "127.0.0.1:8088/v1");
    }

    #[test]
    fn rudderstack_gets_a_valid_source() {
        let c = rudderstack("web", "wk");
        assert_eq!(c["source"]["id"], "web");
        assert!(c["source"]["config"].is_object() && c["source"]["destinations"].is_array());
        assert_eq!(c["source"]["enabled"], true);
    }
}
