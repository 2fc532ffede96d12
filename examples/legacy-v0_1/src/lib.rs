//! A destination built against the first published contract,
//! `switchyard:destination@0.1.0`, with `wit-bindgen` straight from the
//! frozen WIT folder (`plugin-sdk/wit/since_v0.1.0`) rather than the SDK,
//! which follows the newest contract. It stands for every plugin compiled
//! before the contract changed: the end-to-end tests run it beside plugins
//! of the newest contract to prove that old plugins keep running.
//!
//! It POSTs each batch as `{"batch": [...]}` to the `url` setting, like the
//! webhook example, with `X-Contract: 0.1.0` so a receiver can tell who
//! sent it.

#![allow(unsafe_code)] // the generated export glue

use std::cell::RefCell;

wit_bindgen::generate!({
    world: "destination",
    path: "../../plugin-sdk/wit/since_v0.1.0",
});

use switchyard::destination::http::{self, Method, Request};
use switchyard::destination::types::RetryLater;

thread_local! {
    static URL: RefCell<Option<String>> = const { RefCell::new(None) };
}

struct Legacy;

impl Guest for Legacy {
    fn init(settings: String) -> Result<(), InitError> {
        let v: serde_json::Value =
            serde_json::from_str(&settings).map_err(|e| InitError::InvalidSettings(e.to_string()))?;
        let url = v["url"].as_str().ok_or_else(|| InitError::InvalidSettings("missing `url`".into()))?;
        URL.with(|u| *u.borrow_mut() = Some(url.to_owned()));
        Ok(())
    }

    fn deliver(batch: Vec<Event>) -> Vec<Outcome> {
        let n = batch.len();
        let Some(url) = URL.with(|u| u.borrow().clone()) else {
            return vec![Outcome::Rejected("deliver before init".into()); n];
        };
        let events: Vec<&str> = batch.iter().map(|e| e.json.as_str()).collect();
        let request = Request {
            method: Method::Post,
            url,
            headers: vec![("Content-Type".into(), "application/json".into()), ("X-Contract".into(), "0.1.0".into())],
            body: format!("{{\"batch\":[{}]}}", events.join(",")),
            timeout_ms: None,
        };
        let outcome = match http::send(&request) {
            Ok(r) if (200..300).contains(&r.status) => Outcome::Delivered,
            Ok(r) => Outcome::Retry(RetryLater { after_ms: None, reason: format!("HTTP {}", r.status) }),
            Err(e) => Outcome::Retry(RetryLater { after_ms: None, reason: format!("{e:?}") }),
        };
        vec![outcome; n]
    }
}

export!(Legacy);
