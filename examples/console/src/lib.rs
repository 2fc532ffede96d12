//! Console: the smallest useful destination. Writes one line per event to
//! the host's log through the `log` capability; needs no network, so the
//! example config runs anywhere.
//!
//! Settings: `level` (`"debug"`, `"info"` or `"warn"`; default `"info"`).

use serde::Deserialize;
use switchyard_plugin_sdk::log::{self, Level};
use switchyard_plugin_sdk::{Destination, Event, InitError, Outcome, export_destination};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(default = "default_level")]
    pub level: String,
}

fn default_level() -> String {
    "info".into()
}

pub struct Console {
    level: Level,
}

impl Destination for Console {
    type Settings = Settings;

    fn init(settings: Settings) -> Result<Self, InitError> {
        let level = match settings.level.as_str() {
            "debug" => Level::Debug,
            "info" => Level::Info,
            "warn" => Level::Warn,
            other => {
                return Err(InitError::invalid_settings(format!("`level`: `{other}` is not debug, info or warn")));
            }
        };
        Ok(Console { level })
    }

    fn deliver(&mut self, batch: Vec<Event>) -> Vec<Outcome> {
        for e in &batch {
            let who = e.user_id.as_deref().or(e.anonymous_id.as_deref()).unwrap_or("-");
            let name = e.name.as_deref().unwrap_or("");
            log::log(self.level, &format!("{} {name} user={who} messageId={}", e.kind.as_str(), e.message_id));
        }
        vec![Outcome::Delivered; batch.len()]
    }
}

export_destination!(Console);

#[cfg(test)]
mod tests {
    use serde_json::json;
    use switchyard_plugin_sdk::testing::{Harness, event};

    use super::*;

    #[test]
    fn logs_one_line_per_event() {
        let mut h = Harness::<Console>::new(json!({})).unwrap();
        let out = h.deliver(vec![
            event(json!({"type": "track", "event": "Signed Up", "userId": "u1", "messageId": "m1"})),
            event(json!({"type": "identify", "anonymousId": "a1", "messageId": "m2"})),
        ]);
        assert_eq!(out, vec![Outcome::Delivered; 2]);
        let logs = h.logs();
        assert_eq!(logs[0], (Level::Info, "track Signed Up user=u1 messageId=m1".to_owned()));
        assert_eq!(logs[1], (Level::Info, "identify  user=a1 messageId=m2".to_owned()));
    }

    #[test]
    fn bad_level_is_refused() {
        assert!(
            matches!(Harness::<Console>::new(json!({"level": "loud"})), Err(InitError::InvalidSettings(m)) if m.contains("loud"))
        );
    }
}
