//! A native test harness: run a destination's mapping with plain
//! `cargo test`, no host and no network, with HTTP responses scripted per
//! test.
//!
//! ```
//! use switchyard_plugin_sdk::testing::{Harness, event};
//! use switchyard_plugin_sdk::http::Response;
//! # use switchyard_plugin_sdk::{Destination, Event, InitError, Outcome};
//! # struct Echo;
//! # impl Destination for Echo {
//! #     type Settings = serde_json::Value;
//! #     fn init(_: serde_json::Value) -> Result<Self, InitError> { Ok(Echo) }
//! #     fn deliver(&mut self, batch: Vec<Event>) -> Vec<Outcome> {
//! #         let r = switchyard_plugin_sdk::http::Request::post("https://example.com").send();
//! #         batch.iter().map(|_| switchyard_plugin_sdk::http::outcome_for(&r)).collect()
//! #     }
//! # }
//! let mut h = Harness::<Echo>::new(serde_json::json!({})).unwrap();
//! h.respond(|_req| Ok(Response::new(503, "busy")));
//! let outcomes = h.deliver(vec![event(serde_json::json!({
//!     "type": "track", "event": "Signed Up", "userId": "u1", "messageId": "m1"
//! }))]);
//! assert!(matches!(outcomes[0], Outcome::Retry { .. }));
//! assert_eq!(h.requests().len(), 1);
//! ```
//!
//! State is per thread, and cargo runs each test on its own thread, so tests
//! do not see each other's requests.

use std::cell::RefCell;
use std::collections::VecDeque;

use crate::http::{HttpError, Request, Response};
use crate::log::Level;
use crate::warehouse::{LoadError, LoadReport, TableRows};
use crate::{Destination, Event, InitError, Outcome};

type Responder = Box<dyn FnMut(&Request) -> Result<Response, HttpError>>;
type Warehouse = Box<dyn FnMut(&str, &[TableRows]) -> Result<LoadReport, LoadError>>;

#[derive(Default)]
struct State {
    responder: Option<Responder>,
    queue: VecDeque<Result<Response, HttpError>>,
    requests: Vec<Request>,
    logs: Vec<(Level, String)>,
    not_recording: bool,
    warehouse: Option<Warehouse>,
    loads: Vec<(String, Vec<TableRows>)>,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::default());
}

/// This thread's recordings and scripts. The first use installs this
/// module as the stand-in host of the `http`, `log` and `warehouse`
/// capabilities on this thread.
fn with_state<R>(f: impl FnOnce(&RefCell<State>) -> R) -> R {
    crate::http::NATIVE_HOST.set(Some(dispatch));
    crate::log::NATIVE_HOST.set(Some(record_log));
    crate::warehouse::NATIVE_HOST.set(Some(dispatch_load));
    STATE.with(f)
}

/// Runs one destination natively, recording its HTTP requests and logs.
pub struct Harness<D: Destination> {
    destination: D,
}

impl<D: Destination> Harness<D> {
    /// Parses `settings` and calls `init`, as the host would. Clears the
    /// scripted responses and recordings of this thread.
    ///
    /// # Errors
    ///
    /// The [`InitError`] that settings parsing or `init` returned.
    pub fn new(settings: serde_json::Value) -> Result<Self, InitError> {
        with_state(|s| *s.borrow_mut() = State::default());
        let settings = crate::parse_settings::<D::Settings>(&settings.to_string())?;
        Ok(Harness { destination: D::init(settings)? })
    }

    /// Answers every request with `responder`, after any queued responses.
    pub fn respond(&mut self, responder: impl FnMut(&Request) -> Result<Response, HttpError> + 'static) {
        with_state(|s| s.borrow_mut().responder = Some(Box::new(responder)));
    }

    /// Answers every warehouse load with `warehouse` (without one, loads
    /// fail with [`LoadError::NotGranted`], as on a host that grants none).
    pub fn warehouse(&mut self, warehouse: impl FnMut(&str, &[TableRows]) -> Result<LoadReport, LoadError> + 'static) {
        with_state(|s| s.borrow_mut().warehouse = Some(Box::new(warehouse)));
    }

    /// The warehouse loads so far: (schema, tables), in order.
    pub fn loads(&self) -> Vec<(String, Vec<TableRows>)> {
        with_state(|s| s.borrow().loads.clone())
    }

    /// Queues one response for the next request that finds the queue non-empty.
    pub fn push_response(&mut self, response: Result<Response, HttpError>) {
        with_state(|s| s.borrow_mut().queue.push_back(response));
    }

    /// Delivers `batch` and checks the destination kept the contract (one
    /// outcome per event).
    ///
    /// # Panics
    ///
    /// When the number of outcomes differs from the number of events.
    pub fn deliver(&mut self, batch: Vec<Event>) -> Vec<Outcome> {
        let n = batch.len();
        let outcomes = self.destination.deliver(batch);
        assert_eq!(outcomes.len(), n, "destination returned {} outcomes for {n} events", outcomes.len());
        outcomes
    }

    /// Stops (or resumes) recording requests and log lines; benchmarks turn
    /// it off so recording does not dominate what they measure.
    pub fn set_recording(&mut self, on: bool) {
        with_state(|s| s.borrow_mut().not_recording = !on);
    }

    /// The requests sent so far, in order.
    pub fn requests(&self) -> Vec<Request> {
        with_state(|s| s.borrow().requests.clone())
    }

    /// The log lines written so far.
    pub fn logs(&self) -> Vec<(Level, String)> {
        with_state(|s| s.borrow().logs.clone())
    }

    /// The destination, to inspect its state.
    pub fn destination(&mut self) -> &mut D {
        &mut self.destination
    }
}

/// Builds an [`Event`] from Segment JSON, as the host would. Fills in a
/// `messageId` when the JSON has none.
///
/// # Panics
///
/// When the JSON is not an event (this is a test helper).
pub fn event(mut json: serde_json::Value) -> Event {
    if let Some(obj) = json.as_object_mut()
        && !obj.contains_key("messageId")
    {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        obj.insert("messageId".into(), format!("test-message-{n}").into());
    }
    match Event::from_segment_json(&json.to_string()) {
        Ok(event) => event,
        Err(err) => panic!("not a Segment event: {err}: {json}"),
    }
}

fn dispatch(request: &Request) -> Result<Response, HttpError> {
    with_state(|s| {
        let mut s = s.borrow_mut();
        if !s.not_recording {
            s.requests.push(request.clone());
        }
        if let Some(queued) = s.queue.pop_front() {
            return queued;
        }
        match s.responder.as_mut() {
            Some(responder) => responder(request),
            None => Err(HttpError::Connection("no scripted response for this request".into())),
        }
    })
}

fn record_log(level: Level, message: &str) {
    with_state(|s| {
        let mut s = s.borrow_mut();
        if !s.not_recording {
            s.logs.push((level, message.to_owned()));
        }
    });
}

/// Records a warehouse load and answers it with the test's script.
fn dispatch_load(schema: &str, tables: &[TableRows]) -> Result<LoadReport, LoadError> {
    with_state(|s| {
        let mut s = s.borrow_mut();
        if !s.not_recording {
            s.loads.push((schema.to_owned(), tables.to_vec()));
        }
        match s.warehouse.as_mut() {
            Some(w) => w(schema, tables),
            None => Err(LoadError::NotGranted),
        }
    })
}
