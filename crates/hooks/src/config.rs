//! `[auth]`, `[[webhooks]]` and a stream's `auth`, as the TOML says them and
//! checked: an error names the field and the span it came from, for the
//! config's own error (file, line, column).

use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::target::HookUrl;

/// A field at fault: where, which, and what is wrong.
#[derive(Debug)]
pub struct FieldError {
    pub span: Range<usize>,
    pub field: String,
    pub message: String,
}

fn fault(span: Range<usize>, field: &str, message: impl Into<String>) -> FieldError {
    FieldError {
        span,
        field: field.to_string(),
        message: message.into(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    url: Spanned<String>,
    #[serde(default = "default_timeout_ms")]
    timeout_ms: Spanned<u64>,
    #[serde(default)]
    on_error: Option<Spanned<String>>,
    #[serde(default)]
    cache_s: u64,
    #[serde(default)]
    unknown_keys: bool,
    #[serde(default = "default_max_concurrent")]
    max_concurrent: Spanned<usize>,
    ca_file: Option<Spanned<String>>,
}

fn default_timeout_ms() -> Spanned<u64> {
    Spanned::new(0..0, 2000)
}

fn default_max_concurrent() -> Spanned<usize> {
    Spanned::new(0..0, 16)
}

/// What to do when the hook fails (times out, answers 5xx or 3xx, cannot
/// be reached).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnError {
    Deny,
    Allow,
}

/// `[auth]`, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthSettings {
    pub url: HookUrl,
    pub timeout: Duration,
    pub on_error: OnError,
    pub cache: Duration,
    pub unknown_keys: bool,
    pub max_concurrent: usize,
    pub ca_file: Option<PathBuf>,
}

impl AuthSettings {
    /// A stream's own hook URL with `[auth]`'s other settings, or their
    /// defaults without `[auth]`.
    pub fn for_url(url: HookUrl, base: Option<&AuthSettings>) -> Self {
        match base {
            Some(base) => Self {
                url,
                ..base.clone()
            },
            None => Self {
                url,
                timeout: Duration::from_millis(*default_timeout_ms().get_ref()),
                on_error: OnError::Deny,
                cache: Duration::ZERO,
                unknown_keys: false,
                max_concurrent: *default_max_concurrent().get_ref(),
                ca_file: None,
            },
        }
    }
}

/// A `ca_file` made a path by `resolve` (the config folder's, and checked).
fn ca_file(
    raw: &Option<Spanned<String>>,
    field: &str,
    resolve: &impl Fn(&str) -> Result<PathBuf, String>,
) -> Result<Option<PathBuf>, FieldError> {
    raw.as_ref()
        .map(|file| resolve(file.get_ref()).map_err(|m| fault(file.span(), field, m)))
        .transpose()
}

/// `[auth]`; `resolve` makes a `ca_file` a path (and checks it).
pub fn parse_auth(
    raw: &RawAuth,
    resolve: impl Fn(&str) -> Result<PathBuf, String>,
) -> Result<AuthSettings, FieldError> {
    let url =
        HookUrl::parse(raw.url.get_ref()).map_err(|m| fault(raw.url.span(), "auth.url", m))?;
    let timeout_ms = *raw.timeout_ms.get_ref();
    if !(50..=30_000).contains(&timeout_ms) {
        return Err(fault(
            raw.timeout_ms.span(),
            "auth.timeout_ms",
            "must be 50 to 30000",
        ));
    }
    let on_error = match &raw.on_error {
        None => OnError::Deny,
        Some(text) => match text.get_ref().as_str() {
            "deny" => OnError::Deny,
            "allow" => OnError::Allow,
            other => {
                return Err(fault(
                    text.span(),
                    "auth.on_error",
                    format!("{other:?} is neither \"deny\" nor \"allow\""),
                ))
            }
        },
    };
    let max_concurrent = *raw.max_concurrent.get_ref();
    if !(1..=1024).contains(&max_concurrent) {
        return Err(fault(
            raw.max_concurrent.span(),
            "auth.max_concurrent",
            "must be 1 to 1024",
        ));
    }
    Ok(AuthSettings {
        url,
        timeout: Duration::from_millis(timeout_ms),
        on_error,
        cache: Duration::from_secs(raw.cache_s.min(86_400)),
        unknown_keys: raw.unknown_keys,
        max_concurrent,
        ca_file: ca_file(&raw.ca_file, "auth.ca_file", &resolve)?,
    })
}

/// A stream's `auth`: `false` turns the hook off for it, a URL asks that
/// hook instead of `[auth]`'s.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawStreamAuth {
    Enabled(bool),
    Url(String),
}

/// A stream's hook.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum StreamAuth {
    /// `[auth]`'s, if there is one.
    #[default]
    Inherit,
    Off,
    Url(HookUrl),
}

pub fn parse_stream_auth(
    raw: &Spanned<RawStreamAuth>,
    field: &str,
) -> Result<StreamAuth, FieldError> {
    match raw.get_ref() {
        RawStreamAuth::Enabled(false) => Ok(StreamAuth::Off),
        RawStreamAuth::Enabled(true) => Ok(StreamAuth::Inherit),
        RawStreamAuth::Url(url) => HookUrl::parse(url)
            .map(StreamAuth::Url)
            .map_err(|m| fault(raw.span(), field, m)),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhook {
    id: Option<Spanned<String>>,
    url: Spanned<String>,
    secret: Option<Spanned<String>>,
    events: Option<Vec<Spanned<String>>>,
    #[serde(default = "default_webhook_timeout_ms")]
    timeout_ms: Spanned<u64>,
    #[serde(default = "default_max_queue")]
    max_queue: Spanned<usize>,
    ca_file: Option<Spanned<String>>,
}

fn default_webhook_timeout_ms() -> Spanned<u64> {
    Spanned::new(0..0, 5000)
}

fn default_max_queue() -> Spanned<usize> {
    Spanned::new(0..0, 10_000)
}

/// Every event type a webhook can be sent (those of `GET /v1/events`).
pub const EVENT_TYPES: [&str; 12] = [
    "publish_start",
    "publish_stop",
    "destination_state",
    "source_switch",
    "standby_start",
    "standby_stop",
    "recording_start",
    "recording_segment",
    "recording_stop",
    "schedule_start",
    "schedule_end",
    "config_changed",
];

/// `[[webhooks]]` entry, checked. Its debug form leaves the secret out.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSettings {
    /// Its name in metrics and logs (default: the URL's host and port).
    pub id: String,
    pub url: HookUrl,
    pub secret: Option<String>,
    /// The event types sent; `None`: all of them.
    pub events: Option<Vec<String>>,
    pub timeout: Duration,
    pub max_queue: usize,
    pub ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for WebhookSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSettings")
            .field("id", &self.id)
            .field("url", &self.url)
            .field("secret", &self.secret.as_ref().map(|_| "…"))
            .field("events", &self.events)
            .field("timeout", &self.timeout)
            .field("max_queue", &self.max_queue)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

impl WebhookSettings {
    /// Whether events of `kind` go to this webhook.
    pub fn wants(&self, kind: &str) -> bool {
        self.events
            .as_ref()
            .is_none_or(|events| events.iter().any(|e| e == kind))
    }
}

/// `[[webhooks]]`; `resolve` makes a `ca_file` a path (and checks it).
pub fn parse_webhooks(
    raw: &[RawWebhook],
    resolve: impl Fn(&str) -> Result<PathBuf, String>,
) -> Result<Vec<WebhookSettings>, FieldError> {
    let mut webhooks: Vec<WebhookSettings> = Vec::new();
    for (index, webhook) in raw.iter().enumerate() {
        let field = |name: &str| format!("webhooks[{index}].{name}");
        let url = HookUrl::parse(webhook.url.get_ref())
            .map_err(|m| fault(webhook.url.span(), &field("url"), m))?;
        let id = match &webhook.id {
            Some(id) => {
                let text = id.get_ref().trim();
                let plain = !text.is_empty()
                    && text.len() <= 64
                    && text
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
                if !plain {
                    return Err(fault(
                        id.span(),
                        &field("id"),
                        "must be 1 to 64 letters, digits, '-', '_' or '.'",
                    ));
                }
                text.to_string()
            }
            None => url.authority.clone(),
        };
        if webhooks.iter().any(|w| w.id == id) {
            let span = webhook.id.as_ref().map_or(webhook.url.span(), |i| i.span());
            return Err(fault(
                span,
                &field("id"),
                format!("another webhook is named {id:?}: give each an id of its own"),
            ));
        }
        let secret = match &webhook.secret {
            Some(secret) if secret.get_ref().len() < 16 => {
                return Err(fault(
                    secret.span(),
                    &field("secret"),
                    "must be at least 16 characters",
                ))
            }
            Some(secret) => Some(secret.get_ref().clone()),
            None => None,
        };
        let events = match &webhook.events {
            None => None,
            Some(events) => {
                let mut names = Vec::new();
                for event in events {
                    let name = event.get_ref().trim();
                    let matched: Vec<&str> = match name.strip_suffix('*') {
                        Some(prefix) => EVENT_TYPES
                            .iter()
                            .copied()
                            .filter(|t| t.starts_with(prefix))
                            .collect(),
                        None => EVENT_TYPES.iter().copied().filter(|t| *t == name).collect(),
                    };
                    if matched.is_empty() {
                        return Err(fault(
                            event.span(),
                            &field("events"),
                            format!(
                                "{name:?} is no event type (they are {})",
                                EVENT_TYPES.join(", ")
                            ),
                        ));
                    }
                    names.extend(matched.into_iter().map(String::from));
                }
                Some(names)
            }
        };
        let timeout_ms = *webhook.timeout_ms.get_ref();
        if !(100..=60_000).contains(&timeout_ms) {
            return Err(fault(
                webhook.timeout_ms.span(),
                &field("timeout_ms"),
                "must be 100 to 60000",
            ));
        }
        let max_queue = *webhook.max_queue.get_ref();
        if !(1..=1_000_000).contains(&max_queue) {
            return Err(fault(
                webhook.max_queue.span(),
                &field("max_queue"),
                "must be 1 to 1000000",
            ));
        }
        webhooks.push(WebhookSettings {
            id,
            url,
            secret,
            events,
            timeout: Duration::from_millis(timeout_ms),
            max_queue,
            ca_file: ca_file(&webhook.ca_file, &field("ca_file"), &resolve)?,
        });
    }
    Ok(webhooks)
}
