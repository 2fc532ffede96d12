//! Reading a destination's settings: deserialization with errors that name
//! the setting ([`parse_settings`]), and checks settings commonly need
//! ([`base_url`]).

use serde::de::DeserializeOwned;

use crate::InitError;

/// Parses a destination's settings (a JSON object) into `T`.
///
/// The SDK calls this before [`Destination::init`](crate::Destination::init);
/// it is public so tests can check a settings type directly.
///
/// # Errors
///
/// [`InitError::InvalidSettings`] naming the setting that is missing or has
/// the wrong type. Values are never quoted, so a secret cannot leak here.
pub fn parse_settings<T: DeserializeOwned>(json: &str) -> Result<T, InitError> {
    let de = &mut serde_json::Deserializer::from_str(json);
    serde_path_to_error::deserialize(de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        let what = describe(&inner);
        if path == "." || path.is_empty() {
            InitError::InvalidSettings(what)
        } else {
            InitError::InvalidSettings(format!("`{path}`: {what}"))
        }
    })
}

/// Checks the setting named `setting` holds an absolute `http://` or
/// `https://` base URL with a host and no query or fragment, and returns it
/// trimmed, without trailing `/`, ready for `format!("{base}/path")`.
///
/// User info (`user@host`) is refused too: credentials belong in headers,
/// and a URL carrying them would end up in logs. A path prefix
/// (`https://proxy.example/amplitude`) is kept.
///
/// # Errors
///
/// [`InitError::InvalidSettings`] naming `setting` (never repeating the
/// value) when `value` is not such a URL.
pub fn base_url(setting: &str, value: &str) -> Result<String, InitError> {
    let bad = || {
        InitError::invalid_settings(format!(
            "`{setting}` must be an absolute http:// or https:// base URL with a host and no query or fragment"
        ))
    };
    let trimmed = value.trim();
    let rest = trimmed.strip_prefix("https://").or_else(|| trimmed.strip_prefix("http://")).ok_or_else(bad)?;
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() || host.starts_with(':') || host.contains('@') {
        return Err(bad());
    }
    if rest.contains(['?', '#']) || rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad());
    }
    Ok(trimmed.trim_end_matches('/').to_owned())
}

/// serde_json's message without the echo of the offending value, which could
/// be a secret: "invalid type: string \"sk_live…\", expected u32" becomes
/// "invalid type, expected u32".
fn describe(err: &serde_json::Error) -> String {
    let msg = err.to_string();
    let msg = msg.split(" at line ").next().unwrap_or(&msg);
    if let Some(rest) = msg.strip_prefix("invalid type: ")
        && let Some((_, expected)) = rest.split_once(", expected ")
    {
        return format!("invalid type, expected {expected}");
    }
    if let Some(rest) = msg.strip_prefix("invalid value: ")
        && let Some((_, expected)) = rest.split_once(", expected ")
    {
        return format!("invalid value, expected {expected}");
    }
    msg.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct S {
        url: String,
        #[serde(default)]
        retries: u32,
    }

    #[test]
    fn missing_field_is_named() {
        let err = parse_settings::<S>("{}").unwrap_err();
        assert_eq!(err, InitError::InvalidSettings("missing field `url`".into()));
    }

    #[test]
    fn wrong_type_names_path_and_hides_value() {
        let err = parse_settings::<S>(r#"{"url":"x","retries":"secret-value"}"#).unwrap_err();
        let InitError::InvalidSettings(msg) = err else { panic!("wrong kind") };
        assert!(msg.starts_with("`retries`: invalid type"), "{msg}");
        assert!(!msg.contains("secret-value"), "{msg}");
    }

    #[test]
    fn not_an_object() {
        assert!(parse_settings::<S>("[1]").is_err());
    }

    #[test]
    fn base_urls_are_absolute_http_without_query() {
        assert_eq!(base_url("endpoint", " https://api.example.com/ "), Ok("https://api.example.com".to_owned()));
        assert_eq!(base_url("endpoint", "http://127.0.0.1:9/a/b//"), Ok("http://127.0.0.1:9/a/b".to_owned()));
        for bad in [
            "",
            "api.example.com",
            "ftp://api.example.com",
            "https://",
            "https:///path",
            "https://:443",
            "https://user:pw@api.example.com",
            "https://api.example.com/?x=1",
            "https://api.example.com/#top",
            "https://api.example.com/a b",
        ] {
            let err = base_url("endpoint", bad).unwrap_err();
            assert_eq!(
                err,
                InitError::InvalidSettings(
                    "`endpoint` must be an absolute http:// or https:// base URL with a host and no query or fragment"
                        .into()
                ),
                "{bad}"
            );
        }
        let InitError::InvalidSettings(msg) = base_url("proxy", "https://secret@x").unwrap_err() else {
            panic!("wrong kind")
        };
        assert!(msg.starts_with("`proxy` must") && !msg.contains("secret"), "{msg}");
    }
}
