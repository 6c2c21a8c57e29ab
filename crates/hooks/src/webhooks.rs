//! Webhooks: every event, as JSON POSTed to each `[[webhooks]]` URL that
//! wants its type, signed, at least once and in order per webhook.
//!
//! Each webhook has a task of its own that owns its queue (`Outbox`) and
//! its journal: a file of JSON lines (`{"add": …}`, `{"done": ID}`) beside
//! the config, appended as events come and go, read back at start, and
//! rewritten when it has grown to mostly done lines. So a restart loses
//! nothing that was queued, and a crash at worst sends an event twice
//! (same `id`). An event is handed to the task through a bounded channel:
//! publishing never waits, and a dead or slow endpoint costs the show
//! nothing (its queue fills, the oldest are dropped and counted).

use std::future::Future;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

use prism_media::supervise::catch_panic;

use crate::config::WebhookSettings;
use crate::http::{Answer, HttpClient, HttpError};
use crate::outbox::{Outbox, Pending, Settled};
use crate::sign::signature;

/// Events waiting to be journaled, per webhook: a burst beyond this is
/// dropped (and counted), never waited for.
const CHANNEL: usize = 4096;
/// The longest journal line read back (an event is far smaller).
const MAX_LINE: usize = 1 << 20;
/// A journal is rewritten once it holds this many lines more than twice
/// the events pending.
const COMPACT_SLACK: usize = 1000;

/// One journal line.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Line {
    Add(Pending),
    Done(String),
}

/// The webhooks running now; dropping this stops their tasks (what they
/// have queued stays in their journals).
pub struct Webhooks {
    hooks: Vec<Hook>,
    _stop: watch::Sender<bool>,
}

struct Hook {
    settings: WebhookSettings,
    events: mpsc::Sender<Pending>,
}

impl Webhooks {
    /// Starts a task per webhook, each with what its journal in `dir` still
    /// holds. A webhook whose client cannot be made (its CA file went away
    /// since the config was read) is logged and left out.
    pub fn start(settings: Vec<WebhookSettings>, dir: &Path) -> Self {
        let (stop, stopped) = watch::channel(false);
        let mut hooks = Vec::new();
        for webhook in settings {
            let client = match HttpClient::new(webhook.ca_file.as_deref()) {
                Ok(client) => client,
                Err(e) => {
                    error!(webhook = %webhook.id, error = %e, "the webhook could not be set up; it gets no events until the config is fixed");
                    continue;
                }
            };
            let (events, received) = mpsc::channel(CHANNEL);
            let journal = dir.join(format!("{}.jsonl", file_name(&webhook.id)));
            tokio::spawn(supervise(
                webhook.clone(),
                client,
                journal,
                received,
                stopped.clone(),
            ));
            hooks.push(Hook {
                settings: webhook,
                events,
            });
        }
        Self { hooks, _stop: stop }
    }

    /// Queues an event of type `kind` for every webhook that wants it.
    /// `fields` is the event's JSON object (as `GET /v1/events` has it);
    /// its `timestamp` becomes `time`, and it gains `id` and `type`.
    pub fn publish(&self, kind: &str, fields: &serde_json::Value) {
        let wanted: Vec<&Hook> = self
            .hooks
            .iter()
            .filter(|h| h.settings.wants(kind))
            .collect();
        if wanted.is_empty() {
            return;
        }
        let id = event_id();
        let body = event_body(&id, kind, fields);
        for hook in wanted {
            let pending = Pending {
                id: id.clone(),
                body: body.clone(),
                first_try_ms: 0,
                attempts: 0,
                next_try_ms: 0,
            };
            if hook.events.try_send(pending).is_err() {
                metrics::counter!("prism_webhook_deliveries_total", "webhook" => hook.settings.id.clone(), "result" => "dropped").increment(1);
            }
        }
    }
}

/// `{"id", "type", "time", …fields}` as text.
fn event_body(id: &str, kind: &str, fields: &serde_json::Value) -> String {
    let mut object = serde_json::Map::new();
    object.insert("id".into(), id.into());
    object.insert("type".into(), kind.into());
    if let Some(fields) = fields.as_object() {
        for (name, value) in fields {
            match name.as_str() {
                "type" => {}
                "timestamp" => {
                    object.insert("time".into(), value.clone());
                }
                _ => {
                    object.insert(name.clone(), value.clone());
                }
            }
        }
    }
    serde_json::Value::Object(object).to_string()
}

/// A fresh event id: `evt_` and 128 random bits in hex.
fn event_id() -> String {
    let bits: u128 = rand::random();
    format!("evt_{bits:032x}")
}

/// A webhook id as a file name (ids are letters, digits, `-_.`; a host
/// and port default has a `:`).
fn file_name(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Runs a webhook's task; a panic is logged and counted, and the task
/// starts again a second later from its journal.
async fn supervise(
    settings: WebhookSettings,
    client: HttpClient,
    journal: PathBuf,
    mut events: mpsc::Receiver<Pending>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let run = run(&settings, &client, &journal, &mut events, &mut stop);
        match catch_panic("webhook", run).await {
            Ok(()) => return,
            Err(panic) => {
                error!(webhook = %settings.id, panic = %panic.message, "the webhook's task panicked; it starts again from its journal");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

type Delivery = Pin<Box<dyn Future<Output = Result<Answer, HttpError>> + Send>>;

async fn run(
    settings: &WebhookSettings,
    client: &HttpClient,
    journal_path: &Path,
    events: &mut mpsc::Receiver<Pending>,
    stop: &mut watch::Receiver<bool>,
) {
    let mut outbox = Outbox::new(settings.max_queue);
    for pending in read_journal(journal_path) {
        if outbox.push(pending).is_some() {
            count(settings, "dropped");
        }
    }
    let mut journal = Journal::open(journal_path, &outbox).await;
    if !outbox.is_empty() {
        info!(webhook = %settings.id, pending = outbox.len(), "webhook: delivering what was queued before the restart");
    }
    let gauge = metrics::gauge!("prism_webhook_queue", "webhook" => settings.id.clone());
    let mut in_flight: Option<Delivery> = None;
    loop {
        gauge.set(outbox.len() as f64);
        let wait = match (&in_flight, outbox.next_try_ms()) {
            (None, Some(at)) => Some(Duration::from_millis(at.saturating_sub(now_ms()))),
            _ => None,
        };
        tokio::select! {
            biased;
            _ = stop.changed() => return,
            answer = async { in_flight.as_mut().expect("guarded").await }, if in_flight.is_some() => {
                in_flight = None;
                let settled = match answer {
                    Ok(answer) if (200..300).contains(&answer.status) => outbox.delivered(),
                    // The receiver will never take it (408 and 429 are
                    // "later", not "never").
                    Ok(answer) if (400..500).contains(&answer.status)
                        && answer.status != 408 && answer.status != 429 =>
                    {
                        warn!(webhook = %settings.id, status = answer.status, "the webhook refused an event; it is not sent again");
                        outbox.rejected()
                    }
                    Ok(answer) => {
                        warn!(webhook = %settings.id, status = answer.status, "webhook delivery failed; it is retried");
                        outbox.failed(now_ms())
                    }
                    Err(e) => {
                        warn!(webhook = %settings.id, error = %e, "webhook delivery failed; it is retried");
                        outbox.failed(now_ms())
                    }
                };
                match settled {
                    Some(Settled::Delivered(id)) => {
                        count(settings, "delivered");
                        journal.done(&id, &outbox).await;
                    }
                    Some(Settled::Rejected(id)) => {
                        count(settings, "rejected");
                        journal.done(&id, &outbox).await;
                    }
                    Some(Settled::Expired(id)) => {
                        count(settings, "failed");
                        count(settings, "expired");
                        warn!(webhook = %settings.id, event = %id, "webhook: an event failed for 24 hours and is given up");
                        journal.done(&id, &outbox).await;
                    }
                    Some(Settled::Retrying { .. }) => count(settings, "failed"),
                    None => {}
                }
            }
            event = events.recv() => {
                let Some(event) = event else { return };
                journal.add(&event).await;
                if let Some(dropped) = outbox.push(event) {
                    count(settings, "dropped");
                    journal.done(&dropped.id, &outbox).await;
                }
            }
            () = tokio::time::sleep(wait.unwrap_or_default()), if wait.is_some() => {
                if let Some(head) = outbox.due(now_ms()) {
                    in_flight = Some(deliver(settings, client, head));
                }
            }
        }
    }
}

fn count(settings: &WebhookSettings, result: &'static str) {
    metrics::counter!("prism_webhook_deliveries_total", "webhook" => settings.id.clone(), "result" => result).increment(1);
}

/// One try of `pending`: its body with `sent_at` (so the signature covers
/// when it was sent, and a receiver can refuse a replay), signed.
fn deliver(settings: &WebhookSettings, client: &HttpClient, pending: &Pending) -> Delivery {
    let now = SystemTime::now();
    let sent_at = humantime::format_rfc3339_millis(now).to_string();
    let body = with_sent_at(&pending.body, &sent_at);
    let mut headers = vec![
        ("x-prism-id", pending.id.clone()),
        (
            "x-prism-timestamp",
            now.duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
                .to_string(),
        ),
    ];
    if let Some(secret) = &settings.secret {
        headers.push(("x-prism-signature", signature(secret, body.as_bytes())));
    }
    let (client, url, timeout) = (client.clone(), settings.url.clone(), settings.timeout);
    Box::pin(async move {
        client
            .post(&url, &headers, Bytes::from(body), timeout)
            .await
    })
}

/// The body with `"sent_at"` added as its last field.
fn with_sent_at(body: &str, sent_at: &str) -> String {
    let Some(open) = body.strip_suffix('}') else {
        return body.to_string();
    };
    let comma = if open.ends_with('{') { "" } else { "," };
    format!("{open}{comma}\"sent_at\":\"{sent_at}\"}}")
}

/// What a journal still holds pending, in order; unreadable lines (a line
/// cut short by a crash) are skipped.
fn read_journal(path: &Path) -> Vec<Pending> {
    let Ok(file) = std::fs::File::open(path) else {
        return Vec::new();
    };
    let mut pending: Vec<Pending> = Vec::new();
    let mut reader = BufReader::new(file);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader
            .by_ref()
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
        {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if line.len() > MAX_LINE {
            // Skip the rest of an overlong line.
            let mut rest = Vec::new();
            let _ = reader.read_until(b'\n', &mut rest);
            continue;
        }
        match serde_json::from_slice::<Line>(&line) {
            Ok(Line::Add(event)) => pending.push(event),
            Ok(Line::Done(id)) => pending.retain(|p| p.id != id),
            Err(_) => {}
        }
    }
    pending
}

/// A webhook's journal file, appended to; rewritten (atomically) with just
/// what is pending when done lines dominate it.
struct Journal {
    path: PathBuf,
    file: Option<tokio::fs::File>,
    lines: usize,
    /// The last write error was logged: the next one is not, until a write
    /// succeeds again.
    failing: bool,
}

impl Journal {
    /// Opens the journal, rewritten to hold just `outbox`'s events.
    async fn open(path: &Path, outbox: &Outbox) -> Self {
        let mut journal = Self {
            path: path.to_path_buf(),
            file: None,
            lines: 0,
            failing: false,
        };
        journal.rewrite(outbox).await;
        journal
    }

    async fn add(&mut self, event: &Pending) {
        let line = serde_json::to_string(&Line::Add(event.clone())).expect("serializes");
        self.append(line).await;
    }

    async fn done(&mut self, id: &str, outbox: &Outbox) {
        let line = serde_json::to_string(&Line::Done(id.to_string())).expect("serializes");
        self.append(line).await;
        if self.lines > 2 * outbox.len() + COMPACT_SLACK {
            self.rewrite(outbox).await;
        }
    }

    async fn append(&mut self, mut line: String) {
        line.push('\n');
        let result = match self.file.as_mut() {
            Some(file) => match file.write_all(line.as_bytes()).await {
                Ok(()) => file.flush().await,
                Err(e) => Err(e),
            },
            None => Err(std::io::Error::other("the journal is not open")),
        };
        self.lines += 1;
        self.report(result);
    }

    async fn rewrite(&mut self, outbox: &Outbox) {
        let mut text = String::new();
        for event in outbox.pending() {
            text.push_str(&serde_json::to_string(&Line::Add(event.clone())).expect("serializes"));
            text.push('\n');
        }
        let path = self.path.clone();
        let written = tokio::task::spawn_blocking(move || write_journal(&path, &text))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
        self.report(written);
        self.lines = outbox.len();
        self.file = tokio::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&self.path)
            .await
            .ok();
    }

    fn report(&mut self, result: std::io::Result<()>) {
        match result {
            Ok(()) => self.failing = false,
            Err(e) if !self.failing => {
                self.failing = true;
                warn!(journal = %self.path.display(), error = %e, "the webhook journal could not be written: queued events are kept in memory, but lost if Prism stops now");
            }
            Err(_) => {}
        }
    }
}

/// Writes a journal through a temporary file and a rename.
fn write_journal(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let temp = path.with_extension("jsonl.tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&temp)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&temp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_names_the_event_and_carries_its_fields() {
        let fields = serde_json::json!({
            "type": "publish_stop", "stream": "main", "timestamp": "2026-12-07T12:00:00Z"
        });
        let body = event_body("evt_1", "publish_stop", &fields);
        let value: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"id": "evt_1", "type": "publish_stop", "stream": "main", "time": "2026-12-07T12:00:00Z"})
        );
        let sent: serde_json::Value =
            serde_json::from_str(&with_sent_at(&body, "2026-12-07T12:00:01.000Z")).unwrap();
        assert_eq!(sent["sent_at"], "2026-12-07T12:00:01.000Z");
        assert_eq!(sent["id"], "evt_1");
        assert_eq!(with_sent_at("{}", "t"), "{\"sent_at\":\"t\"}");
    }

    #[test]
    fn a_journal_reads_back_what_is_still_pending_past_a_torn_line() {
        let dir = std::env::temp_dir().join(format!("prism-journal-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("hook.jsonl");
        let add = |id: &str| {
            serde_json::to_string(&Line::Add(Pending {
                id: id.into(),
                body: "{}".into(),
                first_try_ms: 0,
                attempts: 0,
                next_try_ms: 0,
            }))
            .unwrap()
        };
        let text = format!(
            "{}\n{}\n{}\n{{\"done\":\"a\"}}\n{}",
            add("a"),
            add("b"),
            add("c"),
            &add("d")[..10]
        );
        std::fs::write(&path, text).unwrap();
        let ids: Vec<String> = read_journal(&path).into_iter().map(|p| p.id).collect();
        assert_eq!(ids, ["b", "c"]);
        std::fs::remove_dir_all(&dir).ok();
    }
}
