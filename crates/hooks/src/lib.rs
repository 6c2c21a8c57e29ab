//! What Prism tells and asks outside itself over HTTP: the publish
//! authorisation hook (`[auth]`), which may refuse a publish or place a
//! key Prism does not know, and webhooks (`[[webhooks]]`), which get every
//! event signed, at least once, in order, from a queue that outlives a
//! restart. Neither can cost the show anything: calls are bounded in time
//! and number, and queues in size.

pub mod auth;
pub mod config;
pub mod http;
pub mod outbox;
pub mod sign;
pub mod target;
pub mod webhooks;

pub use target::HookUrl;
pub use webhooks::Webhooks;
