//! PRISM PATCH: the tasks this crate spawns catch their own panics. Upstream
//! let a panic end the task with the text printed to stderr and nothing
//! else told; the application (Prism counts them per task kind) registers
//! an observer here.

use std::{any::Any, future::Future, panic::AssertUnwindSafe, sync::OnceLock};

use futures::FutureExt;

/// Called with the task's kind (`"srt_connection"`, `"srt_listener"`) and
/// the panic's message when a task of this crate panicked.
pub type PanicObserver = fn(&'static str, String);

static OBSERVER: OnceLock<PanicObserver> = OnceLock::new();

/// Registers the process's one panic observer; later calls are ignored.
pub fn set_panic_observer(observer: PanicObserver) {
    let _ = OBSERVER.set(observer);
}

/// Runs `future`; a panic inside it ends it and is reported to the observer.
pub(crate) async fn supervised(task: &'static str, future: impl Future<Output = ()>) {
    if let Err(payload) = AssertUnwindSafe(future).catch_unwind().await {
        let message = panic_message(payload.as_ref());
        match OBSERVER.get() {
            Some(observer) => observer(task, message),
            None => log::error!("{task} task panicked: {message:?}"),
        }
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-text payload".to_string()
    }
}
