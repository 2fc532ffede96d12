//! Logging into the host's log, tagged with the destination's name.
//!
//! Never log a secret: settings values such as API keys stay out of messages.

/// Severity, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// Writes one line to the host's log. The host may drop lines from a chatty
/// destination.
pub fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    {
        use crate::__private::bindings::switchyard::destination::log as wit;
        let level = match level {
            Level::Trace => wit::Level::Trace,
            Level::Debug => wit::Level::Debug,
            Level::Info => wit::Level::Info,
            Level::Warn => wit::Level::Warn,
            Level::Error => wit::Level::Error,
        };
        wit::log(level, message);
    }
    #[cfg(not(target_arch = "wasm32"))]
    if let Some(host) = NATIVE_HOST.get() {
        host(level, message);
    }
}

/// Natively, the function that answers in the host's place.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) type NativeHost = fn(Level, &str);

#[cfg(not(target_arch = "wasm32"))]
thread_local! {
    /// Natively, what stands in for the host's capability (the `testing`
    /// module's recorder); without one, lines are dropped.
    pub(crate) static NATIVE_HOST: std::cell::Cell<Option<NativeHost>> = const { std::cell::Cell::new(None) };
}

/// [`log`] at [`Level::Debug`].
pub fn debug(message: &str) {
    log(Level::Debug, message);
}

/// [`log`] at [`Level::Info`].
pub fn info(message: &str) {
    log(Level::Info, message);
}

/// [`log`] at [`Level::Warn`].
pub fn warn(message: &str) {
    log(Level::Warn, message);
}

/// [`log`] at [`Level::Error`].
pub fn error(message: &str) {
    log(Level::Error, message);
}
