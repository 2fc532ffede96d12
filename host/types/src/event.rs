//! [`EventType`]: the six Segment event types.

use serde::{Deserialize, Serialize};

/// The six Segment event types.
///
/// Serialized as the Segment `type` string (`"track"`, `"identify"`, ...),
/// and ordered as [`EventType::ALL`] lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    Identify,
    Track,
    Page,
    Screen,
    Group,
    Alias,
}

impl EventType {
    /// Every event type, in declaration order.
    pub const ALL: [EventType; 6] =
        [EventType::Identify, EventType::Track, EventType::Page, EventType::Screen, EventType::Group, EventType::Alias];

    /// The Segment `type` string: `"track"`, `"identify"`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Identify => "identify",
            EventType::Track => "track",
            EventType::Page => "page",
            EventType::Screen => "screen",
            EventType::Group => "group",
            EventType::Alias => "alias",
        }
    }

    /// Parses a Segment `type` string; [`None`] for anything else (the
    /// match is exact: `"Track"` is not a type).
    pub fn parse(s: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_round_trip() {
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Some(t));
            assert_eq!(t.to_string(), t.as_str());
        }
        assert_eq!(EventType::parse("Track"), None);
        assert_eq!(EventType::parse(""), None);
    }

    #[test]
    fn serde_uses_the_type_string() {
        assert_eq!(serde_json::to_string(&EventType::Screen).ok().as_deref(), Some("\"screen\""));
        let t: Result<EventType, _> = serde_json::from_str("\"alias\"");
        assert_eq!(t.ok(), Some(EventType::Alias));
    }
}
