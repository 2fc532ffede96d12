//! `connector.toml`: what a connector package is, who published it, what it
//! asks the sandbox for and which settings it takes.
//!
//! Parsing is strict: unknown keys, a version that is not semver, an id
//! that is not reverse-DNS, a default of the wrong type are all refused with
//! the manifest's file and line, since an operator decides what to grant
//! from what this file says.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The manifest format this host reads (`schema_version`).
pub const SCHEMA_VERSION: u32 = 1;

/// The file name of a package's manifest.
pub const MANIFEST_FILE: &str = "connector.toml";

/// A parsed, checked `connector.toml`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub schema_version: u32,
    /// Reverse-DNS, e.g. `com.amplitude.destination`: who owns the name.
    pub id: String,
    /// For people, e.g. `Amplitude`.
    pub name: String,
    pub version: semver::Version,
    /// Who publishes it (a company or a person); the signature says who
    /// really did.
    pub publisher: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub license: Option<String>,
    #[serde(default)]
    pub homepage: Option<String>,
    #[serde(default)]
    pub repository: Option<String>,
    /// The `switchyard:destination` contract version the component is built
    /// against, e.g. `0.2.0` (checked against the component's imports).
    pub contract: semver::Version,
    pub component: ComponentRef,
    #[serde(default)]
    pub capabilities: Capabilities,
    /// The settings `init` takes, by name.
    #[serde(default)]
    pub settings: BTreeMap<String, Setting>,
    /// What a destination gets when its config does not say.
    #[serde(default)]
    pub defaults: Defaults,
    #[serde(default)]
    pub experimentation: Option<Experimentation>,
}

/// `[component]`: the Wasm component, pinned by its hash.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ComponentRef {
    /// Relative to the manifest, inside the package.
    pub path: String,
    /// SHA-256 of the component's bytes, lowercase hex. Empty in an
    /// author's source tree until `switchyard plugin sign` pins it.
    #[serde(default)]
    pub sha256: String,
}

/// `[capabilities]`: what the component asks the sandbox for. Nothing is
/// granted because it is asked for: the operator grants it in the config.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Capabilities {
    /// Origins it calls over HTTP(S).
    #[serde(default)]
    pub http: Vec<OriginRequest>,
    /// Whether it loads tables into a warehouse.
    #[serde(default)]
    pub warehouse: bool,
    #[serde(default)]
    pub limits: Limits,
}

/// One origin a connector calls: literal (`https://api2.amplitude.com`) or
/// that of a setting's URL (`{ setting = "endpoint" }`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum OriginRequest {
    Literal(String),
    FromSetting { setting: String },
}

impl fmt::Display for OriginRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OriginRequest::Literal(o) => f.write_str(o),
            OriginRequest::FromSetting { setting } => write!(f, "the origin of setting `{setting}`"),
        }
    }
}

/// `[capabilities.limits]`: the quotas it needs to work well.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub memory_mb: Option<u32>,
    pub call_timeout_ms: Option<u64>,
    pub http_requests_per_second: Option<u32>,
}

/// The type of a setting's value.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SettingType {
    String,
    /// A string that is an `http(s)://` URL.
    Url,
    Integer,
    Number,
    Boolean,
    /// An array of strings.
    StringList,
    /// A table of strings (header names to values, say).
    StringMap,
}

impl SettingType {
    /// As in messages: "a string", "an integer"…
    pub fn described(self) -> &'static str {
        match self {
            SettingType::String => "a string",
            SettingType::Url => "an http(s) URL",
            SettingType::Integer => "an integer",
            SettingType::Number => "a number",
            SettingType::Boolean => "a boolean",
            SettingType::StringList => "an array of strings",
            SettingType::StringMap => "a table of strings",
        }
    }
}

/// `[settings.<name>]`: one setting `init` takes.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Setting {
    #[serde(rename = "type")]
    pub kind: SettingType,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub default: Option<toml::Value>,
    #[serde(default)]
    pub label: Option<String>,
    #[serde(default)]
    pub description: String,
    /// A credential: it must come from `${ENV}` in the config and is
    /// redacted wherever it could show.
    #[serde(default)]
    pub secret: bool,
    /// The only values allowed.
    #[serde(default)]
    pub choices: Option<Vec<toml::Value>>,
    /// Bounds of a number or integer.
    #[serde(default)]
    pub minimum: Option<f64>,
    #[serde(default)]
    pub maximum: Option<f64>,
    /// A sample value, of the setting's shape (`"secret-…"` for a key
    /// with a prefix): shown in docs, and what the conformance kit passes
    /// when it is not given one. Never a real credential.
    #[serde(default)]
    pub example: Option<toml::Value>,
}

impl Setting {
    /// Checks one value against its setting: type, choices, bounds.
    ///
    /// # Errors
    ///
    /// What is wrong with it, for a message.
    pub fn check(&self, value: &toml::Value) -> Result<(), String> {
        let s = self;
        s.kind.check(value)?;
        if let Some(choices) = &s.choices
            && !choices.contains(value)
        {
            let list: Vec<String> = choices.iter().map(ToString::to_string).collect();
            return Err(format!("must be one of {}", list.join(", ")));
        }
        let n = match value {
            toml::Value::Integer(i) => Some(*i as f64),
            toml::Value::Float(f) => Some(*f),
            _ => None,
        };
        if let Some(n) = n {
            if s.minimum.is_some_and(|min| n < min) {
                return Err(format!("must be at least {}", s.minimum.unwrap_or_default()));
            }
            if s.maximum.is_some_and(|max| n > max) {
                return Err(format!("must be at most {}", s.maximum.unwrap_or_default()));
            }
        }
        Ok(())
    }
}

impl SettingType {
    /// Checks that `value` is of type `kind`.
    ///
    /// # Errors
    ///
    /// "must be an integer, not a string", say.
    pub fn check(self, value: &toml::Value) -> Result<(), String> {
        let kind = self;
        let ok = match (kind, value) {
            (SettingType::String, toml::Value::String(_)) => true,
            (SettingType::Url, toml::Value::String(s)) => {
                return origin_of(s).map(drop).map_err(|m| format!("must be an http(s) URL: {m}"));
            }
            (SettingType::Integer, toml::Value::Integer(_)) => true,
            (SettingType::Number, toml::Value::Integer(_) | toml::Value::Float(_)) => true,
            (SettingType::Boolean, toml::Value::Boolean(_)) => true,
            (SettingType::StringList, toml::Value::Array(items)) => items.iter().all(toml::Value::is_str),
            (SettingType::StringMap, toml::Value::Table(t)) => t.values().all(toml::Value::is_str),
            _ => false,
        };
        if ok { Ok(()) } else { Err(format!("must be {}, not {}", kind.described(), describe(value))) }
    }
}

fn describe(value: &toml::Value) -> &'static str {
    match value {
        toml::Value::String(_) => "a string",
        toml::Value::Integer(_) => "an integer",
        toml::Value::Float(_) => "a float",
        toml::Value::Boolean(_) => "a boolean",
        toml::Value::Datetime(_) => "a date-time",
        toml::Value::Array(_) => "an array (of something else)",
        toml::Value::Table(_) => "a table",
    }
}

/// `[defaults]`: a destination's subscription and batching when its config
/// does not set them.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// Event types (`track`, `identify`, …).
    #[serde(default)]
    pub subscribe: Option<Vec<String>>,
    #[serde(default)]
    pub batch: Option<BatchDefaults>,
}

/// `[defaults.batch]`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BatchDefaults {
    pub max_events: usize,
    pub linger_ms: u64,
}

/// `[experimentation]`: events that are experiment exposures.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Experimentation {
    #[serde(default)]
    pub exposure_events: Vec<String>,
}

/// A manifest that cannot be used, with where.
#[derive(Debug, thiserror::Error)]
#[error("{}{}: {message}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct ManifestError {
    pub path: PathBuf,
    pub line: Option<usize>,
    pub message: String,
}

impl Manifest {
    /// Reads and checks the manifest at `path`.
    ///
    /// # Errors
    ///
    /// A [`ManifestError`] naming the file, the line where it can, and the
    /// problem.
    pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|e| ManifestError {
            path: path.to_owned(),
            line: None,
            message: format!("cannot read: {e}"),
        })?;
        Manifest::parse(path, &text)
    }

    /// Parses and checks manifest `text` (from `path`, for messages).
    ///
    /// # Errors
    ///
    /// As [`Manifest::load`].
    pub fn parse(path: &Path, text: &str) -> Result<Manifest, ManifestError> {
        let fail = |line: Option<usize>, message: String| ManifestError { path: path.to_owned(), line, message };
        let manifest: Manifest = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start));
            fail(line, e.message().to_owned())
        })?;
        if let Err((key, message)) = manifest.check() {
            return Err(fail(line_of_key(text, &key), format!("{key}: {message}")));
        }
        Ok(manifest)
    }

    /// `id@version`, as the signature's trusted comment and messages say it.
    pub fn reference(&self) -> String {
        format!("{}@{}", self.id, self.version)
    }

    /// What the types alone cannot check: the first problem, as the dotted
    /// key and the message.
    fn check(&self) -> Result<(), (String, String)> {
        let bad = |key: &str, m: String| Err((key.to_owned(), m));
        if self.schema_version != SCHEMA_VERSION {
            return bad(
                "schema_version",
                format!("this host reads schema_version {SCHEMA_VERSION}, not {}", self.schema_version),
            );
        }
        if !is_reverse_dns(&self.id) {
            return bad(
                "id",
                format!(
                    "`{}` is not a reverse-DNS id: two or more dot-separated labels of lowercase letters, \
                     digits and `-`, e.g. `com.example.destination`",
                    self.id
                ),
            );
        }
        for (key, value) in [("name", &self.name), ("publisher", &self.publisher)] {
            if value.trim().is_empty() {
                return bad(key, "must not be empty".into());
            }
        }
        let c = &self.component;
        if c.path.is_empty() || c.path.contains(['/', '\\']) || c.path == ".." || c.path == "." {
            return bad("component.path", "must be a file name in the package's folder (no directories)".into());
        }
        if !c.sha256.is_empty()
            && (c.sha256.len() != 64 || !c.sha256.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        {
            return bad("component.sha256", "must be the component's SHA-256 as 64 lowercase hex digits".into());
        }
        for (i, o) in self.capabilities.http.iter().enumerate() {
            let key = format!("capabilities.http[{i}]");
            match o {
                OriginRequest::Literal(origin) => {
                    if let Err(m) = origin_of(origin) {
                        return bad(&key, m);
                    }
                }
                OriginRequest::FromSetting { setting } => match self.settings.get(setting) {
                    Some(s) if s.kind == SettingType::Url => {}
                    Some(_) => return bad(&key, format!("setting `{setting}` must be of type \"url\"")),
                    None => return bad(&key, format!("no setting `{setting}` is declared")),
                },
            }
        }
        for (name, s) in &self.settings {
            let key = format!("settings.{name}");
            if let Some(d) = &s.default {
                if let Err(m) = s.check(d) {
                    return bad(&format!("{key}.default"), m);
                }
                if s.secret {
                    return bad(&format!("{key}.default"), "a secret setting cannot have a default".into());
                }
            }
            if let Some(e) = &s.example
                && let Err(m) = s.check(e)
            {
                return bad(&format!("{key}.example"), m);
            }
            for (j, choice) in s.choices.iter().flatten().enumerate() {
                if let Err(m) = s.kind.check(choice) {
                    return bad(&format!("{key}.choices[{j}]"), m);
                }
            }
        }
        if let Some(b) = &self.defaults.batch
            && (b.max_events == 0 || b.max_events > 10_000)
        {
            return bad("defaults.batch.max_events", "must be between 1 and 10000".into());
        }
        for (i, t) in self.defaults.subscribe.iter().flatten().enumerate() {
            if !["identify", "track", "page", "screen", "group", "alias"].contains(&t.as_str()) {
                return bad(&format!("defaults.subscribe[{i}]"), format!("`{t}` is not an event type"));
            }
        }
        Ok(())
    }
}

/// `scheme://host[:port]` of an `http(s)` URL, lowercased, without a
/// default port.
///
/// # Errors
///
/// Why `url` is not an http(s) URL.
pub fn origin_of(url: &str) -> Result<String, String> {
    let (scheme, rest) = url.split_once("://").ok_or_else(|| format!("`{url}` is not an http(s) URL"))?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return Err(format!("`{url}` is not an http(s) URL"));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.is_empty() || authority.contains('@') {
        return Err(format!("`{url}` has no host (or has credentials in it)"));
    }
    let authority = authority.to_ascii_lowercase();
    let default_port = if scheme == "https" { ":443" } else { ":80" };
    let authority = authority.strip_suffix(default_port).unwrap_or(&authority);
    Ok(format!("{scheme}://{authority}"))
}

fn is_reverse_dns(id: &str) -> bool {
    let labels: Vec<&str> = id.split('.').collect();
    labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

fn line_of(text: &str, byte: usize) -> usize {
    text[..byte.min(text.len())].matches('\n').count() + 1
}

/// The line a dotted key (`settings.api_key.default`, `capabilities.http[0]`)
/// is written on, found by its table header and last segment: good enough
/// for a message, never used for meaning.
fn line_of_key(text: &str, key: &str) -> Option<usize> {
    let plain = key.split('[').next().unwrap_or(key);
    let (table, leaf) = plain.rsplit_once('.').unwrap_or(("", plain));
    let mut in_table = table.is_empty();
    let mut table_line = None;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if let Some(header) = t.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            in_table = header.trim() == table;
            if in_table {
                table_line = Some(i + 1);
            }
            continue;
        }
        if in_table && t.split(['=', ' ']).next() == Some(leaf) {
            return Some(i + 1);
        }
    }
    table_line
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const GOOD: &str = r#"
schema_version = 1
id = "com.example.hook"
name = "Example hook"
version = "1.2.0"
publisher = "Example Inc."
contract = "0.2.0"

[component]
path = "hook.wasm"
sha256 = "0000000000000000000000000000000000000000000000000000000000000000"

[capabilities]
http = ["https://api.example.com", { setting = "endpoint" }]

[settings.endpoint]
type = "url"
default = "https://hooks.example.com/in"

[settings.api_key]
type = "string"
required = true
secret = true
"#;

    fn parse(text: &str) -> Result<Manifest, ManifestError> {
        Manifest::parse(Path::new("connector.toml"), text)
    }

    #[test]
    fn a_good_manifest_parses() {
        let m = parse(GOOD).unwrap();
        assert_eq!(m.reference(), "com.example.hook@1.2.0");
        assert_eq!(m.capabilities.http[1], OriginRequest::FromSetting { setting: "endpoint".into() });
        assert!(m.settings["api_key"].secret);
    }

    #[test]
    fn problems_name_the_line() {
        let e = parse(&GOOD.replace("version = \"1.2.0\"", "version = \"one\"")).unwrap_err();
        assert_eq!(e.line, Some(5), "{e}");
        let e = parse(&GOOD.replace("com.example.hook", "Example")).unwrap_err();
        assert!(e.to_string().contains("connector.toml:3: id: `Example` is not a reverse-DNS id"), "{e}");
        let e =
            parse(&GOOD.replace("default = \"https://hooks.example.com/in\"", "default = \"ftp://x\"")).unwrap_err();
        assert!(e.to_string().contains("settings.endpoint.default"), "{e}");
        assert_eq!(e.line, Some(18), "{e}");
        let e = parse(&GOOD.replace("{ setting = \"endpoint\" }", "{ setting = \"nope\" }")).unwrap_err();
        assert!(e.to_string().contains("no setting `nope`"), "{e}");
        let e = parse(&format!("{GOOD}\nextra = 1\n")).unwrap_err();
        assert!(e.to_string().contains("unknown field `extra`"), "{e}");
    }

    #[test]
    fn origins_are_normalized() {
        assert_eq!(origin_of("HTTPS://API.example.com:443/x?y").unwrap(), "https://api.example.com");
        assert_eq!(origin_of("http://127.0.0.1:8080/hook").unwrap(), "http://127.0.0.1:8080");
        assert!(origin_of("ftp://x").is_err());
        assert!(origin_of("https://user:pw@host").is_err());
    }
}
