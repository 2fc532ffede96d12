//! The `log` capability: a plugin's lines go to the host's `tracing` log,
//! tagged with the destination's name, with the destination's secrets
//! redacted and each line capped at [`MAX_LINE`] bytes. Lines past the
//! destination's `log_lines_per_second` or `log_bytes_per_second` end the
//! call (a quota breach).

use crate::quota::QuotaKind;
use crate::runtime::HostState;
use crate::runtime::bindings::log::{Host, Level};

/// Longest line kept; the rest is cut.
pub const MAX_LINE: usize = 2048;

impl Host for HostState {
    fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        if !self.grants.rates.log_line(message.len().min(MAX_LINE)) {
            return Err(self.breach(
                QuotaKind::LogRate,
                "more log output than log_lines_per_second / log_bytes_per_second".into(),
            ));
        }
        let mut message = self.grants.redactor.redact(&message);
        if message.len() > MAX_LINE {
            let mut cut = MAX_LINE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        let destination = &*self.grants.name;
        match level {
            Level::Trace => tracing::trace!(target: "plugin", destination, "{message}"),
            Level::Debug => tracing::debug!(target: "plugin", destination, "{message}"),
            Level::Info => tracing::info!(target: "plugin", destination, "{message}"),
            Level::Warn => tracing::warn!(target: "plugin", destination, "{message}"),
            Level::Error => tracing::error!(target: "plugin", destination, "{message}"),
        }
        Ok(())
    }
}
