//! Plugins built against contract 0.1: their exports' types converted to
//! 0.2's (each capability adapts its own 0.1 imports).
//!
//! 0.2 added `event.source` and the `warehouse` interface; `http`, `log`
//! and the outcome types are unchanged in shape, so each adapter is a
//! field-by-field copy.

use crate::world::types;
use crate::world::v0_1::switchyard::destination as old;

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
