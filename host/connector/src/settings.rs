//! A connector's settings: the JSON Schema its manifest declares, and
//! checking a destination's `settings` table against it.
//!
//! The schema is derived from `[settings]` the way Segment's destination
//! kit derives one from its fields (`fieldsToJsonSchema`), for tools and
//! consoles; the host checks a table with the same rules here, so a
//! message can name the one setting that is wrong.

use serde_json::{Value, json};

use crate::manifest::{Manifest, SettingType};

/// One setting that does not match the manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct SettingProblem {
    /// The setting's name (a key of the table).
    pub setting: String,
    pub message: String,
}

/// The JSON Schema (draft 2020-12) of `manifest`'s settings.
pub fn json_schema(manifest: &Manifest) -> Value {
    let mut properties = serde_json::Map::new();
    let mut required = Vec::new();
    for (name, s) in &manifest.settings {
        let mut p = match s.kind {
            SettingType::String => json!({ "type": "string" }),
            SettingType::Url => json!({ "type": "string", "format": "uri", "pattern": "^https?://" }),
            SettingType::Integer => json!({ "type": "integer" }),
            SettingType::Number => json!({ "type": "number" }),
            SettingType::Boolean => json!({ "type": "boolean" }),
            SettingType::StringList => json!({ "type": "array", "items": { "type": "string" } }),
            SettingType::StringMap => json!({ "type": "object", "additionalProperties": { "type": "string" } }),
        };
        let obj = p.as_object_mut().expect("a schema literal is an object");
        if let Some(label) = &s.label {
            obj.insert("title".into(), label.as_str().into());
        }
        if !s.description.is_empty() {
            obj.insert("description".into(), s.description.as_str().into());
        }
        if let Some(d) = &s.default {
            obj.insert("default".into(), to_json(d));
        }
        if let Some(e) = &s.example {
            obj.insert("examples".into(), json!([to_json(e)]));
        }
        if let Some(choices) = &s.choices {
            obj.insert("enum".into(), choices.iter().map(to_json).collect());
        }
        if let Some(min) = s.minimum {
            obj.insert("minimum".into(), min.into());
        }
        if let Some(max) = s.maximum {
            obj.insert("maximum".into(), max.into());
        }
        if s.secret {
            obj.insert("writeOnly".into(), true.into());
            obj.insert("x-secret".into(), true.into());
        }
        if s.required {
            required.push(Value::from(name.as_str()));
        }
        properties.insert(name.clone(), p);
    }
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": format!("{} settings", manifest.name),
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": false,
    })
}

/// Checks `table` against `manifest`'s settings: each required one
/// present, none undeclared, each of its type, among its choices and within
/// its bounds. Returns every problem, in setting order.
pub fn validate(manifest: &Manifest, table: &toml::Table) -> Vec<SettingProblem> {
    let mut problems = Vec::new();
    let mut fail = |setting: &str, message: String| problems.push(SettingProblem { setting: setting.into(), message });
    for (name, s) in &manifest.settings {
        match table.get(name) {
            None if s.required && s.default.is_none() => fail(name, "is required and not set".into()),
            None => {}
            Some(v) => {
                if let Err(m) = s.check(v) {
                    fail(name, m);
                }
            }
        }
    }
    for name in table.keys() {
        if !manifest.settings.contains_key(name) {
            let known: Vec<&str> = manifest.settings.keys().map(String::as_str).collect();
            fail(name, format!("is not a setting of {} (it takes: {})", manifest.id, known.join(", ")));
        }
    }
    problems
}

/// `table` with the manifest's defaults filled in where it has no value.
pub fn with_defaults(manifest: &Manifest, table: &toml::Table) -> toml::Table {
    let mut out = table.clone();
    for (name, s) in &manifest.settings {
        if let Some(d) = &s.default {
            out.entry(name.clone()).or_insert_with(|| d.clone());
        }
    }
    out
}

fn to_json(v: &toml::Value) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn manifest() -> Manifest {
        Manifest::parse(Path::new("connector.toml"), crate::manifest::tests::GOOD).unwrap()
    }

    fn table(text: &str) -> toml::Table {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn the_schema_names_types_required_and_secrets() {
        let schema = json_schema(&manifest());
        assert_eq!(schema["required"], json!(["api_key"]));
        assert_eq!(schema["properties"]["endpoint"]["format"], "uri");
        assert_eq!(schema["properties"]["endpoint"]["default"], "https://hooks.example.com/in");
        assert_eq!(schema["properties"]["api_key"]["writeOnly"], true);
        assert_eq!(schema["additionalProperties"], false);
    }

    #[test]
    fn every_problem_names_its_setting() {
        let m = manifest();
        assert!(validate(&m, &table("api_key = \"k\"")).is_empty());
        let problems = validate(&m, &table("endpoint = 5\ncolour = \"red\""));
        let named: Vec<(&str, &str)> = problems.iter().map(|p| (p.setting.as_str(), p.message.as_str())).collect();
        assert_eq!(
            named,
            [
                ("api_key", "is required and not set"),
                ("endpoint", "must be an http(s) URL, not an integer"),
                ("colour", "is not a setting of com.example.hook (it takes: api_key, endpoint)"),
            ]
        );
    }

    #[test]
    fn defaults_fill_what_is_unset() {
        let t = with_defaults(&manifest(), &table("api_key = \"k\""));
        assert_eq!(t["endpoint"].as_str(), Some("https://hooks.example.com/in"));
    }
}
