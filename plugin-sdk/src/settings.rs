//! Settings deserialization with errors that name the setting.

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
}
