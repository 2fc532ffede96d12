//! Tracking plans, as Segment Protocols defines them: a JSON file of rules,
//! each a JSON Schema for one kind of call, and per-source controls that
//! decide what happens to an event that breaks them.
//!
//! # The file
//!
//! ```json
//! { "name": "Shop",
//!   "rules": [
//!     { "type": "common", "json_schema": { "required": ["userId"] } },
//!     { "type": "track", "key": "Order Completed", "version": 1,
//!       "json_schema": { "properties": { "properties": {
//!         "type": "object", "required": ["order_id"],
//!         "properties": { "order_id": {"type": "string"}, "total": {"type": "number"} } } } } },
//!     { "type": "identify", "json_schema": { "properties": { "traits": {
//!         "properties": { "email": {"type": "string", "format": "email"} } } } } } ] }
//! ```
//!
//! Segment's rule model, exported by its Public API: `type` is `common`,
//! `track`, `identify`, `group`, `page` or `screen` (upper case accepted);
//! `key` names the track event or the page or screen (identify and group
//! have one rule each); `version` (default 1) lets clients pick a schema
//! with `context.protocols.event_version`, and a missing or unknown version
//! is checked against the oldest. A `json_schema` (an object, or a string
//! holding one) describes the **whole event**, as Segment's do: an event's
//! properties are under `properties.properties`, traits under
//! `properties.traits`. It is draft-07 unless its `$schema` names another
//! draft; references are never fetched (the validator is built without
//! HTTP or file resolution). The `common` rule applies to every event.
//!
//! # What is checked
//!
//! For a track call: whether its event is planned (exactly, case and
//! spacing included), whether its top-level properties are all planned
//! (named in the rule's `properties.properties.properties`), and the rule's
//! schema. Identify and group: the traits (`properties.traits.properties`)
//! and the schema. Page and screen: the rule keyed by their `name`, if there
//! is one. Every call, alias included: the common schema. Each problem is a
//! [`Violation`] with its kind and the field's path.
//!
//! # What is done: [`SchemaSettings`]
//!
//! Segment's "Schema Configuration", with the names of its API. Page and
//! screen calls follow the `track` settings (except unplanned events,
//! which are track calls only, as in Segment). Omitted fields are listed
//! in the event's `context.protocols` (`omitted`, `omitted_on_violation`),
//! as Segment does. Every control defaults to allow: a plan connected with
//! no settings reports violations and changes nothing.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use switchyard_plugin_sdk::json::{Document, Kind};

use crate::raw::Needs;
use crate::tape::{Tape, TapeNode, TapeValidator};

/// A tracking plan file that cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct PlanError {
    /// 1-based line in the plan file.
    pub line: usize,
    pub message: String,
}

/// The kind of call a rule plans.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleType {
    #[serde(alias = "COMMON")]
    Common,
    #[serde(alias = "TRACK")]
    Track,
    #[serde(alias = "IDENTIFY")]
    Identify,
    #[serde(alias = "GROUP")]
    Group,
    #[serde(alias = "PAGE")]
    Page,
    #[serde(alias = "SCREEN")]
    Screen,
}

impl RuleType {
    fn of(event_type: &str) -> Option<RuleType> {
        Some(match event_type {
            "track" => RuleType::Track,
            "identify" => RuleType::Identify,
            "group" => RuleType::Group,
            "page" => RuleType::Page,
            "screen" => RuleType::Screen,
            _ => return None,
        })
    }

    /// Where this kind of call keeps what the plan lists.
    fn planned_object(self) -> &'static str {
        match self {
            RuleType::Identify | RuleType::Group => "traits",
            _ => "properties",
        }
    }
}

/// One rule as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    #[serde(rename = "type")]
    pub rule_type: RuleType,
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default = "first_version")]
    pub version: u32,
    pub json_schema: Value,
}

fn first_version() -> u32 {
    1
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanFile<'a> {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(borrow)]
    rules: Vec<&'a RawValue>,
}

/// One compiled rule.
struct Rule {
    version: u32,
    validator: jsonschema::Validator,
    /// The same schema, for the event's indexed text ([`TrackingPlan::passes`]).
    tape: TapeValidator,
    /// The top-level properties (or traits) it plans.
    planned: BTreeSet<String>,
}

impl std::fmt::Debug for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rule").field("version", &self.version).field("planned", &self.planned).finish()
    }
}

/// A compiled tracking plan; checking an event never fails.
#[derive(Debug)]
pub struct TrackingPlan {
    pub name: Option<String>,
    common: Option<Rule>,
    /// type → key → its versions, oldest first. Identify and group rules
    /// have the key `""`.
    rules: BTreeMap<RuleType, BTreeMap<String, Vec<Rule>>>,
    len: usize,
    /// What checking an event reads of it.
    needs: Needs,
}

/// `schema_settings` of a source: Segment's Protocols controls.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaSettings {
    /// A source that receives blocked events instead of dropping them.
    #[serde(default)]
    pub forwarding_blocked_events_to: Option<String>,
    /// A source that receives one `Violation Generated` track call per
    /// violation.
    #[serde(default)]
    pub forwarding_violations_to: Option<String>,
    /// Write the violations into the event's `context.protocols.violations`
    /// (RudderStack's `propagateValidationErrors`).
    #[serde(default)]
    pub propagate_violations: bool,
    #[serde(default)]
    pub track: TrackSettings,
    #[serde(default)]
    pub identify: TraitSettings,
    #[serde(default)]
    pub group: TraitSettings,
}

/// `schema_settings.track` (also used for page and screen calls).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackSettings {
    /// false: block track events the plan does not list.
    #[serde(default = "yes")]
    pub allow_unplanned_events: bool,
    /// false: omit properties the event's rule does not list.
    #[serde(default = "yes")]
    pub allow_unplanned_event_properties: bool,
    /// false: block an event that breaks its rule's schema.
    #[serde(default = "yes")]
    pub allow_event_on_violations: bool,
    /// false: omit the properties that break the rule's schema.
    #[serde(default = "yes")]
    pub allow_properties_on_violations: bool,
    /// What breaking the common schema does.
    #[serde(default)]
    pub common_event_on_violations: CommonAction,
}

impl Default for TrackSettings {
    fn default() -> Self {
        TrackSettings {
            allow_unplanned_events: true,
            allow_unplanned_event_properties: true,
            allow_event_on_violations: true,
            allow_properties_on_violations: true,
            common_event_on_violations: CommonAction::Allow,
        }
    }
}

/// `schema_settings.identify` and `.group`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraitSettings {
    /// false: omit traits the rule does not list.
    #[serde(default = "yes")]
    pub allow_unplanned_traits: bool,
    /// false: omit the traits that break the rule's schema.
    #[serde(default = "yes")]
    pub allow_traits_on_violations: bool,
    #[serde(default)]
    pub common_event_on_violations: CommonAction,
}

impl Default for TraitSettings {
    fn default() -> Self {
        TraitSettings {
            allow_unplanned_traits: true,
            allow_traits_on_violations: true,
            common_event_on_violations: CommonAction::Allow,
        }
    }
}

fn yes() -> bool {
    true
}

/// What breaking the common schema does: Segment's `ALLOW`,
/// `OMIT_PROPERTIES` (`OMIT_TRAITS` for identify and group) and `BLOCK`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum CommonAction {
    #[default]
    #[serde(rename = "ALLOW", alias = "allow")]
    Allow,
    #[serde(rename = "OMIT_PROPERTIES", alias = "OMIT_TRAITS", alias = "OMIT", alias = "omit")]
    Omit,
    #[serde(rename = "BLOCK", alias = "block")]
    Block,
}

/// What kind of problem a violation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ViolationKind {
    UnplannedEvent,
    UnplannedProperty,
    RequiredMissing,
    DatatypeMismatch,
    AdditionalProperties,
    Pattern,
    Enum,
    Format,
    Range,
    Unknown,
}

impl ViolationKind {
    /// The name used in the admin API and in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ViolationKind::UnplannedEvent => "unplanned_event",
            ViolationKind::UnplannedProperty => "unplanned_property",
            ViolationKind::RequiredMissing => "required_missing",
            ViolationKind::DatatypeMismatch => "datatype_mismatch",
            ViolationKind::AdditionalProperties => "additional_properties",
            ViolationKind::Pattern => "pattern",
            ViolationKind::Enum => "enum",
            ViolationKind::Format => "format",
            ViolationKind::Range => "range",
            ViolationKind::Unknown => "unknown",
        }
    }

    /// Segment's `violationType` label, for `Violation Generated` events.
    pub fn label(self) -> &'static str {
        match self {
            ViolationKind::UnplannedEvent => "Unplanned Event",
            ViolationKind::UnplannedProperty => "Unplanned Property",
            ViolationKind::RequiredMissing => "Required",
            ViolationKind::DatatypeMismatch => "Type",
            ViolationKind::AdditionalProperties => "Additional Properties",
            ViolationKind::Pattern => "Pattern",
            ViolationKind::Enum => "Enum",
            ViolationKind::Format => "Format",
            ViolationKind::Range => "Range",
            ViolationKind::Unknown => "Unknown",
        }
    }

    fn of(kind: &jsonschema::error::ValidationErrorKind) -> ViolationKind {
        use jsonschema::error::ValidationErrorKind as K;
        match kind {
            K::Required { .. } => ViolationKind::RequiredMissing,
            K::Type { .. } => ViolationKind::DatatypeMismatch,
            K::AdditionalProperties { .. } | K::UnevaluatedProperties { .. } => ViolationKind::AdditionalProperties,
            K::Pattern { .. } => ViolationKind::Pattern,
            K::Enum { .. } | K::Constant { .. } => ViolationKind::Enum,
            K::Format { .. } => ViolationKind::Format,
            K::Minimum { .. }
            | K::Maximum { .. }
            | K::ExclusiveMinimum { .. }
            | K::ExclusiveMaximum { .. }
            | K::MinLength { .. }
            | K::MaxLength { .. }
            | K::MinItems { .. }
            | K::MaxItems { .. }
            | K::MultipleOf { .. } => ViolationKind::Range,
            _ => ViolationKind::Unknown,
        }
    }
}

/// Violations reported per event at most; past it, one `unknown`
/// violation says how many more there were.
pub const MAX_VIOLATIONS_PER_EVENT: usize = 20;

/// One problem with one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub kind: ViolationKind,
    /// The field's path from the event's root (`properties.total`), or
    /// `(root)` for the event as a whole; array indexes are written `[]`
    /// (`properties.items[].sku`), so one field is one row however many
    /// items break it.
    pub field: String,
    /// The same path, one key per segment, as in the event.
    pub path: Vec<String>,
    /// What is wrong, from the schema alone: never the value sent (it may
    /// be personal data).
    pub description: String,
    /// Found by the common schema rather than the event's own rule.
    pub common: bool,
}

/// What the plan decided for one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Keep it (perhaps with fields omitted).
    Allow,
    /// Block it: drop it, or forward it to `forwarding_blocked_events_to`.
    Block,
}

/// [`TrackingPlan::check`]'s answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    pub outcome: Outcome,
    pub violations: Vec<Violation>,
    /// Whether the event was changed (fields omitted, violations written).
    pub changed: bool,
}

impl TrackingPlan {
    /// Reads and compiles a plan file.
    ///
    /// # Errors
    ///
    /// [`PlanError`] at the line of the first problem: invalid JSON, an
    /// unknown key, a schema that does not compile, a rule missing its
    /// `key`, two rules with the same type, key and version.
    pub fn parse(text: &str) -> Result<TrackingPlan, PlanError> {
        let file: PlanFile<'_> = serde_json::from_str(text).map_err(|e| PlanError {
            line: e.line().max(1),
            message: e.to_string().rsplit_once(" at line").map_or(e.to_string(), |(m, _)| m.to_owned()),
        })?;
        let _ = file.description;
        let mut needs = Needs::default();
        for path in [&["type"][..], &["event"], &["name"], &["context", "protocols", "event_version"]] {
            needs.add_path(&path.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>());
        }
        let mut plan = TrackingPlan { name: file.name, common: None, rules: BTreeMap::new(), len: 0, needs };
        for (i, raw) in file.rules.iter().enumerate() {
            let line = line_of(text, raw.get());
            let fail = |message: String| PlanError { line, message: format!("rules[{i}]: {message}") };
            let rule: RuleConfig = serde_json::from_str(raw.get()).map_err(|e| {
                let m = e.to_string();
                let m = m.rsplit_once(" at line").map_or(m.clone(), |(m, _)| m.to_owned());
                PlanError { line: line + e.line().saturating_sub(1), message: format!("rules[{i}]: {m}") }
            })?;
            let key = match (rule.rule_type, rule.key) {
                (RuleType::Common | RuleType::Identify | RuleType::Group, _) => String::new(),
                (_, Some(k)) if !k.is_empty() => k,
                (t, _) => return Err(fail(format!("a {t:?} rule needs the `key` it plans").to_lowercase())),
            };
            let schema = match rule.json_schema {
                Value::String(s) => serde_json::from_str(&s).map_err(|e| fail(format!("json_schema: {e}")))?,
                other => other,
            };
            plan.needs.merge(&schema_needs(&schema));
            plan.needs.add_path(&[rule.rule_type.planned_object().to_owned()]);
            let compiled = Rule {
                version: rule.version,
                planned: planned_keys(&schema, rule.rule_type.planned_object()),
                validator: compile(jsonschema::options(), &schema)
                    .map_err(|e| fail(format!("json_schema does not compile: {e}")))?,
                tape: compile(jsonschema::options_for::<Tape>(), &schema)
                    .map_err(|e| fail(format!("json_schema does not compile: {e}")))?,
            };
            if rule.rule_type == RuleType::Common {
                if plan.common.is_some() {
                    return Err(fail("a second common rule".into()));
                }
                plan.common = Some(compiled);
            } else {
                let versions = plan.rules.entry(rule.rule_type).or_default().entry(key.clone()).or_default();
                if versions.iter().any(|r| r.version == compiled.version) {
                    return Err(fail(format!("`{key}` version {} is planned twice", compiled.version)));
                }
                versions.push(compiled);
                versions.sort_by_key(|r| r.version);
            }
            plan.len += 1;
        }
        Ok(plan)
    }

    /// What [`TrackingPlan::check`] reads of an event: checking
    /// [`crate::raw::sparse`] of these finds the same violations as
    /// checking the whole event (though its omissions, made on the sparse
    /// value, are not the event's).
    pub fn needs(&self) -> &Needs {
        &self.needs
    }

    /// The versions of the rule for (`t`, `key`).
    fn versions(&self, t: RuleType, key: &str) -> Option<&[Rule]> {
        self.rules.get(&t)?.get(key).map(Vec::as_slice)
    }

    /// How many rules the plan has.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether `event`, a normalized event's text, passes as it is:
    /// planned, valid under its rule and the common rule, nothing
    /// unplanned in it. Then [`TrackingPlan::check`] would find no
    /// violation and change nothing, so it need not run; when this says
    /// `false` (text that is not JSON included), it must, on the event
    /// parsed.
    ///
    /// The usual case costs an index of the text and a validation over
    /// it: no `serde_json::Value` is built ([`crate::tape`]).
    pub fn passes(&self, event: &str) -> bool {
        Document::parse(event).is_ok_and(|document| self.passes_indexed(&document))
    }

    fn passes_indexed(&self, event: &Document<'_>) -> bool {
        let root = event.object();
        let event_type = root.get("type").and_then(|t| t.str()).and_then(|t| RuleType::of(&t));
        if let Some(t) = event_type {
            let key = match t {
                RuleType::Identify | RuleType::Group => Some(Cow::Borrowed("")),
                RuleType::Track => root.get("event").and_then(|e| e.str()),
                _ => root.get("name").and_then(|n| n.str()),
            };
            let versions = key.and_then(|k| self.versions(t, &k));
            match versions {
                None if t == RuleType::Track => return false,
                None => {}
                Some(versions) => {
                    let asked = root.object("context").object("protocols").get("event_version");
                    let asked = asked.and_then(|v| match v.kind() {
                        Kind::Number => v.raw().parse::<u64>().ok(),
                        Kind::String => v.str().and_then(|s| s.parse().ok()),
                        _ => None,
                    });
                    let rule = pick(versions, asked);
                    let planned = root.object(t.planned_object());
                    let unplanned = planned.iter_as_sent().any(|(k, _)| !rule.planned.contains(&*k));
                    if unplanned || !rule.tape.is_valid(TapeNode::root(event)) {
                        return false;
                    }
                }
            }
        }
        self.common.as_ref().is_none_or(|common| common.tape.is_valid(TapeNode::root(event)))
    }

    /// Checks `event` (a normalized event), omits fields as `settings`
    /// say, and tells whether to keep it.
    pub fn check(&self, settings: &SchemaSettings, event: &mut Value) -> Checked {
        let event_type = event.get("type").and_then(Value::as_str).and_then(RuleType::of);
        let mut violations = Vec::new();
        let mut block = false;
        // Properties (or traits) to omit: unplanned ones, and those
        // breaking the rule's schema.
        let mut omitted = BTreeSet::new();
        let mut omitted_on_violation = BTreeSet::new();
        let mut common_paths: Vec<Vec<String>> = Vec::new();

        if let Some(t) = event_type {
            let (allow_unplanned, allow_on_violation, omit_on_violation) = match t {
                RuleType::Identify => {
                    (settings.identify.allow_unplanned_traits, true, !settings.identify.allow_traits_on_violations)
                }
                RuleType::Group => {
                    (settings.group.allow_unplanned_traits, true, !settings.group.allow_traits_on_violations)
                }
                _ => (
                    settings.track.allow_unplanned_event_properties,
                    settings.track.allow_event_on_violations,
                    !settings.track.allow_properties_on_violations,
                ),
            };
            let key = match t {
                RuleType::Identify | RuleType::Group => Some(String::new()),
                RuleType::Track => event.get("event").and_then(Value::as_str).map(str::to_owned),
                _ => event.get("name").and_then(Value::as_str).map(str::to_owned),
            };
            let rule = key.as_ref().and_then(|k| self.versions(t, k)).map(|v| pick_version(v, event));
            match rule {
                None if t == RuleType::Track => {
                    let name = key.unwrap_or_default();
                    violations.push(Violation {
                        kind: ViolationKind::UnplannedEvent,
                        field: "event".into(),
                        path: vec!["event".into()],
                        description: format!("`{name}` is not in the tracking plan"),
                        common: false,
                    });
                    block |= !settings.track.allow_unplanned_events;
                }
                None => {}
                Some(rule) => {
                    let object = t.planned_object();
                    if let Some(Value::Object(given)) = event.get(object) {
                        for k in given.keys().filter(|k| !rule.planned.contains(*k)) {
                            violations.push(Violation {
                                kind: ViolationKind::UnplannedProperty,
                                field: format!("{object}.{k}"),
                                path: vec![object.to_owned(), k.clone()],
                                description: format!("{object}.{k} is not in the tracking plan"),
                                common: false,
                            });
                            if !allow_unplanned {
                                omitted.insert(k.clone());
                            }
                        }
                    }
                    let mut broken = false;
                    for v in validate(&rule.validator, event, false) {
                        // Unplanned properties were reported above.
                        let path = &v.path;
                        if v.kind == ViolationKind::AdditionalProperties
                            && path.len() <= 1
                            && path.first().is_some_and(|p| p == object)
                        {
                            continue;
                        }
                        broken = true;
                        if omit_on_violation && path.len() >= 2 && path[0] == object {
                            omitted_on_violation.insert(path[1].clone());
                        }
                        violations.push(v);
                    }
                    block |= broken && !allow_on_violation;
                }
            }
        }
        if let Some(common) = &self.common {
            let action = match event_type {
                Some(RuleType::Identify) => settings.identify.common_event_on_violations,
                Some(RuleType::Group) => settings.group.common_event_on_violations,
                _ => settings.track.common_event_on_violations,
            };
            for v in validate(&common.validator, event, true) {
                match action {
                    CommonAction::Block => block = true,
                    CommonAction::Omit => common_paths.push(v.path.clone()),
                    CommonAction::Allow => {}
                }
                violations.push(v);
            }
        }
        if violations.len() > MAX_VIOLATIONS_PER_EVENT {
            let more = violations.len() - MAX_VIOLATIONS_PER_EVENT;
            violations.truncate(MAX_VIOLATIONS_PER_EVENT);
            violations.push(Violation {
                kind: ViolationKind::Unknown,
                field: "(root)".into(),
                path: Vec::new(),
                description: format!("{more} more violations in this event"),
                common: false,
            });
        }
        if block {
            return Checked { outcome: Outcome::Block, violations, changed: false };
        }
        let mut changed = false;
        let object = event_type.map_or("properties", RuleType::planned_object);
        if let Some(Value::Object(given)) = event.get_mut(object) {
            omitted.retain(|k| given.remove(k).is_some());
            omitted_on_violation.retain(|k| given.remove(k).is_some());
            changed = !omitted.is_empty() || !omitted_on_violation.is_empty();
        } else {
            (omitted, omitted_on_violation) = (BTreeSet::new(), BTreeSet::new());
        }
        let mut common_omitted = Vec::new();
        for path in &common_paths {
            if omit_path(event, path) {
                common_omitted.push(path.join("."));
                changed = true;
            }
        }
        let mut notes = Map::new();
        if !omitted.is_empty() {
            notes.insert("omitted".into(), omitted.iter().map(|k| Value::String(k.clone())).collect());
        }
        let on_violation: Vec<Value> = omitted_on_violation
            .iter()
            .map(|k| Value::String(k.clone()))
            .chain(common_omitted.into_iter().map(Value::String))
            .collect();
        if !on_violation.is_empty() {
            notes.insert("omitted_on_violation".into(), Value::Array(on_violation));
        }
        if settings.propagate_violations && !violations.is_empty() {
            let list = violations
                .iter()
                .map(|v| serde_json::json!({"type": v.kind.as_str(), "field": v.field, "description": v.description}))
                .collect();
            notes.insert("violations".into(), Value::Array(list));
        }
        if !notes.is_empty() {
            changed = true;
            annotate(event, notes);
        }
        Checked { outcome: Outcome::Allow, violations, changed }
    }
}

/// Builds a validator: draft-07 unless `$schema` says otherwise; no
/// reference is ever fetched (the crate is built without resolvers).
fn compile<F: jsonschema::json::Json>(
    options: jsonschema::ValidationOptions<'_, std::sync::Arc<dyn jsonschema::Retrieve>, F>,
    schema: &Value,
) -> Result<jsonschema::Validator<F>, String> {
    let declared = schema.get("$schema").is_some();
    let mut options = options.should_validate_formats(true);
    if !declared {
        options = options.with_draft(jsonschema::Draft::Draft7);
    }
    options.build(schema).map_err(|e| e.to_string())
}

fn validate(validator: &jsonschema::Validator, event: &Value, common: bool) -> Vec<Violation> {
    // Most events are valid: the boolean check is several times cheaper
    // than collecting errors.
    if validator.is_valid(event) {
        return Vec::new();
    }
    validator
        .iter_errors(event)
        .take(MAX_VIOLATIONS_PER_EVENT + 1)
        .map(|e| {
            let kind = ViolationKind::of(e.kind());
            let mut path: Vec<String> = e.instance_path().iter().map(|s| s.to_string()).collect();
            if let jsonschema::error::ValidationErrorKind::Required { property } = e.kind() {
                path.push(property.as_str().map_or_else(|| property.to_string(), str::to_owned));
            }
            let field = display_path(&path, event);
            let description = describe(e.kind(), &field);
            Violation { kind, field, path, description, common }
        })
        .collect()
}

/// `properties.items[].sku` for the path `properties`, `items`, `0`,
/// `sku` where `items` is an array; `(root)` for the empty path.
fn display_path(path: &[String], event: &Value) -> String {
    if path.is_empty() {
        return "(root)".into();
    }
    let mut out = String::new();
    let mut at = Some(event);
    for segment in path {
        match at {
            Some(Value::Array(items)) => {
                out.push_str("[]");
                at = segment.parse::<usize>().ok().and_then(|i| items.get(i));
            }
            _ => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(segment);
                at = at.and_then(|v| v.get(segment.as_str()));
            }
        }
    }
    out
}

/// What a violation breaks, in words taken from the schema, never from
/// the value (which may be personal data).
fn describe(kind: &jsonschema::error::ValidationErrorKind, field: &str) -> String {
    use jsonschema::error::ValidationErrorKind as K;
    let text = match kind {
        K::Required { .. } => format!("{field} is required"),
        K::Type { kind } => format!("{field} is not of type {}", type_names(kind)),
        K::Enum { options } => format!("{field} is not one of {options}"),
        K::Constant { expected_value } => format!("{field} is not {expected_value}"),
        K::Pattern { pattern } => format!("{field} does not match {pattern}"),
        K::Format { format } => format!("{field} is not a valid {format}"),
        K::Minimum { limit } => format!("{field} is less than {limit}"),
        K::Maximum { limit } => format!("{field} is greater than {limit}"),
        K::ExclusiveMinimum { limit } => format!("{field} is not greater than {limit}"),
        K::ExclusiveMaximum { limit } => format!("{field} is not less than {limit}"),
        K::MinLength { limit } => format!("{field} is shorter than {limit} characters"),
        K::MaxLength { limit } => format!("{field} is longer than {limit} characters"),
        K::MinItems { limit } => format!("{field} has fewer than {limit} items"),
        K::MaxItems { limit } => format!("{field} has more than {limit} items"),
        K::AdditionalProperties { unexpected } => {
            format!("{field} has properties the schema does not allow: {}", unexpected.join(", "))
        }
        _ => format!("{field} does not match the schema"),
    };
    truncate(text, 300)
}

fn type_names(kind: &jsonschema::error::TypeKind) -> String {
    match kind {
        jsonschema::error::TypeKind::Single(t) => t.to_string(),
        jsonschema::error::TypeKind::Multiple(set) => {
            set.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(" or ")
        }
    }
}

fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

/// Removes the value at `path` (object keys only), never a top-level
/// member: those are the event's identity.
fn omit_path(event: &mut Value, path: &[String]) -> bool {
    let [parents @ .., last] = path else { return false };
    if parents.is_empty() {
        return false;
    }
    let mut at = &mut *event;
    for p in parents {
        match at.get_mut(p.as_str()) {
            Some(next) => at = next,
            None => return false,
        }
    }
    at.as_object_mut().is_some_and(|o| o.remove(last.as_str()).is_some())
}

/// Merges `notes` into `context.protocols`.
fn annotate(event: &mut Value, notes: Map<String, Value>) {
    let Some(root) = event.as_object_mut() else { return };
    let context = root.entry("context").or_insert_with(|| Value::Object(Map::new()));
    if !context.is_object() {
        *context = Value::Object(Map::new());
    }
    let Some(context) = context.as_object_mut() else { return };
    let protocols = context.entry("protocols").or_insert_with(|| Value::Object(Map::new()));
    if !protocols.is_object() {
        *protocols = Value::Object(Map::new());
    }
    if let Some(p) = protocols.as_object_mut() {
        p.extend(notes);
    }
}

/// The version the event asks for in `context.protocols.event_version`,
/// else the oldest.
fn pick_version<'a>(versions: &'a [Rule], event: &Value) -> &'a Rule {
    let asked = event.pointer("/context/protocols/event_version").and_then(|v| match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    });
    pick(versions, asked)
}

/// The version `asked` for, or else the oldest.
fn pick(versions: &[Rule], asked: Option<u64>) -> &Rule {
    asked.and_then(|n| versions.iter().find(|r| u64::from(r.version) == n)).unwrap_or(&versions[0])
}

/// What a schema over the whole event reads of it: the members its root
/// `properties` and `required` name, each whole — or everything, when the
/// root has any keyword that looks at the object as a whole
/// (`additionalProperties`, `allOf`, `$ref`, `definitions`, …).
fn schema_needs(schema: &Value) -> Needs {
    const MEMBERS_ONLY: [&str; 13] = [
        "$schema",
        "$id",
        "id",
        "$comment",
        "title",
        "description",
        "type",
        "properties",
        "required",
        "default",
        "examples",
        "readOnly",
        "deprecated",
    ];
    let Some(root) = schema.as_object() else { return Needs::all() };
    if root.keys().any(|k| !MEMBERS_ONLY.contains(&k.as_str())) {
        return Needs::all();
    }
    let mut needs = Needs::default();
    let properties = root.get("properties").and_then(Value::as_object).into_iter().flat_map(|o| o.keys().cloned());
    let required = root.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str);
    for key in properties.chain(required.map(str::to_owned)) {
        needs.add_path(&[key]);
    }
    needs
}

/// The keys a rule's schema lists under `properties.<object>.properties`.
fn planned_keys(schema: &Value, object: &str) -> BTreeSet<String> {
    schema
        .pointer(&format!("/properties/{object}/properties"))
        .and_then(Value::as_object)
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

/// The 1-based line where `part`, a slice of `text`, starts.
fn line_of(text: &str, part: &str) -> usize {
    let offset = (part.as_ptr() as usize).saturating_sub(text.as_ptr() as usize).min(text.len());
    text.as_bytes()[..offset].iter().filter(|b| **b == b'\n').count() + 1
}

#[cfg(test)]
mod tests;
