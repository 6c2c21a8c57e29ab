//! Prism's fan-out: one task per destination, each with its own bounded queue,
//! pushing the stream over RTMP with chunk headers written per destination and
//! payloads shared by all of them.
//!
//! Errors: every failure of a destination is a `DestinationError`, a `kind`
//! to act on (the API, the events and `prism_destination_failures_total`
//! carry it; `is_dns()`, `is_tls()`, … test it) and a message to read. A
//! failure ends one session; the task reconnects with backoff, whatever
//! the kind.

pub mod acks;
mod batch_timer;
pub mod delay_line;
pub mod destination;
pub mod destinations;
pub mod error;
pub mod queue;
pub mod rules;
pub mod session;
pub mod srt;
pub mod status;
pub mod transport;
pub mod url;
pub mod writer;

pub use delay_line::{DelayLine, DelayedHub};
pub use destination::{
    spawn_delayed_destination, spawn_destination, start_publish, DestinationHandle,
};
pub use destinations::{shut_down, Destinations};
pub use error::{DestinationError, ErrorKind};
pub use queue::{Batch, DestinationQueue, DirectWriter, QueueStats};
pub use session::DestinationConfig;
pub use status::{DestinationState, DestinationStatus};
pub use url::DestinationUrl;
