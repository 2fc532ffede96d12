//! The governance parts of the config: each source's tracking plan, its
//! controls and transformations, each destination's sources, exposure rule
//! and transformations, and `[governance]` (the exposure registry, the
//! audit's PII list).
//!
//! Everything here is compiled at every config load (start, `validate`,
//! reload), so a plan or rule that does not compile refuses the whole
//! config, naming the file and line, and events are never checked against
//! a half-loaded plan.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use switchyard_governance::{ExposureRegistry, ExposureSignature, TrackingPlan, Transforms};

use super::Config;

/// `[governance]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GovernanceConfig {
    /// `[[governance.exposure_events]]`: exposure events besides the
    /// built-in ones (`Experiment Viewed`, `$exposure`, `$impression`,
    /// `statsig::*_exposure`, `Eppo Randomized Assignment`).
    pub exposure_events: Vec<ExposureSignature>,
    /// Exposure keys each deduping destination remembers; past it, the
    /// oldest are forgotten.
    pub exposure_max_keys: usize,
    /// Distinct (event, field, kind) violations kept per source.
    pub violations_max_keys: usize,
    #[serde(default)]
    pub audit: AuditConfig,
}

impl Default for GovernanceConfig {
    fn default() -> Self {
        GovernanceConfig {
            exposure_events: Vec::new(),
            exposure_max_keys: 1_000_000,
            violations_max_keys: 1000,
            audit: AuditConfig::default(),
        }
    }
}

/// `[governance.audit]`: what `switchyard audit` looks for.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// A destination that delivered nothing for this long is orphaned:
    /// `30s`, `15m`, `12h`, `7d`.
    #[serde(deserialize_with = "duration")]
    pub orphaned_after: Duration,
    /// Field names that are personal data, matched case-insensitively
    /// against the keys of `properties`, `traits` and `context` (and one
    /// level inside them), ignoring `_` and `-`.
    pub pii_fields: Vec<String>,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            orphaned_after: Duration::from_secs(7 * 86_400),
            pii_fields: [
                "email",
                "phone",
                "ip",
                "address",
                "street",
                "first_name",
                "last_name",
                "birthday",
                "ssn",
                "password",
                "credit_card",
            ]
            .map(str::to_owned)
            .to_vec(),
        }
    }
}

fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    parse_duration(&text)
        .ok_or_else(|| serde::de::Error::custom(format!("`{text}` is not a duration such as 30s, 15m, 12h or 7d")))
}

/// `30s`, `15m`, `12h`, `7d`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let n: u64 = text[..split].parse().ok()?;
    let unit = match &text[split..] {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    n.checked_mul(unit).map(Duration::from_secs)
}

/// A source's tracking plan file, compiled.
#[derive(Debug)]
pub struct LoadedPlan {
    pub path: PathBuf,
    /// The file's text: a reload that changed it applies the new plan.
    pub text: String,
    pub plan: TrackingPlan,
}

impl PartialEq for LoadedPlan {
    fn eq(&self, other: &Self) -> bool {
        self.path == other.path && self.text == other.text
    }
}

/// Resolves plan paths against the config's folder and compiles every
/// source's plan; `(key, message)` for each that cannot be used.
pub(super) fn load_plans(config: &mut Config, base: &Path) -> Vec<(String, String)> {
    let mut bad = Vec::new();
    for (i, s) in config.sources.iter_mut().enumerate() {
        let Some(path) = s.tracking_plan.as_mut() else { continue };
        if path.is_relative() {
            *path = base.join(&*path);
        }
        let key = format!("sources[{i}].tracking_plan");
        let text = match std::fs::read_to_string(&*path) {
            Ok(t) => t,
            Err(e) => {
                bad.push((key, format!("source `{}`: cannot read {}: {e}", s.name, path.display())));
                continue;
            }
        };
        match TrackingPlan::parse(&text) {
            Ok(plan) => s.plan = Some(Arc::new(LoadedPlan { path: path.clone(), text, plan })),
            Err(e) => bad.push((key, format!("source `{}`: {}:{}: {}", s.name, path.display(), e.line, e.message))),
        }
    }
    bad
}

/// The checks that need the whole config: forwarding targets and
/// destinations' sources name sources; rules compile.
pub(super) fn validate(config: &Config) -> Vec<(String, String)> {
    let mut bad = Vec::new();
    let is_source = |name: &str| config.sources.iter().any(|s| s.name == name);
    for (i, s) in config.sources.iter().enumerate() {
        let settings = &s.schema_settings;
        for (field, target) in [
            ("forwarding_blocked_events_to", &settings.forwarding_blocked_events_to),
            ("forwarding_violations_to", &settings.forwarding_violations_to),
        ] {
            let Some(target) = target else { continue };
            let problem = if *target == s.name {
                Some("must name another source".to_owned())
            } else if !is_source(target) {
                Some(format!("no source is named `{target}`"))
            } else {
                None
            };
            if let Some(p) = problem {
                bad.push((
                    format!("sources[{i}].schema_settings.{field}"),
                    format!("source `{}`: {field}: {p}", s.name),
                ));
            }
        }
        if let Err((j, e)) = Transforms::compile(&s.transformations) {
            bad.push((
                format!("sources[{i}].transformations[{j}]"),
                format!("source `{}`: transformations[{j}]: {e}", s.name),
            ));
        }
    }
    for (i, d) in config.destinations.iter().enumerate() {
        for (j, name) in d.sources.iter().flatten().enumerate() {
            if !is_source(name) {
                bad.push((
                    format!("destinations[{i}].sources[{j}]"),
                    format!("destination `{}`: no source is named `{name}`", d.name),
                ));
            }
        }
        if let Err((j, e)) = Transforms::compile(&d.transformations) {
            bad.push((
                format!("destinations[{i}].transformations[{j}]"),
                format!("destination `{}`: transformations[{j}]: {e}", d.name),
            ));
        }
    }
    if let Err(e) = ExposureRegistry::new(&config.governance.exposure_events) {
        bad.push(("governance.exposure_events".to_owned(), e.to_string()));
    }
    if config.governance.exposure_max_keys == 0 {
        bad.push(("governance.exposure_max_keys".to_owned(), "must be positive".to_owned()));
    }
    bad
}
