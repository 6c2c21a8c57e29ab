//! PRISM PATCH: what this crate has to tell the operator (a kernel limit
//! that costs packets, a fallback that costs CPU) goes to an observer the
//! application registers, so it lands in the application's log; upstream
//! wrote such things with `log`, which an application on `tracing` alone
//! never sees.

use std::sync::OnceLock;

/// Called with one warning's text (the crate's own words, never a peer's).
pub type WarningObserver = fn(String);

static OBSERVER: OnceLock<WarningObserver> = OnceLock::new();

/// Registers the process's one warning observer; later calls are ignored.
pub fn set_warning_observer(observer: WarningObserver) {
    let _ = OBSERVER.set(observer);
}

pub(crate) fn warn(message: String) {
    match OBSERVER.get() {
        Some(observer) => observer(message),
        None => log::warn!("{message}"),
    }
}
