//! Hostile: a destination that misbehaves on purpose, to prove the sandbox.
//!
//! **Never configure this in production.** It exists so the end-to-end
//! tests (`tests/e2e/hostile.rs`) can show that a hostile or broken plugin
//! cannot hurt the host, the other destinations, or the data: each
//! misbehaviour must fail only its own calls, get the destination
//! quarantined, and leave its events waiting in the log.
//!
//! Settings:
//!
//! | key | type | default | meaning |
//! |---|---|---|---|
//! | `mode` | string | required | which misbehaviour, below |
//! | `url` | string | none | where to POST, for the modes that call out |
//!
//! Modes. All act in `deliver`, except `init-panic`:
//!
//! | `mode` | what the plugin does | what the host should report |
//! |---|---|---|
//! | `spin` | loops forever | CPU limit (`cpu`) |
//! | `allocate` | grows a `Vec` of 1 MiB chunks without bound | memory limit (`memory`) |
//! | `stack-overflow` | unbounded, non-tail recursion with a 256-byte buffer per frame, so Rust's shadow stack in linear memory overflows first | trap (an out-of-bounds memory access: wasm32 Rust puts its stack below the data, so overflowing it wraps below address 0) |
//! | `call-stack-overflow` | unbounded, non-tail recursion with almost no frame in linear memory, so the engine's own wasm call stack runs out | trap (call stack exhausted) |
//! | `panic` | panics with [`PANIC_MESSAGE`] | trap naming the panic |
//! | `forbidden-host` | POSTs to `url` (an origin not in `allow_http`), then claims `Delivered` | `http_origin` |
//! | `slow-response` | POSTs to `url`, a server that drips its response | `http_timeout` |
//! | `giant-response` | POSTs to `url`, a server answering far over the cap | `http_response_size` |
//! | `log-flood` | writes [`FLOOD_LINES`] log lines per call, then claims `Delivered` | `log_rate` |
//! | `wrong-count` | returns one outcome fewer than events (one for an empty batch) | `outcome_count` |
//! | `garbage` | retries every event with a 1 MiB reason | outcome text past its cap (`outcome_size`) |
//! | `retry-forever` | retries every event with `after_ms = u64::MAX` | nothing fails: the delay is capped at `max_retry_after_ms`, the events retried |
//! | `init-panic` | panics in `init`, so no instance ever starts | trap in `init` |
//!
//! The modes that call out need `url`; without it `init` refuses the
//! settings.

use serde::Deserialize;
use switchyard_plugin_sdk::http::{self, Request};
use switchyard_plugin_sdk::{Destination, Event, InitError, Outcome, export_destination, log};

/// The panic message of modes `panic` and `init-panic` (the host reports
/// the plugin's stderr with the trap, so tests can look for it).
pub const PANIC_MESSAGE: &str = "hostile plugin panicked on purpose";

/// Log lines written per call in mode `log-flood`.
pub const FLOOD_LINES: usize = 5_000;

/// Bytes of each reason in mode `garbage`.
pub const GARBAGE_REASON_BYTES: usize = 1024 * 1024;

/// The misbehaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    Spin,
    Allocate,
    StackOverflow,
    CallStackOverflow,
    Panic,
    ForbiddenHost,
    SlowResponse,
    GiantResponse,
    LogFlood,
    WrongCount,
    Garbage,
    RetryForever,
    InitPanic,
}

impl Mode {
    /// Whether the mode sends a request to `url`.
    pub fn calls_out(self) -> bool {
        matches!(self, Mode::ForbiddenHost | Mode::SlowResponse | Mode::GiantResponse)
    }
}

/// The hostile destination's settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub mode: Mode,
    #[serde(default)]
    pub url: Option<String>,
}

/// The hostile destination.
pub struct Hostile {
    settings: Settings,
}

impl Destination for Hostile {
    type Settings = Settings;

    fn init(settings: Settings) -> Result<Self, InitError> {
        if settings.mode == Mode::InitPanic {
            panic!("{PANIC_MESSAGE} (in init)");
        }
        if settings.mode.calls_out() && settings.url.as_deref().is_none_or(|u| u.trim().is_empty()) {
            return Err(InitError::invalid_settings("this `mode` needs a `url`"));
        }
        Ok(Hostile { settings })
    }

    fn deliver(&mut self, batch: Vec<Event>) -> Vec<Outcome> {
        let n = batch.len();
        match self.settings.mode {
            Mode::Spin => spin(),
            Mode::Allocate => allocate(),
            Mode::StackOverflow => {
                let depth = recurse(0);
                vec![Outcome::retry(format!("recursion returned at depth {depth}")); n]
            }
            Mode::CallStackOverflow => {
                let depth = recurse_lean(0);
                vec![Outcome::retry(format!("recursion returned at depth {depth}")); n]
            }
            Mode::Panic => panic!("{PANIC_MESSAGE}"),
            Mode::ForbiddenHost => {
                // The host must refuse (and end the call); whatever comes
                // back, the plugin lies that the events were delivered.
                let _ = self.post(&batch).send();
                vec![Outcome::Delivered; n]
            }
            Mode::SlowResponse | Mode::GiantResponse => {
                let outcome = http::outcome_for(&self.post(&batch).send());
                vec![outcome; n]
            }
            Mode::LogFlood => {
                for i in 0..FLOOD_LINES {
                    log::info(&format!("hostile log flood: line {i} of {FLOOD_LINES}"));
                }
                vec![Outcome::Delivered; n]
            }
            Mode::WrongCount => vec![Outcome::Delivered; if n == 0 { 1 } else { n - 1 }],
            Mode::Garbage => vec![Outcome::retry(garbage_reason()); n],
            Mode::RetryForever => vec![Outcome::retry_after(u64::MAX, "come back in 584 million years"); n],
            // `init` never returns in this mode.
            Mode::InitPanic => unreachable!("init-panic never gets an instance"),
        }
    }
}

impl Hostile {
    /// A POST of the batch's message ids to the `url` setting.
    fn post(&self, batch: &[Event]) -> Request {
        let ids: Vec<&str> = batch.iter().map(|e| e.message_id.as_str()).collect();
        let url = self.settings.url.as_deref().unwrap_or_default().trim();
        Request::post(url).header("Content-Type", "text/plain").body(ids.join("\n"))
    }
}

/// Burns CPU forever.
fn spin() -> ! {
    let mut x: u64 = 0;
    loop {
        x = std::hint::black_box(x.wrapping_add(1));
    }
}

/// Allocates (and touches) 1 MiB at a time until something gives.
fn allocate() -> ! {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut chunk = vec![0u8; 1024 * 1024];
        for b in chunk.iter_mut().step_by(4096) {
            *b = 1;
        }
        hoard.push(std::hint::black_box(chunk));
        std::hint::black_box(&hoard);
    }
}

/// Recurses until the stack runs out. The frame holds a buffer and the
/// result is used after the call, so this is not a tail call, and
/// `black_box` keeps the optimiser from folding it into a loop.
fn recurse(depth: u64) -> u64 {
    let frame = std::hint::black_box([depth; 32]);
    // Never true at run time, but the compiler cannot know that.
    if std::hint::black_box(depth) == u64::MAX {
        return 0;
    }
    let below = recurse(std::hint::black_box(depth + 1));
    std::hint::black_box(frame[(depth % 32) as usize]).wrapping_add(below)
}

/// As [`recurse`], but the frame lives in wasm locals only (no buffer in
/// linear memory), so what runs out is the engine's call stack.
fn recurse_lean(depth: u64) -> u64 {
    if std::hint::black_box(depth) == u64::MAX {
        return 0;
    }
    let below = recurse_lean(std::hint::black_box(depth + 1));
    std::hint::black_box(depth).wrapping_add(below)
}

/// A reason of [`GARBAGE_REASON_BYTES`]: `garbage ` then `Z`s.
pub fn garbage_reason() -> String {
    let mut s = String::with_capacity(GARBAGE_REASON_BYTES);
    s.push_str("garbage ");
    s.extend(std::iter::repeat_n('Z', GARBAGE_REASON_BYTES - s.len()));
    s
}

export_destination!(Hostile);

#[cfg(test)]
mod tests {
    use serde_json::json;
    use switchyard_plugin_sdk::http::{HttpError, Response};
    use switchyard_plugin_sdk::testing::{Harness, event};

    use super::*;

    fn harness(settings: serde_json::Value) -> Harness<Hostile> {
        Harness::new(settings).expect("valid settings")
    }

    fn batch(n: usize) -> Vec<Event> {
        (0..n)
            .map(|i| event(json!({"type": "track", "event": "E", "userId": "u", "messageId": format!("m{i}")})))
            .collect()
    }

    #[test]
    fn settings_are_checked() {
        let err = Harness::<Hostile>::new(json!({"mode": "teleport"})).err().unwrap();
        assert!(matches!(err, InitError::InvalidSettings(m) if m.contains("teleport")));
        let err = Harness::<Hostile>::new(json!({"mode": "forbidden-host"})).err().unwrap();
        assert!(matches!(err, InitError::InvalidSettings(m) if m.contains("url")));
        assert!(Harness::<Hostile>::new(json!({"mode": "spin", "bogus": 1})).is_err());
        assert!(Harness::<Hostile>::new(json!({"mode": "slow-response", "url": "http://127.0.0.1:1/x"})).is_ok());
    }

    #[test]
    fn wrong_count_returns_one_outcome_too_few() {
        // Past the harness, whose `deliver` would (rightly) refuse this.
        let mut h = harness(json!({"mode": "wrong-count"}));
        let d = h.destination();
        assert_eq!(d.deliver(batch(5)).len(), 4);
        assert_eq!(d.deliver(batch(1)).len(), 0);
        assert_eq!(d.deliver(Vec::new()).len(), 1);
    }

    #[test]
    fn garbage_retries_with_a_huge_reason() {
        let mut h = harness(json!({"mode": "garbage"}));
        let outcomes = h.deliver(batch(2));
        assert_eq!(outcomes.len(), 2);
        for o in outcomes {
            let Outcome::Retry { reason, .. } = o else { panic!("not a retry: {o:?}") };
            assert_eq!(reason.len(), GARBAGE_REASON_BYTES);
            assert!(reason.starts_with("garbage ZZZ"));
        }
    }

    #[test]
    fn retry_forever_asks_for_the_longest_delay() {
        let mut h = harness(json!({"mode": "retry-forever"}));
        let outcomes = h.deliver(batch(2));
        assert_eq!(outcomes.len(), 2);
        for o in outcomes {
            let Outcome::Retry { after_ms, .. } = o else { panic!("not a retry: {o:?}") };
            assert_eq!(after_ms, Some(u64::MAX));
        }
    }

    #[test]
    fn log_flood_writes_thousands_of_lines() {
        let mut h = harness(json!({"mode": "log-flood"}));
        assert_eq!(h.deliver(batch(1)), vec![Outcome::Delivered]);
        assert_eq!(h.logs().len(), FLOOD_LINES);
    }

    #[test]
    fn forbidden_host_posts_then_claims_delivered() {
        let mut h = harness(json!({"mode": "forbidden-host", "url": "http://evil.example/x"}));
        h.respond(|_| Err(HttpError::Denied("http://evil.example:80".into())));
        assert_eq!(h.deliver(batch(2)), vec![Outcome::Delivered; 2]);
        let reqs = h.requests();
        assert_eq!((reqs.len(), reqs[0].url.as_str(), reqs[0].body.as_str()), (1, "http://evil.example/x", "m0\nm1"));
    }

    #[test]
    fn calling_modes_map_the_response() {
        let mut h = harness(json!({"mode": "giant-response", "url": "http://127.0.0.1:1/big"}));
        h.push_response(Err(HttpError::ResponseTooLarge));
        h.push_response(Ok(Response::new(200, "ok")));
        assert!(matches!(&h.deliver(batch(1))[0], Outcome::Rejected(_)));
        assert_eq!(h.deliver(batch(1)), vec![Outcome::Delivered]);
    }

    #[test]
    fn panic_mode_panics_with_its_message() {
        let mut h = harness(json!({"mode": "panic"}));
        let err = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| h.deliver(batch(1)))).unwrap_err();
        assert!(err.downcast_ref::<String>().is_some_and(|m| m.contains(PANIC_MESSAGE)));
        let err = std::panic::catch_unwind(|| Harness::<Hostile>::new(json!({"mode": "init-panic"}))).err().unwrap();
        assert!(err.downcast_ref::<String>().is_some_and(|m| m.contains(PANIC_MESSAGE)));
    }
}
