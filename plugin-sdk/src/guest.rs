//! The component side of [`export_destination!`](crate::export_destination):
//! keeps the instance's destination value and converts between the WIT
//! bindings and the SDK's types.

use std::cell::RefCell;

use crate::__private::bindings as wit;
use crate::__private::bindings::switchyard::destination::types as wit_types;
use crate::{Destination, Event, InitError, Outcome};

thread_local! {
    /// The destination built by `init`. A component instance is single
    /// threaded, so one slot per instance.
    static INSTANCE: RefCell<Option<Box<dyn std::any::Any>>> = const { RefCell::new(None) };
}

/// Implements the `init` export for `D`.
pub fn init<D: Destination>(settings: &str) -> Result<(), wit::InitError> {
    let built = crate::parse_settings::<D::Settings>(settings).and_then(D::init);
    match built {
        Ok(destination) => {
            INSTANCE.with(|slot| *slot.borrow_mut() = Some(Box::new(destination)));
            Ok(())
        }
        Err(err) => Err(err.into()),
    }
}

/// Implements the `deliver` export for `D`.
pub fn deliver<D: Destination>(batch: Vec<wit::Event>) -> Vec<wit::Outcome> {
    let len = batch.len();
    let events = batch.into_iter().map(Event::from).collect();
    INSTANCE.with(|slot| {
        let mut slot = slot.borrow_mut();
        match slot.as_mut().and_then(|d| d.downcast_mut::<D>()) {
            Some(destination) => destination.deliver(events).into_iter().map(wit::Outcome::from).collect(),
            None => {
                let reason = "deliver called before a successful init";
                (0..len).map(|_| Outcome::retry(reason).into()).collect()
            }
        }
    })
}

impl From<InitError> for wit::InitError {
    fn from(err: InitError) -> Self {
        match err {
            InitError::InvalidSettings(msg) => wit::InitError::InvalidSettings(msg),
            InitError::Other(msg) => wit::InitError::Other(msg),
        }
    }
}

impl From<Outcome> for wit::Outcome {
    fn from(outcome: Outcome) -> Self {
        match outcome {
            Outcome::Delivered => wit::Outcome::Delivered,
            Outcome::Retry { after_ms, reason } => wit::Outcome::Retry(wit_types::RetryLater { after_ms, reason }),
            Outcome::Rejected(reason) => wit::Outcome::Rejected(reason),
        }
    }
}

impl From<wit::Event> for Event {
    fn from(e: wit::Event) -> Self {
        use crate::EventType as T;
        use wit_types::EventType as W;
        let kind = match e.kind {
            W::Identify => T::Identify,
            W::Track => T::Track,
            W::Page => T::Page,
            W::Screen => T::Screen,
            W::Group => T::Group,
            W::Alias => T::Alias,
        };
        Event {
            kind,
            message_id: e.message_id,
            name: e.name,
            user_id: e.user_id,
            anonymous_id: e.anonymous_id,
            timestamp_ms: e.timestamp_ms,
            json: e.json,
            source: e.source,
        }
    }
}
