//! The `log` capability: a plugin's lines go to the host's `tracing` log,
//! tagged with the destination's name, with the destination's secrets
//! redacted and each line capped at [`MAX_LINE`] bytes. Lines past the
//! destination's `log_lines_per_second` or `log_bytes_per_second` end the
//! call (a quota breach). A line below the host's log level (a plugin's
//! `debug` line when the server logs at `info`) is dropped before it is
//! counted: it costs the host nothing, so it spends no quota. Counting it
//! failed Statsig's batches under load, which logs one debug line per
//! request (`cargo bench --bench pipeline`).
//!
//! [`LogCtx`] is a destination's grant, [`LogView`] lends it to the
//! contract's `Host` traits, and [`add_to_linker`] links them.

use std::sync::Mutex;

use tokio::time::Instant;
use wasmtime::component::{HasData, Linker};

use super::{Breach, Caller};
use crate::quota::{QuotaKind, TokenBucket, lock};
use crate::world::log::{Host, Level};

/// Longest line kept; the rest is cut.
pub const MAX_LINE: usize = 2048;

/// A destination's log grant: its line and byte rates, shared by its
/// instances.
#[derive(Debug)]
pub struct LogCtx {
    lines: Mutex<TokenBucket>,
    bytes: Mutex<TokenBucket>,
}

impl LogCtx {
    /// At most `lines_per_second` lines and `bytes_per_second` bytes.
    pub fn new(lines_per_second: u32, bytes_per_second: u32) -> LogCtx {
        LogCtx {
            lines: Mutex::new(TokenBucket::new(lines_per_second, 1)),
            bytes: Mutex::new(TokenBucket::new(bytes_per_second, MAX_LINE)),
        }
    }

    /// No limits (benchmarks).
    pub fn unlimited() -> LogCtx {
        LogCtx { lines: Mutex::new(TokenBucket::new(u32::MAX, 1)), bytes: Mutex::new(TokenBucket::new(u32::MAX, 1)) }
    }

    /// Counts one line of `bytes`; false when it is over a rate.
    fn admit(&self, bytes: usize) -> bool {
        let now = Instant::now();
        lock(&self.lines).try_take(1, now) && lock(&self.bytes).try_take(bytes, now)
    }
}

/// What the `log` interface's functions see of a store.
pub struct LogCtxView<'a> {
    pub ctx: &'a LogCtx,
    pub caller: &'a Caller,
    pub breach: &'a mut Breach,
}

/// Implemented by a store's data to lend its [`LogCtxView`].
pub trait LogView: Send {
    fn log(&mut self) -> LogCtxView<'_>;
}

struct HasLog;

impl HasData for HasLog {
    type Data<'a> = LogCtxView<'a>;
}

/// Links the `log` interface of every contract version.
///
/// # Errors
///
/// When the linker already defines it.
pub fn add_to_linker<T: LogView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    crate::world::log::add_to_linker::<T, HasLog>(linker, T::log)?;
    crate::world::v0_1::switchyard::destination::log::add_to_linker::<T, HasLog>(linker, T::log)
}

impl Host for LogCtxView<'_> {
    fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        let shown = match level {
            Level::Trace => tracing::enabled!(target: "plugin", tracing::Level::TRACE),
            Level::Debug => tracing::enabled!(target: "plugin", tracing::Level::DEBUG),
            Level::Info => tracing::enabled!(target: "plugin", tracing::Level::INFO),
            Level::Warn => tracing::enabled!(target: "plugin", tracing::Level::WARN),
            Level::Error => tracing::enabled!(target: "plugin", tracing::Level::ERROR),
        };
        if !shown {
            return Ok(());
        }
        if !self.ctx.admit(message.len().min(MAX_LINE)) {
            return Err(self.breach.record(
                QuotaKind::LogRate,
                "more log output than log_lines_per_second / log_bytes_per_second".into(),
            ));
        }
        let mut message = self.caller.redactor.redact(&message);
        if message.len() > MAX_LINE {
            let mut cut = MAX_LINE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        let destination = &*self.caller.name;
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

/// Contract 0.1's `log`: the same function.
mod v0_1 {
    use super::LogCtxView;
    use crate::world::log;
    use crate::world::v0_1::switchyard::destination::log as old;

    impl old::Host for LogCtxView<'_> {
        fn log(&mut self, level: old::Level, message: String) -> wasmtime::Result<()> {
            use old::Level as L;
            let level = match level {
                L::Trace => log::Level::Trace,
                L::Debug => log::Level::Debug,
                L::Info => log::Level::Info,
                L::Warn => log::Level::Warn,
                L::Error => log::Level::Error,
            };
            log::Host::log(self, level, message)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::redact::Redactor;

    /// Lines the host would not show spend no quota; shown ones do.
    #[test]
    fn only_lines_the_host_shows_are_counted() {
        let subscriber =
            tracing_subscriber::fmt().with_max_level(tracing::Level::INFO).with_writer(std::io::sink).finish();
        tracing::subscriber::with_default(subscriber, || {
            let ctx = LogCtx::new(1, 1 << 20);
            let caller = Caller { name: Arc::from("d"), redactor: Redactor::default() };
            let mut breach = Breach::default();
            let mut view = LogCtxView { ctx: &ctx, caller: &caller, breach: &mut breach };
            for _ in 0..100 {
                assert!(view.log(Level::Debug, "not shown".into()).is_ok());
            }
            assert!(view.log(Level::Info, "shown".into()).is_ok(), "the one line of the second");
            assert!(view.log(Level::Warn, "over the rate".into()).is_err());
        });
    }
}
