//! Experiment exposures: recognising them, and keeping a destination from
//! counting one twice when both the vendor's SDK and the router report it.
//!
//! # Signatures
//!
//! An exposure is a `track` event whose name matches a signature: an exact
//! name, or a glob where `*` stands for any run of characters
//! (`statsig::*_exposure`). A signature names dot paths for the unit (the
//! user), the experiment and the variant; for each the first path holding
//! a non-empty string or a number wins. The built-in ones
//! ([`ExposureSignature::builtin`]) are GrowthBook's `Experiment Viewed`,
//! Amplitude's `$exposure` and `$impression`, Statsig's
//! `statsig::*_exposure` and Eppo's `Eppo Randomized Assignment`; those of
//! `[[exposure_events]]` are tried first, so they win.
//!
//! The dedupe key is FNV-1a 128 over unit, `0xFF`, experiment, `0xFF`,
//! variant (`0xFF` never occurs in UTF-8, so fields cannot run together;
//! a number is its JSON text; a missing variant is empty): stable across
//! builds and nodes. An exposure without a unit or experiment still counts
//! as one (`owner:sdk` drops it) but has no key, so it is never deduped.
//!
//! # Policies
//!
//! A destination's `exposures`: `all` (the default) delivers every one;
//! `owner:sdk` drops them all, as the vendor's SDK reports its own;
//! `owner:router` delivers each key once per 24 hours; `dedupe:<window>`
//! (`30s`, `15m`, `1h`, `7d`) once per window. The window runs from the
//! first delivery; a redelivery of that same `messageId` passes again, so
//! retries and replays are never taken for duplicates. Memory is bounded:
//! when full, the oldest key is forgotten. The memory is the process's:
//! neither persisted nor shared between nodes, so a restart or a second
//! node can deliver a key once more.
//!
//! # Errors
//!
//! Config is checked at load: [`ExposureRegistry::new`] refuses a signature
//! without an event name or with a field without paths,
//! [`ExposurePolicy::parse`] (and so `exposures = "…"` in TOML) anything
//! but the four forms, each with an [`ExposureError`] saying what it wants.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde_json::Value;

/// The window of `owner:router`.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// One `[[exposure_events]]` entry; each path field takes a string or a
/// list of strings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExposureSignature {
    /// The `track` event name, exact or a glob with `*`.
    pub event: String,
    #[serde(deserialize_with = "paths")]
    pub experiment: Vec<String>,
    #[serde(deserialize_with = "paths")]
    pub variant: Vec<String>,
    #[serde(default = "default_unit", deserialize_with = "paths")]
    pub unit: Vec<String>,
}

fn default_unit() -> Vec<String> {
    vec!["userId".to_owned(), "anonymousId".to_owned()]
}

fn paths<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    struct Paths;
    impl<'de> Visitor<'de> for Paths {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a dot path or a list of dot paths")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<String>, E> {
            Ok(vec![v.to_owned()])
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
            let mut out = Vec::new();
            while let Some(p) = seq.next_element::<String>()? {
                out.push(p);
            }
            Ok(out)
        }
    }
    d.deserialize_any(Paths)
}

/// The built-in signatures: event, experiment paths, variant paths, all
/// under `properties`; the unit is `userId`, then `anonymousId`.
const BUILTIN: [(&str, &[&str], &[&str]); 5] = [
    (
        "Experiment Viewed",
        &["experimentId", "experiment_id", "experimentName", "experiment_name"],
        &["variationId", "variation_id", "variationName", "variant"],
    ),
    ("$exposure", &["flag_key", "experiment_key"], &["variant"]),
    ("$impression", &["flag_key", "experiment_key"], &["variant"]),
    ("statsig::*_exposure", &["gate", "config", "experiment"], &["ruleID", "rule_id", "gateValue"]),
    ("Eppo Randomized Assignment", &["experiment", "featureFlag"], &["variation"]),
];

impl ExposureSignature {
    /// The signatures every registry has, in the order they are tried.
    pub fn builtin() -> Vec<ExposureSignature> {
        let under = |ps: &[&str]| ps.iter().map(|p| format!("properties.{p}")).collect();
        BUILTIN
            .iter()
            .map(|(event, experiment, variant)| ExposureSignature {
                event: (*event).to_owned(),
                experiment: under(experiment),
                variant: under(variant),
                unit: default_unit(),
            })
            .collect()
    }
}

/// Why exposure config is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExposureError {
    #[error("exposure_events[{0}]: `event` is empty")]
    EmptyEvent(usize),
    #[error("exposure_events[{index}]: `{field}` needs at least one path")]
    NoPaths { index: usize, field: &'static str },
    #[error("exposure_events[{index}]: `{field}` has an empty path or path segment: `{path}`")]
    EmptyPath { index: usize, field: &'static str, path: String },
    #[error("exposures: expected all, owner:sdk, owner:router or dedupe:<window> such as dedupe:1h, got `{0}`")]
    Policy(String),
    #[error(
        "exposures: `{0}` is not a window: a whole number above zero and s, m, h or d, such as 30s, 15m, 1h, 24h or 7d"
    )]
    Window(String),
}

#[derive(Debug, Clone)]
struct Compiled {
    event: String,
    glob: bool,
    experiment: Vec<Vec<String>>,
    variant: Vec<Vec<String>>,
    unit: Vec<Vec<String>>,
}

impl Compiled {
    fn of(s: &ExposureSignature) -> Compiled {
        let split = |ps: &[String]| ps.iter().map(|p| p.split('.').map(str::to_owned).collect()).collect();
        Compiled {
            event: s.event.clone(),
            glob: s.event.contains('*'),
            experiment: split(&s.experiment),
            variant: split(&s.variant),
            unit: split(&s.unit),
        }
    }

    fn matches(&self, name: &str) -> bool {
        if self.glob { glob(self.event.as_bytes(), name.as_bytes()) } else { self.event == name }
    }
}

/// Whether `text` matches `pattern`, where `*` is any run of bytes.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if pattern.get(p) == Some(&b'*') {
            star = Some((p, t));
            p += 1;
        } else if pattern.get(p) == text.get(t) {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            (p, t) = (sp + 1, st + 1);
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern.iter().skip(p).all(|b| *b == b'*')
}

/// An event a signature recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exposure {
    /// The signature's index in [`ExposureRegistry::signatures`].
    pub signature: usize,
    /// The dedupe key; `None` without a unit or experiment.
    pub key: Option<u128>,
}

/// The signatures, compiled once per config load.
#[derive(Debug, Clone)]
pub struct ExposureRegistry {
    signatures: Vec<ExposureSignature>,
    compiled: Vec<Compiled>,
}

impl Default for ExposureRegistry {
    /// The built-in signatures only.
    fn default() -> Self {
        let signatures = ExposureSignature::builtin();
        ExposureRegistry { compiled: signatures.iter().map(Compiled::of).collect(), signatures }
    }
}

impl ExposureRegistry {
    /// The `extra` signatures, then the built-in ones.
    ///
    /// # Errors
    ///
    /// [`ExposureError`] naming the index in `extra` of the first signature
    /// with an empty event name, a field without paths, or an empty path.
    pub fn new(extra: &[ExposureSignature]) -> Result<ExposureRegistry, ExposureError> {
        for (index, s) in extra.iter().enumerate() {
            if s.event.is_empty() {
                return Err(ExposureError::EmptyEvent(index));
            }
            for (field, paths) in [("experiment", &s.experiment), ("variant", &s.variant), ("unit", &s.unit)] {
                if paths.is_empty() {
                    return Err(ExposureError::NoPaths { index, field });
                }
                if let Some(p) = paths.iter().find(|p| p.split('.').any(str::is_empty)) {
                    return Err(ExposureError::EmptyPath { index, field, path: p.clone() });
                }
            }
        }
        let signatures: Vec<ExposureSignature> = extra.iter().cloned().chain(ExposureSignature::builtin()).collect();
        Ok(ExposureRegistry { compiled: signatures.iter().map(Compiled::of).collect(), signatures })
    }

    /// Every signature, in the order they are tried.
    pub fn signatures(&self) -> &[ExposureSignature] {
        &self.signatures
    }

    /// What [`ExposureRegistry::key`] reads of an event.
    pub fn needs(&self) -> crate::raw::Needs {
        let mut needs = crate::raw::Needs::default();
        needs.add_path(&["type".to_owned()]);
        needs.add_path(&["event".to_owned()]);
        for c in &self.compiled {
            for path in c.unit.iter().chain(&c.experiment).chain(&c.variant) {
                needs.add_path(path);
            }
        }
        needs
    }

    /// The exposure `event` is, if any: only `track` events can be.
    pub fn key(&self, event: &Value) -> Option<Exposure> {
        if event.get("type").and_then(Value::as_str) != Some("track") {
            return None;
        }
        let name = event.get("event").and_then(Value::as_str)?;
        let signature = self.compiled.iter().position(|c| c.matches(name))?;
        let c = &self.compiled[signature];
        let key = match (first(event, &c.unit), first(event, &c.experiment)) {
            (Some(unit), Some(experiment)) => {
                let variant = first(event, &c.variant).unwrap_or_default();
                Some(key_of(&unit, &experiment, &variant))
            }
            _ => None,
        };
        Some(Exposure { signature, key })
    }
}

/// The first of `paths` holding a non-empty string or a number.
fn first<'a>(event: &'a Value, paths: &[Vec<String>]) -> Option<Cow<'a, str>> {
    paths.iter().find_map(|path| {
        let at = path.iter().try_fold(event, |at, p| at.get(p.as_str()))?;
        match at {
            Value::String(s) if !s.is_empty() => Some(Cow::Borrowed(s.as_str())),
            Value::Number(n) => Some(Cow::Owned(n.to_string())),
            _ => None,
        }
    })
}

const FNV128_OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
const FNV128_PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;

fn fnv1a_128(bytes: impl IntoIterator<Item = u8>) -> u128 {
    bytes.into_iter().fold(FNV128_OFFSET, |h, b| (h ^ u128::from(b)).wrapping_mul(FNV128_PRIME))
}

fn key_of(unit: &str, experiment: &str, variant: &str) -> u128 {
    fnv1a_128(unit.bytes().chain([0xFF]).chain(experiment.bytes()).chain([0xFF]).chain(variant.bytes()))
}

fn fnv1a_64(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// A destination's `exposures`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExposurePolicy {
    /// Deliver every exposure.
    #[default]
    All,
    /// The vendor's SDK reports exposures: drop them all.
    OwnerSdk,
    /// The router is the only source: deliver once per key per 24 hours.
    OwnerRouter,
    /// Deliver once per key per window.
    Dedupe(Duration),
}

impl ExposurePolicy {
    /// Parses `all`, `owner:sdk`, `owner:router` or `dedupe:<window>`.
    ///
    /// # Errors
    ///
    /// [`ExposureError::Policy`] for anything else, [`ExposureError::Window`]
    /// for a window that is not a whole number above zero and a unit.
    pub fn parse(s: &str) -> Result<ExposurePolicy, ExposureError> {
        match s {
            "all" => Ok(ExposurePolicy::All),
            "owner:sdk" => Ok(ExposurePolicy::OwnerSdk),
            "owner:router" => Ok(ExposurePolicy::OwnerRouter),
            _ => match s.strip_prefix("dedupe:") {
                Some(w) => window(w).map(ExposurePolicy::Dedupe).ok_or_else(|| ExposureError::Window(w.to_owned())),
                None => Err(ExposureError::Policy(s.to_owned())),
            },
        }
    }

    /// The dedupe window, if the policy dedupes.
    pub fn window(self) -> Option<Duration> {
        match self {
            ExposurePolicy::All | ExposurePolicy::OwnerSdk => None,
            ExposurePolicy::OwnerRouter => Some(DEFAULT_WINDOW),
            ExposurePolicy::Dedupe(w) => Some(w),
        }
    }
}

fn window(s: &str) -> Option<Duration> {
    let unit = match s.as_bytes().last()? {
        b's' => 1,
        b'm' => 60,
        b'h' => 3600,
        b'd' => 86_400,
        _ => return None,
    };
    let digits = &s[..s.len() - 1];
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs = digits.parse::<u64>().ok()?.checked_mul(unit)?;
    (secs > 0).then(|| Duration::from_secs(secs))
}

impl<'de> Deserialize<'de> for ExposurePolicy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ExposurePolicy::parse(&s).map_err(de::Error::custom)
    }
}

/// Keys delivered within a window, for one destination, in bounded
/// memory: O(1) amortized per call.
#[derive(Debug)]
pub struct ExposureDeduper {
    window: Duration,
    max_keys: usize,
    state: Mutex<DedupeState>,
}

#[derive(Debug, Default)]
struct DedupeState {
    /// Key → when first delivered, and a hash of that event's `messageId`.
    seen: HashMap<u128, (Instant, u64)>,
    /// Keys in the order remembered; an entry whose time differs from the
    /// key's in `seen` is stale (the key was forgotten, then remembered).
    order: VecDeque<(u128, Instant)>,
}

impl DedupeState {
    /// Forgets the oldest entry; false when there is none.
    fn pop_oldest(&mut self) -> bool {
        let Some((key, at)) = self.order.pop_front() else { return false };
        if self.seen.get(&key).is_some_and(|(first, _)| *first == at) {
            self.seen.remove(&key);
        }
        true
    }
}

impl ExposureDeduper {
    /// Remembers up to `max_keys` keys (at least one) for `window` each.
    pub fn new(window: Duration, max_keys: usize) -> ExposureDeduper {
        ExposureDeduper { window, max_keys: max_keys.max(1), state: Mutex::new(DedupeState::default()) }
    }

    /// Whether to deliver the exposure `key` of the event `message_id` at
    /// `now`: yes when the key was not delivered within the window, or was
    /// delivered by this same (non-empty) `message_id`.
    pub fn admit(&self, key: u128, message_id: &str, now: Instant) -> bool {
        let message = fnv1a_64(message_id);
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        while s.order.front().is_some_and(|(_, at)| now.saturating_duration_since(*at) >= self.window) {
            s.pop_oldest();
        }
        if let Some((first, by)) = s.seen.get(&key)
            && now.saturating_duration_since(*first) < self.window
        {
            return !message_id.is_empty() && *by == message;
        }
        while s.seen.len() >= self.max_keys && !s.seen.contains_key(&key) && s.pop_oldest() {}
        s.seen.insert(key, (now, message));
        s.order.push_back((key, now));
        if s.order.len() > 2 * self.max_keys {
            let DedupeState { seen, order } = &mut *s;
            order.retain(|(k, at)| seen.get(k).is_some_and(|(first, _)| first == at));
        }
        true
    }

    /// How many keys are remembered (expired ones until swept).
    pub fn len(&self) -> usize {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a destination does with an event, as far as exposures go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExposureDecision {
    /// Not an exposure: other rules decide.
    NotExposure,
    Deliver,
    /// `owner:sdk`: the vendor's SDK reports it.
    DropOwnedBySdk,
    /// Delivered within the window already.
    DropDuplicate,
}

/// A destination's policy with its dedupe state.
#[derive(Debug)]
pub struct ExposureGate {
    policy: ExposurePolicy,
    deduper: Option<ExposureDeduper>,
}

impl ExposureGate {
    /// The gate for `policy`, remembering up to `max_keys` keys if it dedupes.
    pub fn new(policy: ExposurePolicy, max_keys: usize) -> ExposureGate {
        ExposureGate { policy, deduper: policy.window().map(|w| ExposureDeduper::new(w, max_keys)) }
    }

    pub fn policy(&self) -> ExposurePolicy {
        self.policy
    }

    pub fn deduper(&self) -> Option<&ExposureDeduper> {
        self.deduper.as_ref()
    }

    /// `all`: every event passes, so callers need not look at it.
    pub fn is_pass_through(&self) -> bool {
        self.policy == ExposurePolicy::All
    }

    /// Decides for `event` (with `messageId` `message_id`) now.
    pub fn decide(&self, registry: &ExposureRegistry, event: &Value, message_id: &str) -> ExposureDecision {
        self.decide_at(registry, event, message_id, Instant::now())
    }

    /// [`ExposureGate::decide`] at `now`.
    pub fn decide_at(
        &self,
        registry: &ExposureRegistry,
        event: &Value,
        message_id: &str,
        now: Instant,
    ) -> ExposureDecision {
        let Some(exposure) = registry.key(event) else { return ExposureDecision::NotExposure };
        if self.policy == ExposurePolicy::OwnerSdk {
            return ExposureDecision::DropOwnedBySdk;
        }
        match (&self.deduper, exposure.key) {
            (Some(d), Some(key)) if !d.admit(key, message_id, now) => ExposureDecision::DropDuplicate,
            _ => ExposureDecision::Deliver,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn track(event: &str, properties: Value) -> Value {
        json!({"type": "track", "event": event, "userId": "u1", "messageId": "m1", "properties": properties})
    }

    #[test]
    fn every_builtin_signature_is_recognised_with_its_key() {
        let r = ExposureRegistry::default();
        let cases = [
            (track("Experiment Viewed", json!({"experimentId": "checkout", "variationId": 1})), 0, "1"),
            (track("Experiment Viewed", json!({"experiment_name": "checkout", "variant": "b"})), 0, "b"),
            (track("$exposure", json!({"flag_key": "checkout", "variant": "on"})), 1, "on"),
            (track("$impression", json!({"flag_key": "checkout", "variant": "on"})), 2, "on"),
            (track("statsig::gate_exposure", json!({"gate": "checkout", "ruleID": "r1"})), 3, "r1"),
            (track("statsig::experiment_exposure", json!({"experiment": "checkout", "rule_id": "r2"})), 3, "r2"),
            (track("Eppo Randomized Assignment", json!({"experiment": "checkout", "variation": "c"})), 4, "c"),
        ];
        for (event, signature, variant) in cases {
            let key = Some(key_of("u1", "checkout", variant));
            assert_eq!(r.key(&event), Some(Exposure { signature, key }), "{event}");
        }
        assert_eq!(r.key(&track("Order Completed", json!({"experimentId": "checkout"}))), None);
    }

    #[test]
    fn keys_are_stable_and_tell_fields_apart() {
        assert_eq!(fnv1a_128(*b"a"), 0xd228_cb69_6f1a_8caf_7891_2b70_4e4a_8964, "the published FNV-1a 128 vector");
        assert_ne!(key_of("u1", "ab", "c"), key_of("u1", "a", "bc"));
        let r = ExposureRegistry::default();
        let k = |v: Value| r.key(&v).and_then(|e| e.key);
        let no_variant = k(track("$exposure", json!({"flag_key": "f"})));
        assert_eq!(no_variant, Some(key_of("u1", "f", "")), "a missing variant is empty");
        assert_ne!(no_variant, k(track("$exposure", json!({"flag_key": "f", "variant": "on"}))));
    }

    #[test]
    fn globs_match_any_run_of_characters() {
        assert!(glob(b"statsig::*_exposure", b"statsig::config_exposure"));
        assert!(glob(b"statsig::*_exposure", b"statsig::_exposure"));
        assert!(glob(b"a*b*c", b"aXbYbZc"));
        assert!(glob(b"*", b""));
        assert!(!glob(b"statsig::*_exposure", b"statsig::config_exposures"));
        assert!(!glob(b"statsig::*_exposure", b"other::gate_exposure"));
    }

    #[test]
    fn a_custom_signature_wins_over_the_builtins() {
        #[derive(Deserialize)]
        struct Config {
            exposure_events: Vec<ExposureSignature>,
        }
        let c: Config = toml::from_str(
            "[[exposure_events]]\nevent = \"Experiment Viewed\"\nexperiment = \"properties.test\"\n\
             variant = [\"properties.arm\"]\nunit = \"properties.account\"",
        )
        .expect("toml");
        let r = ExposureRegistry::new(&c.exposure_events).expect("valid");
        let e = track("Experiment Viewed", json!({"test": "t", "arm": "a", "account": 7, "experimentId": "x"}));
        assert_eq!(r.key(&e), Some(Exposure { signature: 0, key: Some(key_of("7", "t", "a")) }));
        assert_eq!(r.signatures().len(), 1 + ExposureSignature::builtin().len());
        let unknown = "[[exposure_events]]\nevent = \"E\"\nexperiment = \"e\"\nvariant = \"v\"\nextra = 1";
        assert!(toml::from_str::<Config>(unknown).is_err());
    }

    #[test]
    fn bad_signatures_are_refused_by_index() {
        let ok = ExposureSignature {
            event: "E".into(),
            experiment: vec!["properties.e".into()],
            variant: vec!["properties.v".into()],
            unit: default_unit(),
        };
        let bad = |s: ExposureSignature| ExposureRegistry::new(&[ok.clone(), s]).expect_err("refused");
        assert_eq!(bad(ExposureSignature { event: String::new(), ..ok.clone() }), ExposureError::EmptyEvent(1));
        assert_eq!(
            bad(ExposureSignature { unit: Vec::new(), ..ok.clone() }),
            ExposureError::NoPaths { index: 1, field: "unit" }
        );
        let path = "properties..e".to_owned();
        assert_eq!(
            bad(ExposureSignature { experiment: vec![path.clone()], ..ok.clone() }),
            ExposureError::EmptyPath { index: 1, field: "experiment", path }
        );
    }

    #[test]
    fn the_unit_falls_back_to_anonymous_id_and_without_one_there_is_no_key() {
        let r = ExposureRegistry::default();
        let mut e = json!({"type": "track", "event": "$exposure", "userId": "", "anonymousId": "a1",
            "properties": {"flag_key": "f", "variant": "on"}});
        assert_eq!(r.key(&e).and_then(|x| x.key), Some(key_of("a1", "f", "on")));
        e["anonymousId"] = Value::Null;
        assert_eq!(r.key(&e), Some(Exposure { signature: 1, key: None }));
    }

    #[test]
    fn only_track_events_are_exposures() {
        let r = ExposureRegistry::default();
        for kind in ["page", "screen", "identify", "group"] {
            let mut e = track("$exposure", json!({"flag_key": "f"}));
            e["type"] = json!(kind);
            assert_eq!(r.key(&e), None, "{kind}");
        }
        assert_eq!(r.key(&json!({"event": "$exposure"})), None);
    }

    #[test]
    fn policies_parse_and_refuse_with_the_expected_forms() {
        let p = |s: &str| ExposurePolicy::parse(s);
        assert_eq!(p("all"), Ok(ExposurePolicy::All));
        assert_eq!(p("owner:sdk"), Ok(ExposurePolicy::OwnerSdk));
        assert_eq!(p("owner:router").map(ExposurePolicy::window), Ok(Some(DEFAULT_WINDOW)));
        for (s, secs) in [("30s", 30), ("15m", 900), ("1h", 3600), ("24h", 86_400), ("7d", 604_800)] {
            assert_eq!(p(&format!("dedupe:{s}")), Ok(ExposurePolicy::Dedupe(Duration::from_secs(secs))));
        }
        let e = p("owner").expect_err("unknown");
        assert_eq!(
            e.to_string(),
            "exposures: expected all, owner:sdk, owner:router or dedupe:<window> such as dedupe:1h, got `owner`"
        );
        for w in ["", "h", "0s", "1.5h", "-1h", "1w", "1 h", "99999999999999999999d"] {
            assert_eq!(p(&format!("dedupe:{w}")), Err(ExposureError::Window(w.to_owned())), "{w}");
        }
        #[derive(Deserialize)]
        struct Destination {
            #[serde(default)]
            exposures: ExposurePolicy,
        }
        let d: Destination = toml::from_str("exposures = \"owner:sdk\"").expect("toml");
        assert_eq!(d.exposures, ExposurePolicy::OwnerSdk);
        assert_eq!(toml::from_str::<Destination>("").expect("toml").exposures, ExposurePolicy::All);
        let err = toml::from_str::<Destination>("exposures = \"sdk\"").err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("got `sdk`")));
    }

    #[test]
    fn dedupe_drops_repeats_within_the_window_and_passes_after_it() {
        let d = ExposureDeduper::new(Duration::from_secs(60), 100);
        let t0 = Instant::now();
        assert!(d.admit(1, "m1", t0));
        assert!(!d.admit(1, "m2", t0 + Duration::from_secs(59)), "a repeat within the window");
        assert!(d.admit(1, "m1", t0 + Duration::from_secs(30)), "a redelivery of the first event");
        assert!(d.admit(2, "m3", t0 + Duration::from_secs(30)), "another key");
        assert!(d.admit(1, "m4", t0 + Duration::from_secs(60)), "the window is over");
        assert!(!d.admit(1, "m1", t0 + Duration::from_secs(61)), "the first event is no longer the one remembered");
        assert_eq!(d.len(), 2);
        let d = ExposureDeduper::new(Duration::from_secs(60), 100);
        assert!(d.admit(1, "", t0));
        assert!(!d.admit(1, "", t0), "an empty messageId is no evidence of a redelivery");
    }

    #[test]
    fn a_full_deduper_forgets_its_oldest_key() {
        let d = ExposureDeduper::new(Duration::from_secs(60), 2);
        let t0 = Instant::now();
        for (i, key) in [1, 2, 3].into_iter().enumerate() {
            assert!(d.admit(key, "m", t0 + Duration::from_secs(i as u64)));
        }
        assert_eq!(d.len(), 2);
        assert!(!d.admit(3, "other", t0 + Duration::from_secs(3)));
        assert!(d.admit(1, "other", t0 + Duration::from_secs(3)), "key 1 was evicted");
        for i in 0..100u64 {
            d.admit(u128::from(i % 3), "m", t0 + Duration::from_secs(i * 30));
        }
        assert!(d.len() <= 2);
    }

    #[test]
    fn the_gate_applies_its_policy_to_exposures_only() {
        let r = ExposureRegistry::default();
        let exposure = track("$exposure", json!({"flag_key": "f", "variant": "on"}));
        let other = track("Order Completed", json!({"total": 5}));
        let sdk = ExposureGate::new(ExposurePolicy::OwnerSdk, 10);
        assert_eq!(sdk.decide(&r, &exposure, "m1"), ExposureDecision::DropOwnedBySdk);
        assert_eq!(sdk.decide(&r, &other, "m2"), ExposureDecision::NotExposure);
        assert!(!sdk.is_pass_through() && sdk.deduper().is_none());
        let all = ExposureGate::new(ExposurePolicy::All, 10);
        assert!(all.is_pass_through());
        assert_eq!(all.decide(&r, &exposure, "m1"), ExposureDecision::Deliver);
        assert_eq!(all.decide(&r, &exposure, "m2"), ExposureDecision::Deliver);
        let router = ExposureGate::new(ExposurePolicy::OwnerRouter, 10);
        let t0 = Instant::now();
        assert_eq!(router.decide_at(&r, &exposure, "m1", t0), ExposureDecision::Deliver);
        assert_eq!(router.decide_at(&r, &exposure, "m1", t0), ExposureDecision::Deliver);
        assert_eq!(router.decide_at(&r, &exposure, "m2", t0), ExposureDecision::DropDuplicate);
        assert_eq!(router.decide_at(&r, &exposure, "m3", t0 + DEFAULT_WINDOW), ExposureDecision::Deliver);
        let keyless = json!({"type": "track", "event": "$exposure", "messageId": "m4", "properties": {}});
        assert_eq!(router.decide_at(&r, &keyless, "m4", t0), ExposureDecision::Deliver);
        assert_eq!(router.decide_at(&r, &keyless, "m5", t0), ExposureDecision::Deliver);
    }
}
