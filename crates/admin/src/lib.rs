//! Prism's control plane: the TOML configuration (parsing, validation,
//! write-back), live changes and reloads applied as a diff, and the admin
//! HTTP API that drives them.

pub mod api;
pub mod command;
pub mod config;
pub mod console;
pub mod control;
pub mod control_error;
pub mod error;
pub mod outside;
pub mod persist;
pub mod plan;
pub mod platforms;
pub mod site_guard;
pub mod streams;

pub use api::router;
pub use config::{Config, ConfigError, LogFormat};
pub use control::Controller;
