//! Plugins built against contract 0.1: their imports, adapted onto the
//! 0.2 capabilities, and their exports' types converted to 0.2's.
//!
//! 0.2 added `event.source` and the `warehouse` interface; `http`, `log`
//! and the outcome types are unchanged in shape, so each adapter is a
//! field-by-field copy.

use super::HostState;
use super::bindings::v0_1::switchyard::destination as old;
use super::bindings::{http, log, types};

impl old::types::Host for HostState {}

impl old::log::Host for HostState {
    fn log(&mut self, level: old::log::Level, message: String) -> wasmtime::Result<()> {
        use old::log::Level as L;
        let level = match level {
            L::Trace => log::Level::Trace,
            L::Debug => log::Level::Debug,
            L::Info => log::Level::Info,
            L::Warn => log::Level::Warn,
            L::Error => log::Level::Error,
        };
        log::Host::log(self, level, message)
    }
}

impl old::http::Host for HostState {
    async fn send(
        &mut self,
        request: old::http::Request,
    ) -> wasmtime::Result<Result<old::http::Response, old::http::Error>> {
        use old::http::Method as M;
        let method = match request.method {
            M::Get => http::Method::Get,
            M::Head => http::Method::Head,
            M::Post => http::Method::Post,
            M::Put => http::Method::Put,
            M::Patch => http::Method::Patch,
            M::Delete => http::Method::Delete,
        };
        let request = http::Request {
            method,
            url: request.url,
            headers: request.headers,
            body: request.body,
            timeout_ms: request.timeout_ms,
        };
        let result = http::Host::send(self, request).await?;
        Ok(match result {
            Ok(r) => Ok(old::http::Response { status: r.status, headers: r.headers, body: r.body }),
            Err(e) => Err(match e {
                http::Error::Denied(o) => old::http::Error::Denied(o),
                http::Error::InvalidRequest(m) => old::http::Error::InvalidRequest(m),
                http::Error::Connection(m) => old::http::Error::Connection(m),
                http::Error::Timeout => old::http::Error::Timeout,
                http::Error::ResponseTooLarge => old::http::Error::ResponseTooLarge,
            }),
        })
    }
}

/// A 0.1 outcome as 0.2's.
pub fn outcome(o: old::types::Outcome) -> types::Outcome {
    match o {
        old::types::Outcome::Delivered => types::Outcome::Delivered,
        old::types::Outcome::Retry(r) => {
            types::Outcome::Retry(types::RetryLater { after_ms: r.after_ms, reason: r.reason })
        }
        old::types::Outcome::Rejected(reason) => types::Outcome::Rejected(reason),
    }
}

/// A 0.1 `init` error as 0.2's.
pub fn init_error(e: old::types::InitError) -> types::InitError {
    match e {
        old::types::InitError::InvalidSettings(m) => types::InitError::InvalidSettings(m),
        old::types::InitError::Other(m) => types::InitError::Other(m),
    }
}

/// An event as 0.1 sees it: 0.2's without `source`.
pub fn event<'a>(e: &types::Event<'a>) -> old::types::Event<'a> {
    use old::types::EventType as O;
    use types::EventType as N;
    let kind = match e.kind {
        N::Identify => O::Identify,
        N::Track => O::Track,
        N::Page => O::Page,
        N::Screen => O::Screen,
        N::Group => O::Group,
        N::Alias => O::Alias,
    };
    old::types::Event {
        kind,
        message_id: e.message_id,
        name: e.name,
        user_id: e.user_id,
        anonymous_id: e.anonymous_id,
        timestamp_ms: e.timestamp_ms,
        json: e.json,
    }
}
