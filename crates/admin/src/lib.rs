//! Prism's control plane: the TOML configuration (parsing, validation,
//! write-back), live changes and reloads applied as a diff, and the admin
//! HTTP API that drives them.
//!
//! Errors: a caller that must tell cases apart gets a type
//! (`ConfigError` with the field at fault, `ControlError`, `OutsideError`);
//! only `api.rs` turns them into HTTP statuses. The checks of single config
//! fields return their reason as text, which `ConfigError` attaches to the
//! field: it is read by the person editing the file, and no caller tells
//! those reasons apart.

pub mod api;
pub mod command;
pub mod config;
pub mod console;
pub mod control;
pub mod control_error;
pub mod download_link;
pub mod error;
pub mod outside;
pub mod persist;
pub mod plan;
pub mod platforms;
pub mod range;
mod retention;
mod rule_checks;
pub mod scheduler;
pub mod site_guard;
pub mod streams;

pub use api::router;
pub use config::{Config, ConfigError, LogFormat};
pub use control::Controller;
