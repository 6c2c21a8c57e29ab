//! The control plane's errors, apart from HTTP: `api.rs` alone maps them to
//! statuses.

/// Why the control plane refused or failed a change, a reload or a sync.
/// Callers tell the cases apart (the API maps them to HTTP statuses, the
/// SIGHUP reload logs them); the message says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The change or the file does not validate (the message names the
    /// file, line and field).
    #[error("{0}")]
    Invalid(String),
    /// The configuration a change would make does not validate: the error
    /// names the field at fault.
    #[error("{0}")]
    InvalidConfig(crate::config::ConfigError),
    /// What the change names does not exist (a stream, a destination).
    #[error("{0}")]
    NotFound(String),
    /// The change collides with what exists (an id or a key taken, a
    /// limit reached), or another node changed the streams first (cluster
    /// mode: try again).
    #[error("{0}")]
    Conflict(String),
    /// The cluster's store (Redis) cannot take changes now.
    #[error("{0}")]
    StoreUnavailable(String),
    /// A fault inside Prism: a task failed, a file could not be written.
    #[error("{0}")]
    Internal(String),
}
