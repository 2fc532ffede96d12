//! Secrets never reach logs: [`Redactor`] replaces every known secret value.

use std::sync::Arc;

/// Replaces known secret values in text with `[redacted]`.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    secrets: Arc<Vec<String>>,
}

impl Redactor {
    /// Remembers `secret`. Values shorter than 4 characters are not
    /// remembered: redacting them would mangle ordinary text.
    pub fn add(&mut self, secret: &str) {
        if secret.len() >= 4 && !self.secrets.iter().any(|s| s == secret) {
            Arc::make_mut(&mut self.secrets).push(secret.to_owned());
        }
    }

    /// `text` with every secret replaced.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for s in self.secrets.iter() {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), "[redacted]");
            }
        }
        out
    }
}
