//! The TOML configuration: parsing, validation, and errors that name the
//! file, line, column and field to fix.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::outside::{Outside, System};
use prism_cluster::ClusterSettings;
use prism_fanout::DestinationUrl;
use prism_hooks::config::{
    parse_auth, parse_stream_auth, parse_webhooks, AuthSettings, FieldError, RawAuth,
    RawStreamAuth, RawWebhook, StreamAuth, WebhookSettings,
};
use prism_ingest::IngestLimits;
pub use prism_media::single_track::Tracks;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    log_format: LogFormat,
    #[serde(default = "default_max_standby_mib")]
    max_standby_mib: Spanned<u64>,
    #[serde(default)]
    runtime: RawRuntime,
    rtmp: Spanned<RawRtmp>,
    srt: Option<RawSrt>,
    metrics: Option<RawMetrics>,
    admin: Option<Spanned<RawAdmin>>,
    #[serde(default)]
    fanout: RawFanout,
    #[serde(default)]
    record: RawRecord,
    cluster: Option<Spanned<RawCluster>>,
    auth: Option<RawAuth>,
    #[serde(default)]
    webhooks: Vec<RawWebhook>,
    #[serde(default)]
    streams: Vec<RawStream>,
}

/// The largest standby clip read, in MiB: a clip is held in memory whole.
fn default_max_standby_mib() -> Spanned<u64> {
    Spanned::new(0..0, 64)
}

/// The largest token file read: far over any real one.
const MAX_TOKEN_FILE_BYTES: u64 = 64 << 10;

/// The shared streams document in cluster mode: `[[streams]]` and nothing
/// else (the node's own settings stay in its file).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStreamsDocument {
    #[serde(default)]
    streams: Vec<RawStream>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    redis: Spanned<String>,
    node_id: Option<Spanned<String>>,
    #[serde(default = "default_lease_ms")]
    lease_ms: Spanned<u64>,
    #[serde(default = "default_cluster_prefix")]
    prefix: Spanned<String>,
}

/// A dead node's streams are free again this long after its last renewal:
/// the time an encoder waits before another node takes its reconnect.
fn default_lease_ms() -> Spanned<u64> {
    Spanned::new(0..0, 5000)
}

fn default_cluster_prefix() -> Spanned<String> {
    Spanned::new(0..0, "prism".to_string())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRtmp {
    listen: Spanned<String>,
    #[serde(default = "default_max_connections")]
    max_connections: usize,
    #[serde(default = "default_publish_timeout")]
    publish_timeout_s: u64,
    #[serde(default = "default_idle_timeout")]
    idle_timeout_s: u64,
    #[serde(default = "default_max_message_kib")]
    max_message_kib: u64,
    #[serde(default = "default_max_partial_messages")]
    max_partial_messages: usize,
    #[serde(default = "default_handshake_timeout")]
    handshake_timeout_s: u64,
    #[serde(default = "default_max_anonymous_connections")]
    max_anonymous_connections: usize,
    #[serde(default = "default_max_anonymous_per_address")]
    max_anonymous_per_address: usize,
    #[serde(default = "default_stall_timeout_ms")]
    stall_timeout_ms: u64,
}

// The RTMP ingest's defaults are the ingest crate's own
// (`IngestLimits::default`): written once, there.
fn default_stall_timeout_ms() -> u64 {
    IngestLimits::default().admission.stall_timeout.as_millis() as u64
}

fn default_handshake_timeout() -> u64 {
    IngestLimits::default().handshake_timeout.as_secs()
}

fn default_max_anonymous_connections() -> usize {
    IngestLimits::default().admission.max_anonymous
}

fn default_max_anonymous_per_address() -> usize {
    IngestLimits::default().admission.max_anonymous_per_address
}

fn default_max_message_kib() -> u64 {
    IngestLimits::default().max_message_bytes as u64 / 1024
}

fn default_max_partial_messages() -> usize {
    IngestLimits::default().max_partial_messages
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRuntime {
    #[serde(default = "default_worker_threads_spanned")]
    worker_threads: Spanned<usize>,
}

impl Default for RawRuntime {
    fn default() -> Self {
        Self {
            worker_threads: default_worker_threads_spanned(),
        }
    }
}

fn default_worker_threads_spanned() -> Spanned<usize> {
    Spanned::new(0..0, default_worker_threads())
}

/// One worker thread: fan-out costs least when a message reaches every
/// destination without waking other threads (measured in docs/benchmarks.md), and
/// one core relays hundreds of destinations.
fn default_worker_threads() -> usize {
    1
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSrt {
    listen: Spanned<String>,
    #[serde(default = "default_srt_max_connections")]
    max_connections: usize,
    #[serde(default = "default_srt_latency")]
    latency_ms: u64,
    passphrase: Option<Spanned<String>>,
}

fn default_srt_latency() -> u64 {
    120
}

fn default_srt_max_connections() -> usize {
    64
}

/// Streams one Prism serves at most: each has a hub, its destinations a task
/// and a socket each; past this, run another instance.
pub const MAX_STREAMS: usize = 1000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    listen: Spanned<String>,
    token: Option<Spanned<String>>,
    token_file: Option<Spanned<String>>,
    #[serde(default)]
    insecure_no_auth: bool,
    #[serde(default = "default_http_max_connections")]
    max_connections: usize,
    #[serde(default = "default_max_event_streams")]
    max_event_streams: usize,
    #[serde(default = "default_max_preview_viewers")]
    max_preview_viewers: usize,
    #[serde(default)]
    allowed_hosts: Vec<Spanned<String>>,
}

/// Live previews watched at once (each is a consumer of its stream).
fn default_max_preview_viewers() -> usize {
    4
}

/// Connections per HTTP listener: a scraper or an operator's console needs
/// a few; the cap keeps a flood far under the process's fd limit.
fn default_http_max_connections() -> usize {
    64
}

/// `/v1/events` clients at once (each holds a connection open).
fn default_max_event_streams() -> usize {
    16
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: Spanned<String>,
    #[serde(default = "default_series_idle")]
    series_idle_s: u64,
    #[serde(default = "default_http_max_connections")]
    max_connections: usize,
}

fn default_series_idle() -> u64 {
    300
}

/// How log lines are written to stderr.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// `[record]`: where and how streams with `record = true` are recorded.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRecord {
    #[serde(default = "default_record_path")]
    path: Spanned<String>,
    #[serde(default = "default_record_format")]
    format: Spanned<String>,
    #[serde(default = "default_segment_s")]
    segment_s: Spanned<u64>,
    #[serde(default)]
    keep_hours: u64,
    #[serde(default = "default_max_gib")]
    max_gib: Spanned<f64>,
}

/// Keep everything.
fn default_max_gib() -> Spanned<f64> {
    Spanned::new(0..0, 0.0)
}

impl Default for RawRecord {
    fn default() -> Self {
        Self {
            path: default_record_path(),
            format: default_record_format(),
            segment_s: default_segment_s(),
            keep_hours: 0,
            max_gib: default_max_gib(),
        }
    }
}

/// Recordings go beside the config file unless told otherwise.
fn default_record_path() -> Spanned<String> {
    Spanned::new(0..0, "recordings".into())
}

fn default_record_format() -> Spanned<String> {
    Spanned::new(0..0, "fmp4".into())
}

/// Ten minutes a file.
fn default_segment_s() -> Spanned<u64> {
    Spanned::new(0..0, 600)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFanout {
    #[serde(default = "default_queue_budget")]
    queue_budget_kib: Spanned<u64>,
    #[serde(default = "default_connect_timeout")]
    connect_timeout_s: u64,
    #[serde(default = "default_write_timeout")]
    write_timeout_s: u64,
    #[serde(default = "default_send_buffer")]
    socket_send_buffer_kib: u32,
    #[serde(default = "default_chunk_size")]
    chunk_size: Spanned<u32>,
    #[serde(default = "default_ack_timeout")]
    ack_timeout_s: u64,
    #[serde(default = "default_max_delay")]
    max_delay_ms: Spanned<u64>,
    #[serde(default = "default_max_delay_buffer")]
    max_delay_buffer_mib: Spanned<u64>,
}

/// What a stream's delay ring may hold: 600 s of a 6 Mbit/s stream is
/// 450 MiB.
fn default_max_delay_buffer() -> Spanned<u64> {
    Spanned::new(0..0, 512)
}

/// The longest delay a destination may have (`delay_s`).
pub const MAX_DESTINATION_DELAY_S: u64 = 600;

/// The largest latency budget: SRS's forwarder batches for 500 ms; twice
/// that is already more than a platform's player notices less than the
/// bursts it causes.
pub const MAX_DELAY_LIMIT_MS: u64 = 1000;

fn default_max_delay() -> Spanned<u64> {
    Spanned::new(0..0, DEFAULT_MAX_DELAY_MS)
}
/// The default latency budget: the smallest that got most of the saving
/// in the load harness (docs/benchmarks.md). At 100 destinations it cut
/// Prism's CPU by a third on loopback and by half behind a 40 ms, lossy
/// path; platforms buffer seconds, so 100 ms more is not seen.
pub const DEFAULT_MAX_DELAY_MS: u64 = 100;

/// A server that acknowledged and then acknowledges nothing for this long
/// while Prism keeps sending has hung: long enough for a server's pause.
fn default_ack_timeout() -> u64 {
    10
}

impl Default for RawFanout {
    fn default() -> Self {
        Self {
            queue_budget_kib: default_queue_budget(),
            connect_timeout_s: default_connect_timeout(),
            write_timeout_s: default_write_timeout(),
            socket_send_buffer_kib: default_send_buffer(),
            chunk_size: default_chunk_size(),
            ack_timeout_s: default_ack_timeout(),
            max_delay_ms: default_max_delay(),
            max_delay_buffer_mib: default_max_delay_buffer(),
        }
    }
}

fn default_max_connections() -> usize {
    IngestLimits::default().max_connections
}
fn default_publish_timeout() -> u64 {
    IngestLimits::default().publish_timeout.as_secs()
}
fn default_idle_timeout() -> u64 {
    IngestLimits::default().idle_timeout.as_secs()
}
fn default_queue_budget() -> Spanned<u64> {
    Spanned::new(0..0, 8 * 1024)
}
fn default_connect_timeout() -> u64 {
    10
}
fn default_write_timeout() -> u64 {
    20
}
fn default_send_buffer() -> u32 {
    512
}
fn default_chunk_size() -> Spanned<u32> {
    Spanned::new(0..0, prism_rtmp::DEFAULT_PUBLISH_CHUNK_SIZE)
}
/// Long enough for an encoder's network blip or an OBS reconnect.
fn default_reconnect_grace() -> u64 {
    10
}
fn default_true() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStream {
    id: Spanned<String>,
    /// Required unless the stream has a `pull` source.
    key: Option<Spanned<String>>,
    /// `rtmp://HOST/APP/NAME` or `srt://HOST:PORT?streamid=…`: Prism plays
    /// the stream from there instead of waiting for a publisher.
    pull: Option<Spanned<String>>,
    /// As `pull`, for the stream's backup source (the primary may be pushed).
    backup_pull: Option<Spanned<String>>,
    srt_passphrase: Option<Spanned<String>>,
    #[serde(default = "default_reconnect_grace")]
    reconnect_grace_s: u64,
    standby_file: Option<Spanned<String>>,
    #[serde(default = "default_standby_after_ms")]
    standby_after_ms: u64,
    #[serde(default = "default_standby_max_s")]
    standby_max_s: u64,
    #[serde(default = "default_failover_after_ms")]
    failover_after_ms: u64,
    #[serde(default = "default_true")]
    failback: bool,
    #[serde(default = "default_failback_after_s")]
    failback_after_s: u64,
    /// Records the stream (see `[record]`).
    #[serde(default)]
    record: bool,
    /// `false`: publishes skip `[auth]`; a URL: that hook instead.
    auth: Option<Spanned<RawStreamAuth>>,
    #[serde(default)]
    destinations: Vec<RawDestination>,
}

/// A source on air that sends nothing this long gives way to the other.
fn default_failover_after_ms() -> u64 {
    1000
}

/// A returning primary must stream this long, without a drop, before it
/// takes over from the backup again.
fn default_failback_after_s() -> u64 {
    10
}

/// An encoder silent this long is replaced by the standby clip.
fn default_standby_after_ms() -> u64 {
    1000
}

/// An hour of standby, then the destinations are unpublished.
fn default_standby_max_s() -> u64 {
    3600
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDestination {
    id: Spanned<String>,
    platform: Option<Spanned<String>>,
    url: Option<Spanned<String>>,
    key: Option<Spanned<String>>,
    #[serde(default = "default_true")]
    enabled: bool,
    ca_file: Option<Spanned<String>>,
    ack_timeout_s: Option<u64>,
    max_delay_ms: Option<Spanned<u64>>,
    tracks: Option<Spanned<String>>,
    delay_s: Option<Spanned<u64>>,
}

/// A validated configuration.
#[derive(Debug)]
pub struct Config {
    pub log_format: LogFormat,
    /// The largest standby clip read (bytes), from `max_standby_mib`.
    pub max_standby_bytes: u64,
    /// Threads of the async runtime (`[runtime] worker_threads`).
    pub worker_threads: usize,
    pub rtmp: RtmpConfig,
    /// SRT ingest; none when unset.
    pub srt: Option<SrtConfig>,
    /// Where `/metrics`, `/healthz` and `/readyz` are served; none when unset.
    pub metrics_listen: Option<SocketAddr>,
    /// How long the series of a removed stream or destination linger.
    pub metrics_series_idle: Duration,
    /// Connections the metrics listener serves at once.
    pub metrics_max_connections: usize,
    pub admin: Option<AdminConfig>,
    pub fanout: FanoutConfig,
    /// How streams with `record = true` are recorded (`[record]`).
    pub record: RecordConfig,
    /// Cluster mode: the streams live in Redis, not in this file.
    pub cluster: Option<ClusterSettings>,
    /// The publish authorisation hook (`[auth]`).
    pub auth: Option<AuthSettings>,
    pub webhooks: Vec<WebhookSettings>,
    pub streams: Vec<StreamConfig>,
}

/// `[record]`, read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordConfig {
    /// The folder of every stream's folder of recordings.
    pub root: PathBuf,
    pub format: prism_record::Format,
    /// A file ends at the first keyframe after this much media.
    pub segment: Duration,
    /// How long and how much is kept (`keep_hours`, `max_gib`; 0 keeps).
    pub retention: prism_record::library::Retention,
}

impl RecordConfig {
    /// What each recorder is started with.
    pub fn settings(&self) -> prism_record::RecordSettings {
        prism_record::RecordSettings {
            root: self.root.clone(),
            format: self.format,
            segment: self.segment,
        }
    }
}

#[derive(Clone, PartialEq, Eq)]
pub struct SrtConfig {
    pub listen: SocketAddr,
    /// SRT publishers connected at once; more are refused (Overload).
    pub max_connections: usize,
    pub latency: Duration,
    /// For streams that set no `srt_passphrase` of their own.
    pub passphrase: Option<String>,
}

impl std::fmt::Debug for SrtConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SrtConfig")
            .field("listen", &self.listen)
            .field("latency", &self.latency)
            .field("passphrase", &self.passphrase.as_ref().map(|_| "…"))
            .finish()
    }
}

/// SRT passphrases are 10 to 79 characters (the SRT specification).
fn check_passphrase(value: &Spanned<String>) -> Result<String, String> {
    let len = value.get_ref().chars().count();
    if (10..=79).contains(&len) {
        Ok(value.get_ref().clone())
    } else {
        Err(format!(
            "an SRT passphrase is 10 to 79 characters (this one has {len})"
        ))
    }
}

/// The admin API's listener and credentials.
#[derive(Clone)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// `None` only with `insecure_no_auth` on a loopback address.
    pub token: Option<String>,
    /// The token file was missing and has just been made (a first run):
    /// the start logs the console's link with it, once.
    pub token_created: bool,
    /// Connections the admin listener serves at once.
    pub max_connections: usize,
    /// `/v1/events` streams open at once (within `max_connections`).
    pub max_event_streams: usize,
    /// Live previews (`/v1/streams/{id}/preview`) watched at once.
    pub max_preview_viewers: usize,
    /// Host names (besides its addresses and `localhost`) the listener
    /// answers to, e.g. the name of a reverse proxy in front of it.
    pub allowed_hosts: Vec<String>,
}

/// Equal when they serve the same (whether the token file was just made
/// is no setting).
impl PartialEq for AdminConfig {
    fn eq(&self, other: &Self) -> bool {
        (
            self.listen,
            &self.token,
            self.max_connections,
            self.max_event_streams,
            self.max_preview_viewers,
            &self.allowed_hosts,
        ) == (
            other.listen,
            &other.token,
            other.max_connections,
            other.max_event_streams,
            other.max_preview_viewers,
            &other.allowed_hosts,
        )
    }
}

impl Eq for AdminConfig {}

impl std::fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminConfig")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "…"))
            .field("max_connections", &self.max_connections)
            .field("max_event_streams", &self.max_event_streams)
            .field("max_preview_viewers", &self.max_preview_viewers)
            .field("allowed_hosts", &self.allowed_hosts)
            .finish()
    }
}

/// A path a config file names: relative ones are from its directory.
fn relative_to_config(config_path: &Path, file: &str) -> PathBuf {
    let named = Path::new(file);
    if named.is_relative() {
        config_path.parent().unwrap_or(Path::new(".")).join(named)
    } else {
        named.to_path_buf()
    }
}

/// Shorter tokens are refused: an admin token guards every destination key.
const MIN_TOKEN_LEN: usize = 16;

#[derive(Debug)]
pub struct RtmpConfig {
    pub listen: SocketAddr,
    /// The largest RTMP message an encoder may send.
    pub max_message_bytes: usize,
    /// RTMP messages in progress at once on one connection.
    pub max_partial_messages: usize,
    pub max_connections: usize,
    /// From accept to an answered `connect` (handshake included).
    pub handshake_timeout: Duration,
    pub publish_timeout: Duration,
    pub idle_timeout: Duration,
    /// Connections not yet publishing with a known key, from all addresses
    /// and from one; a newcomer evicts the least advanced when full.
    pub max_anonymous_connections: usize,
    pub max_anonymous_per_address: usize,
    /// With the anonymous pool full, how long a connection may go without
    /// progress before it gives its slot to the next one.
    pub stall_timeout: Duration,
}

#[derive(Debug)]
pub struct FanoutConfig {
    pub queue_budget_bytes: usize,
    pub connect_timeout: Duration,
    pub write_timeout: Duration,
    pub socket_send_buffer_bytes: u32,
    pub chunk_size: u32,
    pub ack_timeout: Duration,
    /// The latency budget within which a destination's messages are
    /// coalesced into one write (`max_delay_ms`).
    pub max_delay: Duration,
    /// What a stream's delay ring may hold (`max_delay_buffer_mib`).
    pub max_delay_buffer_bytes: usize,
}

#[derive(Debug)]
pub struct StreamConfig {
    pub id: String,
    pub key: prism_media::StreamKey,
    /// Where the stream is pulled from, instead of taking publishers.
    pub pull: Option<DestinationUrl>,
    /// Where the stream's backup source is pulled from (`backup_pull`).
    pub backup_pull: Option<DestinationUrl>,
    /// Overrides `[srt] passphrase` for this stream.
    pub srt_passphrase: Option<String>,
    /// How long destinations stay connected after the publisher drops.
    pub reconnect_grace: Duration,
    /// The clip destinations get while the encoder is gone (`standby_file`).
    pub standby: Option<prism_media::hub::StandbyConfig>,
    /// When the backup source takes over and hands back (`failover_after_ms`,
    /// `failback`, `failback_after_s`).
    pub failover: prism_media::arbiter::ArbiterConfig,
    /// Whether the stream is recorded (`record`).
    pub record: bool,
    /// Its publishes' authorisation hook (`auth`).
    pub auth: StreamAuth,
    pub destinations: Vec<DestinationEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationEntry {
    pub id: String,
    /// The preset it was made from, if any (`config/platforms.toml`).
    pub platform: Option<String>,
    pub url: DestinationUrl,
    pub enabled: bool,
    /// `rtmps://` only: trust the CA certificates in this PEM file.
    pub ca_file: Option<PathBuf>,
    /// Overrides `[fanout] ack_timeout_s` for this destination.
    pub ack_timeout: Option<Duration>,
    /// Overrides `[fanout] max_delay_ms` for this destination.
    pub max_delay: Option<Duration>,
    /// Which tracks of a multitrack stream it gets (`tracks`).
    pub tracks: Tracks,
    /// It goes out this far behind the stream (`delay_s`); zero is live.
    pub delay: Duration,
}

impl DestinationEntry {
    /// The latency budget this destination runs with: its own, or
    /// `[fanout]`'s; SRT destinations have none (libsrt paces them).
    pub fn effective_max_delay(&self, fanout: &FanoutConfig) -> Duration {
        match self.url.scheme {
            prism_fanout::url::Scheme::Srt => Duration::ZERO,
            _ => self.max_delay.unwrap_or(fanout.max_delay),
        }
    }
}

/// A configuration error, shown as `FILE:LINE:COL: FIELD: message`.
#[derive(Debug)]
pub struct ConfigError {
    pub path: PathBuf,
    pub line: usize,
    pub column: usize,
    /// The field at fault, by its place in the file
    /// (`streams[0].destinations[2].url`); `None` when no one field is.
    pub field: Option<String>,
    /// What is wrong, without the field.
    pub message: String,
}

impl ConfigError {
    /// The field's own name (`url` for `streams[0].destinations[2].url`):
    /// how an API caller, who sends one stream or destination, knows it.
    pub fn field_name(&self) -> Option<&str> {
        let field = self.field.as_deref()?;
        Some(field.rsplit('.').next().unwrap_or(field))
    }

    /// `FIELD: message` (or the message alone), without the place.
    pub fn detail(&self) -> String {
        match &self.field {
            Some(field) => format!("{field}: {}", self.message),
            None => self.message.clone(),
        }
    }
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.path.display(),
            self.line,
            self.column,
            self.detail()
        )
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.to_path_buf(),
            line: 1,
            column: 1,
            field: None,
            message: format!("cannot read the config file: {e}"),
        })?;
        Self::parse(path, &text)
    }

    /// Parses a node's file. With `[cluster]`, the file holds the node's
    /// own settings only: its streams live in Redis (`parse_with_streams`).
    /// The files it names, the environment and the host name are read from
    /// this machine (`System`).
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        Self::parse_in(path, text, &System)
    }

    /// `parse` for `prism --check`: reads what the text names and writes
    /// nothing (`Checking`).
    pub fn check(path: &Path, text: &str) -> Result<Self, ConfigError> {
        Self::parse_in(path, text, &crate::outside::Checking)
    }

    /// `parse`, with what the text names answered by `outside` (`Hermetic`
    /// reads nothing: tests and the fuzz target).
    pub fn parse_in(path: &Path, text: &str, outside: &dyn Outside) -> Result<Self, ConfigError> {
        Self::parse_file(path, text, false, outside)
    }

    /// Parses a file for `prism import`: its `[[streams]]` are what is
    /// imported, whether it has a `[cluster]` section or not.
    pub fn parse_for_import(path: &Path, text: &str) -> Result<Self, ConfigError> {
        Self::parse_file(path, text, true, &System)
    }

    /// A cluster node's configuration: its file (`path`, `text`) with the
    /// cluster's streams document (`streams_text`, named `origin` in
    /// errors). Relative paths in the document (standby clips, CA files)
    /// are read from the node's config directory.
    pub fn parse_with_streams(
        path: &Path,
        text: &str,
        origin: &Path,
        streams_text: &str,
    ) -> Result<Self, ConfigError> {
        Self::parse_with_streams_in(path, text, origin, streams_text, &System)
    }

    /// `parse_with_streams`, with what the texts name answered by `outside`.
    pub fn parse_with_streams_in(
        path: &Path,
        text: &str,
        origin: &Path,
        streams_text: &str,
        outside: &dyn Outside,
    ) -> Result<Self, ConfigError> {
        let mut config = Self::parse_in(path, text, outside)?;
        let error = ErrorAt::new(origin, streams_text);
        let raw: RawStreamsDocument = toml::from_str(streams_text).map_err(|e| error.toml(&e))?;
        config.streams =
            parse_streams(raw.streams, path, config.max_standby_bytes, &error, outside)?;
        Ok(config)
    }

    fn parse_file(
        path: &Path,
        text: &str,
        import: bool,
        outside: &dyn Outside,
    ) -> Result<Self, ConfigError> {
        let error = ErrorAt::new(path, text);
        let raw: RawConfig = toml::from_str(text).map_err(|e| error.toml(&e))?;
        let cluster = match &raw.cluster {
            None => None,
            Some(cluster) => {
                if let (Some(stream), false) = (raw.streams.first(), import) {
                    return Err(error.field(
                        stream.id.span(),
                        "streams",
                        "with [cluster] the streams live in Redis, not in the node's file; \
                         load them with `prism import --config FILE` and remove them here",
                    ));
                }
                Some(parse_cluster(cluster.get_ref(), &error, outside)?)
            }
        };

        let metrics_listen = match &raw.metrics {
            None => None,
            Some(metrics) => Some(
                parse_listen(&metrics.listen)
                    .map_err(|m| error.field(metrics.listen.span(), "metrics.listen", m))?,
            ),
        };
        let admin = match &raw.admin {
            None => None,
            Some(section) => {
                let span = section.span();
                let admin = section.get_ref();
                let listen = parse_listen(&admin.listen)
                    .map_err(|m| error.field(admin.listen.span(), "admin.listen", m))?;
                let mut token_created = false;
                let token = match (&admin.token, &admin.token_file) {
                    (Some(_), Some(file)) => {
                        return Err(error.field(
                            file.span(),
                            "admin",
                            "set either token or token_file, not both",
                        ))
                    }
                    (Some(token), None) => Some((token.get_ref().trim().to_string(), token.span())),
                    (None, Some(file)) => {
                        let file_path = relative_to_config(path, file.get_ref());
                        // The console on a first run: on a loopback address
                        // a missing token file is made (elsewhere a token
                        // must be given).
                        let made = match listen.ip().is_loopback() {
                            true => outside
                                .make_token_file(&file_path)
                                .map_err(|e| error.field(file.span(), "admin.token_file", e))?,
                            false => None,
                        };
                        token_created = made.is_some();
                        let text = match made {
                            Some(token) => token,
                            None => {
                                let bytes = outside
                                    .read_file(&file_path, MAX_TOKEN_FILE_BYTES)
                                    .map_err(|e| error.field(file.span(), "admin.token_file", e))?;
                                String::from_utf8(bytes).map_err(|_| {
                                    error.field(
                                        file.span(),
                                        "admin.token_file",
                                        format!("{} is not UTF-8 text", file_path.display()),
                                    )
                                })?
                            }
                        };
                        Some((text.trim().to_string(), file.span()))
                    }
                    (None, None) => outside
                        .env("PRISM_ADMIN_TOKEN")
                        .map(|t| (t.trim().to_string(), span.clone())),
                };
                if let Some((token, span)) = &token {
                    if token.len() < MIN_TOKEN_LEN {
                        return Err(error.field(
                            span.clone(),
                            "admin.token",
                            format!("must be at least {MIN_TOKEN_LEN} characters"),
                        ));
                    }
                }
                if token.is_none() && !(admin.insecure_no_auth && listen.ip().is_loopback()) {
                    return Err(error.field(
                        span,
                        "admin",
                        "set token, token_file or the PRISM_ADMIN_TOKEN environment variable \
                         (insecure_no_auth = true is accepted only on a loopback listen address)",
                    ));
                }
                let mut allowed_hosts = Vec::new();
                for host in &admin.allowed_hosts {
                    let name = host.get_ref().trim();
                    let plain = !name.is_empty()
                        && name
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
                    if !plain {
                        return Err(error.field(
                            host.span(),
                            "admin.allowed_hosts",
                            format!(
                                "{name:?} is not a host name (write the \
                                 name alone, e.g. \"prism.example.org\": no scheme, port or path)"
                            ),
                        ));
                    }
                    allowed_hosts.push(name.to_ascii_lowercase());
                }
                let max_connections = admin.max_connections.clamp(2, 65_536);
                Some(AdminConfig {
                    token_created,
                    allowed_hosts,
                    listen,
                    token: token.map(|(t, _)| t),
                    max_connections,
                    // Leave room for API calls beside the event streams.
                    max_event_streams: admin.max_event_streams.clamp(1, max_connections - 1),
                    max_preview_viewers: admin.max_preview_viewers.min(max_connections - 1),
                })
            }
        };
        let srt = match &raw.srt {
            None => None,
            Some(srt) => Some(SrtConfig {
                listen: parse_listen(&srt.listen)
                    .map_err(|m| error.field(srt.listen.span(), "srt.listen", m))?,
                latency: Duration::from_millis(srt.latency_ms.clamp(20, 10_000)),
                max_connections: srt.max_connections.max(1),
                passphrase: match &srt.passphrase {
                    Some(p) => Some(
                        check_passphrase(p)
                            .map_err(|m| error.field(p.span(), "srt.passphrase", m))?,
                    ),
                    None => None,
                },
            }),
        };
        let rtmp_span = raw.rtmp.span();
        let rtmp = raw.rtmp.into_inner();
        let listen = parse_listen(&rtmp.listen)
            .map_err(|m| error.field(rtmp.listen.span(), "rtmp.listen", m))?;
        if rtmp.max_connections == 0 {
            return Err(error.field(rtmp_span, "rtmp.max_connections", "must be at least 1"));
        }

        let budget_kib = *raw.fanout.queue_budget_kib.get_ref();
        if budget_kib < 64 {
            return Err(error.field(
                raw.fanout.queue_budget_kib.span(),
                "fanout.queue_budget_kib",
                "must be at least 64 (one second of video needs more)",
            ));
        }

        let chunk_size = *raw.fanout.chunk_size.get_ref();
        if !(128..=65536).contains(&chunk_size) {
            return Err(error.field(
                raw.fanout.chunk_size.span(),
                "fanout.chunk_size",
                format!("must be from 128 to 65536 (the range RTMP servers such as SRS document); got {chunk_size}"),
            ));
        }

        let max_delay_ms = *raw.fanout.max_delay_ms.get_ref();
        check_max_delay(max_delay_ms)
            .map_err(|m| error.field(raw.fanout.max_delay_ms.span(), "fanout.max_delay_ms", m))?;

        let max_standby_mib = *raw.max_standby_mib.get_ref();
        if !(1..=4096).contains(&max_standby_mib) {
            return Err(error.field(
                raw.max_standby_mib.span(),
                "max_standby_mib",
                "must be 1 to 4096",
            ));
        }
        let max_standby_bytes = max_standby_mib << 20;
        let streams = parse_streams(raw.streams, path, max_standby_bytes, &error, outside)?;

        let worker_threads = *raw.runtime.worker_threads.get_ref();
        if !(1..=64).contains(&worker_threads) {
            return Err(error.field(
                raw.runtime.worker_threads.span(),
                "runtime.worker_threads",
                "must be 1 to 64",
            ));
        }
        let record = parse_record(&raw.record, path, &error)?;
        // A hook's CA file is read now, so a bad one is named here.
        let resolve = |file: &str| {
            let file = relative_to_config(path, file);
            outside.check_ca_file(&file).map_err(|e| e.to_string())?;
            Ok(file)
        };
        let auth = match &raw.auth {
            None => None,
            Some(auth) => Some(parse_auth(auth, resolve).map_err(|e| error.fault(e))?),
        };
        let webhooks = parse_webhooks(&raw.webhooks, resolve).map_err(|e| error.fault(e))?;
        let delay_buffer_mib = *raw.fanout.max_delay_buffer_mib.get_ref();
        if !(1..=65_536).contains(&delay_buffer_mib) {
            return Err(error.field(
                raw.fanout.max_delay_buffer_mib.span(),
                "fanout.max_delay_buffer_mib",
                "must be 1 to 65536",
            ));
        }
        Ok(Config {
            log_format: raw.log_format,
            record,
            max_standby_bytes,
            worker_threads,
            srt,
            metrics_listen,
            metrics_series_idle: Duration::from_secs(
                raw.metrics
                    .as_ref()
                    .map_or(default_series_idle(), |m| m.series_idle_s)
                    .max(1),
            ),
            metrics_max_connections: raw
                .metrics
                .as_ref()
                .map_or(default_http_max_connections(), |m| m.max_connections)
                .clamp(1, 65_536),
            admin,
            rtmp: RtmpConfig {
                listen,
                // RTMP message lengths are 24-bit: 16 MiB is the protocol's own cap.
                max_message_bytes: (rtmp.max_message_kib.clamp(64, 16 * 1024) * 1024) as usize,
                // Interleaving senders need one per chunk stream they use.
                max_partial_messages: rtmp.max_partial_messages.clamp(2, 64),
                max_connections: rtmp.max_connections,
                handshake_timeout: Duration::from_secs(
                    rtmp.handshake_timeout_s
                        .clamp(1, rtmp.publish_timeout_s.max(1)),
                ),
                publish_timeout: Duration::from_secs(rtmp.publish_timeout_s.max(1)),
                // Below max_connections leaves slots for publishers.
                max_anonymous_connections: rtmp
                    .max_anonymous_connections
                    .clamp(1, rtmp.max_connections),
                max_anonymous_per_address: rtmp.max_anonymous_per_address.max(1),
                stall_timeout: Duration::from_millis(rtmp.stall_timeout_ms.clamp(100, 60_000)),
                idle_timeout: Duration::from_secs(rtmp.idle_timeout_s.max(1)),
            },
            cluster,
            fanout: FanoutConfig {
                queue_budget_bytes: (budget_kib * 1024) as usize,
                connect_timeout: Duration::from_secs(raw.fanout.connect_timeout_s.max(1)),
                write_timeout: Duration::from_secs(raw.fanout.write_timeout_s.max(1)),
                ack_timeout: Duration::from_secs(raw.fanout.ack_timeout_s.clamp(2, 3600)),
                socket_send_buffer_bytes: raw.fanout.socket_send_buffer_kib.clamp(16, 64 * 1024)
                    * 1024,
                chunk_size,
                max_delay: Duration::from_millis(max_delay_ms),
                max_delay_buffer_bytes: (delay_buffer_mib << 20) as usize,
            },
            auth,
            webhooks,
            streams,
        })
    }
}

/// A destination's `tracks`: "default" (track 0 of each kind, as plain
/// packets) or "all" (every track, as received; RTMP only).
fn parse_tracks(text: &str, url: &DestinationUrl) -> Result<Tracks, String> {
    match text {
        "default" => Ok(Tracks::Default),
        "all" if url.scheme == prism_fanout::url::Scheme::Srt => Err(
            "SRT destinations carry MPEG-TS, one track of each kind; tracks = \"all\" is for rtmp:// and rtmps://"
                .into(),
        ),
        "all" => Ok(Tracks::All),
        other => Err(format!(
            "must be \"default\" (track 0 of each kind) or \"all\" (every track); got {other:?}"
        )),
    }
}

fn check_max_delay(ms: u64) -> Result<(), String> {
    if ms > MAX_DELAY_LIMIT_MS {
        return Err(format!(
            "must be from 0 (write every message at once) to {MAX_DELAY_LIMIT_MS}; got {ms}"
        ));
    }
    Ok(())
}

/// Errors at byte spans of the text of one file.
struct ErrorAt<'a> {
    path: &'a Path,
    text: &'a str,
}

impl<'a> ErrorAt<'a> {
    fn new(path: &'a Path, text: &'a str) -> Self {
        Self { path, text }
    }

    /// `field`, at `span`, is wrong: `message` says how.
    fn field(
        &self,
        span: Range<usize>,
        field: impl Into<String>,
        message: impl std::fmt::Display,
    ) -> ConfigError {
        let mut error = self.toml_syntax(span, message.to_string());
        error.field = Some(field.into());
        error
    }

    /// A hook setting at fault (`prism_hooks::config`).
    fn fault(&self, fault: FieldError) -> ConfigError {
        self.field(fault.span, fault.field, fault.message)
    }

    /// What the TOML parser or serde found (its message names the field
    /// where it knows one).
    fn toml(&self, error: &toml::de::Error) -> ConfigError {
        self.toml_syntax(
            error.span().unwrap_or(0..0),
            error.message().trim().to_string(),
        )
    }

    fn toml_syntax(&self, span: Range<usize>, message: String) -> ConfigError {
        let (line, column) = line_column(self.text, span.start);
        ConfigError {
            path: self.path.to_path_buf(),
            line,
            column,
            field: None,
            message,
        }
    }
}

fn parse_record(
    raw: &RawRecord,
    path: &Path,
    error: &ErrorAt<'_>,
) -> Result<RecordConfig, ConfigError> {
    let format = match raw.format.get_ref().as_str() {
        "fmp4" => prism_record::Format::Fmp4,
        "flv" => prism_record::Format::Flv,
        other => {
            return Err(error.field(
                raw.format.span(),
                "record.format",
                format!("{other:?} is not a recording format (\"fmp4\" or \"flv\")"),
            ))
        }
    };
    let segment_s = *raw.segment_s.get_ref();
    if !(1..=24 * 3600).contains(&segment_s) {
        return Err(error.field(
            raw.segment_s.span(),
            "record.segment_s",
            format!("must be 1 to 86400 (a day); got {segment_s}"),
        ));
    }
    let folder = raw.path.get_ref().trim();
    if folder.is_empty() {
        return Err(error.field(raw.path.span(), "record.path", "must not be empty"));
    }
    let hours = |h: u64| Duration::from_secs(h.saturating_mul(3600));
    let max_gib = *raw.max_gib.get_ref();
    if !(0.0..=1_000_000.0).contains(&max_gib) {
        return Err(error.field(
            raw.max_gib.span(),
            "record.max_gib",
            format!("must be 0 (keep everything) to 1000000; got {max_gib}"),
        ));
    }
    Ok(RecordConfig {
        root: relative_to_config(path, folder),
        format,
        segment: Duration::from_secs(segment_s),
        retention: prism_record::library::Retention {
            max_age: (raw.keep_hours > 0).then(|| hours(raw.keep_hours)),
            max_bytes: (max_gib > 0.0).then(|| (max_gib * f64::from(1u32 << 30)) as u64),
        },
    })
}

fn parse_cluster(
    raw: &RawCluster,
    error: &ErrorAt<'_>,
    outside: &dyn Outside,
) -> Result<ClusterSettings, ConfigError> {
    let url = raw.redis.get_ref().trim();
    if !(url.starts_with("redis://")
        || url.starts_with("rediss://")
        || url.starts_with("redis+unix://"))
    {
        return Err(error.field(
            raw.redis.span(),
            "cluster.redis",
            "must be a redis:// (or rediss://) URL, e.g. \"redis://127.0.0.1:6379\"",
        ));
    }
    let node_id = match &raw.node_id {
        Some(id) => {
            check_id(id.get_ref()).map_err(|m| error.field(id.span(), "cluster.node_id", m))?;
            id.get_ref().clone()
        }
        None => outside
            .host_name()
            .filter(|name| check_id(name).is_ok())
            .ok_or_else(|| {
                error.field(
                    raw.redis.span(),
                    "cluster.node_id",
                    "not set, and the host name cannot be read; set it",
                )
            })?,
    };
    let lease_ms = *raw.lease_ms.get_ref();
    if !(500..=60_000).contains(&lease_ms) {
        return Err(error.field(
            raw.lease_ms.span(),
            "cluster.lease_ms",
            format!("must be 500 to 60000; got {lease_ms}"),
        ));
    }
    let prefix = raw.prefix.get_ref().clone();
    check_id(&prefix).map_err(|m| error.field(raw.prefix.span(), "cluster.prefix", m))?;
    Ok(ClusterSettings {
        redis_url: url.to_string(),
        node_id,
        lease: Duration::from_millis(lease_ms),
        prefix,
    })
}

/// The `[[streams]]` of a node's file or of the cluster's document.
/// Relative paths are read from `path`'s directory.
fn parse_streams(
    raw_streams: Vec<RawStream>,
    path: &Path,
    max_standby_bytes: u64,
    error: &ErrorAt<'_>,
    outside: &dyn Outside,
) -> Result<Vec<StreamConfig>, ConfigError> {
    if raw_streams.len() > MAX_STREAMS {
        let span = raw_streams[MAX_STREAMS].id.span();
        return Err(error.field(
            span,
            "streams",
            format!("at most {MAX_STREAMS} streams per instance"),
        ));
    }
    let mut streams = Vec::with_capacity(raw_streams.len());
    let mut ids: HashMap<String, usize> = HashMap::new();
    let mut keys: HashMap<String, String> = HashMap::new();
    for (index, stream) in raw_streams.into_iter().enumerate() {
        let id = stream.id.get_ref().clone();
        let at = |field: &str| format!("streams[{index}].{field}");
        check_id(&id).map_err(|m| error.field(stream.id.span(), at("id"), m))?;
        if ids.insert(id.clone(), index).is_some() {
            return Err(error.field(
                stream.id.span(),
                at("id"),
                format!("duplicate stream id {id:?}"),
            ));
        }
        let backup_pull = match &stream.backup_pull {
            None => None,
            Some(url) => Some(
                parse_pull(url.get_ref())
                    .map_err(|m| error.field(url.span(), at("backup_pull"), m))?,
            ),
        };
        let pull = match &stream.pull {
            None => None,
            Some(url) => Some(
                parse_pull(url.get_ref()).map_err(|m| error.field(url.span(), at("pull"), m))?,
            ),
        };
        let key = match &stream.key {
            Some(key) => {
                check_stream_key(key.get_ref(), &id, &mut keys)
                    .map_err(|m| error.field(key.span(), at("key"), m))?;
                key.get_ref().clone()
            }
            // A pulled stream with no key takes no publisher (a key would
            // let a pushed backup in): an unguessable one stands in.
            None if pull.is_some() => unguessable_key(&id),
            None => {
                return Err(error.field(
                    stream.id.span(),
                    at("key"),
                    "missing (a stream needs a `key`, or a `pull` source)",
                ))
            }
        };

        let mut destinations = Vec::with_capacity(stream.destinations.len());
        let mut destination_ids = HashMap::new();
        for (d, destination) in stream.destinations.into_iter().enumerate() {
            let field = |name: &str| format!("streams[{index}].destinations[{d}].{name}");
            let dest_id = destination.id.get_ref().clone();
            check_id(&dest_id).map_err(|m| error.field(destination.id.span(), field("id"), m))?;
            if destination_ids.insert(dest_id.clone(), d).is_some() {
                return Err(error.field(
                    destination.id.span(),
                    field("id"),
                    format!("duplicate destination id {dest_id:?} in stream {id:?}"),
                ));
            }
            let platform = match &destination.platform {
                None => None,
                Some(name) => Some(crate::platforms::find(name.get_ref()).ok_or_else(|| {
                    let known: Vec<&str> = crate::platforms::all()
                        .iter()
                        .map(|p| p.id.as_str())
                        .collect();
                    error.field(
                        name.span(),
                        field("platform"),
                        format!(
                            "unknown platform {:?} (known: {})",
                            name.get_ref(),
                            known.join(", ")
                        ),
                    )
                })?),
            };
            let (url_text, url_span) = match (
                &destination.url,
                platform.and_then(|p| p.url.as_ref()),
            ) {
                (Some(url), _) => (url.get_ref().as_str(), url.span()),
                (None, Some(preset)) => (preset.as_str(), destination.id.span()),
                (None, None) => return Err(error.field(
                    destination.id.span(),
                    field("url"),
                    "missing (a destination needs a `url`, or a `platform` whose preset has one)",
                )),
            };
            let url = DestinationUrl::parse(
                url_text,
                destination.key.as_ref().map(|k| k.get_ref().as_str()),
            )
            .map_err(|e| error.field(url_span, field("url"), e))?;
            let ca_file = match &destination.ca_file {
                None => None,
                Some(file) => {
                    if url.scheme != prism_fanout::url::Scheme::Rtmps {
                        return Err(error.field(
                            file.span(),
                            field("ca_file"),
                            "only rtmps:// destinations use a ca_file",
                        ));
                    }
                    let ca_path = relative_to_config(path, file.get_ref());
                    outside
                        .check_ca_file(&ca_path)
                        .map_err(|e| error.field(file.span(), field("ca_file"), e))?;
                    Some(ca_path)
                }
            };
            let max_delay = match &destination.max_delay_ms {
                None => None,
                Some(ms) => {
                    if url.scheme == prism_fanout::url::Scheme::Srt {
                        return Err(error.field(
                            ms.span(),
                            field("max_delay_ms"),
                            "SRT destinations are paced by SRT's own latency; max_delay_ms is for rtmp:// and rtmps://",
                        ));
                    }
                    check_max_delay(*ms.get_ref())
                        .map_err(|m| error.field(ms.span(), field("max_delay_ms"), m))?;
                    Some(Duration::from_millis(*ms.get_ref()))
                }
            };
            let tracks = match &destination.tracks {
                None => Tracks::Default,
                Some(tracks) => parse_tracks(tracks.get_ref(), &url)
                    .map_err(|m| error.field(tracks.span(), field("tracks"), m))?,
            };
            let delay = match &destination.delay_s {
                None => Duration::ZERO,
                Some(seconds) if *seconds.get_ref() <= MAX_DESTINATION_DELAY_S => {
                    Duration::from_secs(*seconds.get_ref())
                }
                Some(seconds) => {
                    return Err(error.field(
                        seconds.span(),
                        field("delay_s"),
                        format!(
                            "must be from 0 (live) to {MAX_DESTINATION_DELAY_S} seconds; got {}",
                            seconds.get_ref()
                        ),
                    ))
                }
            };
            destinations.push(DestinationEntry {
                id: dest_id,
                platform: platform.map(|p| p.id.clone()),
                ca_file,
                url,
                enabled: destination.enabled,
                ack_timeout: destination
                    .ack_timeout_s
                    .map(|s| Duration::from_secs(s.clamp(2, 3600))),
                max_delay,
                tracks,
                delay,
            });
        }
        let srt_passphrase = match &stream.srt_passphrase {
            Some(p) => Some(
                check_passphrase(p).map_err(|m| error.field(p.span(), at("srt_passphrase"), m))?,
            ),
            None => None,
        };
        let auth = match &stream.auth {
            None => StreamAuth::Inherit,
            Some(auth) => parse_stream_auth(auth, &at("auth")).map_err(|e| error.fault(e))?,
        };
        let standby = match &stream.standby_file {
            None => None,
            Some(file) => {
                let clip_path = relative_to_config(path, file.get_ref());
                let clip = outside
                    .standby_clip(&clip_path, max_standby_bytes)
                    .map_err(|m| error.field(file.span(), at("standby_file"), m))?;
                Some(prism_media::hub::StandbyConfig {
                    clip,
                    after: Duration::from_millis(stream.standby_after_ms.clamp(100, 60_000)),
                    max: Duration::from_secs(stream.standby_max_s.clamp(1, 7 * 24 * 3600)),
                })
            }
        };
        streams.push(StreamConfig {
            id,
            standby,
            srt_passphrase,
            reconnect_grace: Duration::from_secs(stream.reconnect_grace_s.min(3600)),
            failover: prism_media::arbiter::ArbiterConfig {
                failover_after: Duration::from_millis(stream.failover_after_ms.clamp(100, 60_000)),
                failback: stream.failback,
                failback_after: Duration::from_secs(stream.failback_after_s.min(3600)),
            },
            record: stream.record,
            auth,
            key: prism_media::StreamKey::new(key),
            pull,
            backup_pull,
            destinations,
        });
    }
    Ok(streams)
}

fn parse_listen(value: &Spanned<String>) -> Result<SocketAddr, String> {
    value.get_ref().parse::<SocketAddr>().map_err(|_| {
        format!(
            "{:?} is not an address:port (e.g. \"0.0.0.0:1935\")",
            value.get_ref()
        )
    })
}

/// Ids appear in logs, metrics labels and API paths: keep them plain.
fn check_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 64 {
        return Err("must be 1 to 64 characters".into());
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
    {
        return Err(format!(
            "{id:?} may only contain letters, digits, '-', '_' and '.'"
        ));
    }
    // Ids are path segments of the admin API: "." and ".." would be
    // rewritten by clients and proxies before they reach it.
    if !id.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(format!("{id:?} must start with a letter or a digit"));
    }
    Ok(())
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = text[line_start..offset].chars().count() + 1;
    (line, column)
}

/// Checks a publisher's stream key and that no other stream uses it. Never
/// echoes the key: a duplicate names the stream that already has it.
fn check_stream_key(key: &str, id: &str, keys: &mut HashMap<String, String>) -> Result<(), String> {
    if key.trim().is_empty() {
        return Err("must not be empty".into());
    }
    if key
        .chars()
        .any(|c| c.is_whitespace() || c == '/' || c == '?')
    {
        return Err("must not contain whitespace, '/' or '?'".into());
    }
    if let Some(other) = keys.insert(key.to_string(), id.to_string()) {
        return Err(format!(
            "duplicate stream key (stream {other:?} uses the same key)"
        ));
    }
    Ok(())
}

/// Reads a `pull` source: `rtmp://HOST[:PORT]/APP/NAME` (played) or
/// `srt://HOST:PORT?streamid=…` (called, in request mode).
pub fn parse_pull(url: &str) -> Result<DestinationUrl, String> {
    let parsed = DestinationUrl::parse(url, None).map_err(|e| match e {
        // A source has a stream name where a destination has a key.
        prism_fanout::url::UrlError::NoKey => {
            "no stream name: end the url with /STREAM_NAME".to_string()
        }
        other => other.to_string(),
    })?;
    if parsed.scheme == prism_fanout::url::Scheme::Rtmps {
        return Err("rtmps:// sources are not supported: pull from rtmp:// or srt://".into());
    }
    Ok(parsed)
}

/// A stand-in key for a pulled stream (which refuses every publisher
/// anyway), the same for a stream id across reloads so that a reload sees
/// no key change: the id hashed with a secret drawn once per process.
fn unguessable_key(id: &str) -> String {
    use rand::Rng;
    use std::hash::Hasher;
    static SECRET: std::sync::OnceLock<(u64, u64)> = std::sync::OnceLock::new();
    let (a, b) = *SECRET.get_or_init(|| (rand::thread_rng().gen(), rand::thread_rng().gen()));
    let half = |seed: u64| {
        let mut hasher = std::hash::DefaultHasher::new();
        hasher.write_u64(seed);
        hasher.write(id.as_bytes());
        hasher.finish()
    };
    format!("pull-only-{:016x}{:016x}", half(a), half(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[rtmp]
listen = "127.0.0.1:1935"

[[streams]]
id = "main"
key = "live_8f2c1d"

  [[streams.destinations]]
  id = "youtube"
  url = "rtmp://a.rtmp.youtube.com/live2"
  key = "xxxx-xxxx-xxxx"

  [[streams.destinations]]
  id = "custom"
  url = "rtmp://ingest.example.com/app/fullkey"
  enabled = false
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("prism.toml"), text)
    }

    fn error_text(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn a_standby_file_is_read_and_checked_with_errors_that_name_it() {
        let dir = std::env::temp_dir().join(format!("prism-standby-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("prism.toml");
        let with = |file: &str| {
            format!(
                "[rtmp]\nlisten = \"127.0.0.1:1935\"\n\n[[streams]]\nid = \"main\"\nkey = \"live_8f2c1d\"\nstandby_file = \"{file}\"\n"
            )
        };
        // Missing: the error names the file, the field and its line.
        let text = with("brb.flv");
        let message = Config::parse(&path, &text).unwrap_err().to_string();
        assert!(
            message.contains(":7:") && message.contains("streams[0].standby_file: cannot read"),
            "{message}"
        );
        assert!(message.contains("brb.flv"), "{message}");
        // Not an FLV file.
        std::fs::write(dir.join("brb.mp4"), b"\x00\x00\x00\x18ftypisom").unwrap();
        let message = Config::parse(&path, &with("brb.mp4"))
            .unwrap_err()
            .to_string();
        assert!(message.contains("brb.mp4: MP4:"), "{message}");
        // A clip without audio.
        let mut video_only = b"FLV\x01\x01\x00\x00\x00\x09\x00\x00\x00\x00".to_vec();
        for (ts, body) in [
            (0u32, &[0x17u8, 0, 0, 0, 0, 1][..]),
            (0, &[0x17, 1, 0, 0, 0, 7][..]),
            (2000, &[0x27, 1, 0, 0, 0, 7][..]),
        ] {
            video_only.push(9);
            video_only.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
            video_only.extend_from_slice(&ts.to_be_bytes()[1..]);
            video_only.push(0);
            video_only.extend_from_slice(&[0, 0, 0]);
            video_only.extend_from_slice(body);
            video_only.extend_from_slice(&(body.len() as u32 + 11).to_be_bytes());
        }
        std::fs::write(dir.join("silent.flv"), video_only).unwrap();
        let message = Config::parse(&path, &with("silent.flv"))
            .unwrap_err()
            .to_string();
        assert!(message.contains("no AAC sequence header"), "{message}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn good_file() {
        let config = parse(GOOD).unwrap();
        assert_eq!(config.rtmp.listen, "127.0.0.1:1935".parse().unwrap());
        let stream = &config.streams[0];
        assert_eq!(stream.id, "main");
        assert_eq!(stream.key.expose(), "live_8f2c1d");
        assert_eq!(
            stream.destinations[0].url.stream_name.expose(),
            "xxxx-xxxx-xxxx"
        );
        assert!(stream.destinations[0].enabled);
        assert_eq!(stream.destinations[1].url.app, "app");
        assert!(!stream.destinations[1].enabled);
        assert_eq!(config.fanout.queue_budget_bytes, 8 * 1024 * 1024);
    }

    #[test]
    fn the_shipped_example_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/prism.toml");
        Config::load(&path).unwrap();
    }

    #[test]
    fn unknown_field_names_line_column_and_field() {
        let text = GOOD.replace("  enabled = false", "  enable = false");
        let message = error_text(&text);
        assert!(
            message.starts_with("prism.toml:17:3: unknown field `enable`"),
            "{message}"
        );
    }

    #[test]
    fn dot_only_ids_are_refused() {
        for bad in ["..", ".", ".hidden", "-x"] {
            let text = GOOD.replace("id = \"custom\"", &format!("id = \"{bad}\""));
            let message = error_text(&text);
            assert!(
                message.contains("must start with a letter or a digit"),
                "{bad}: {message}"
            );
        }
    }

    #[test]
    fn syntax_error_names_its_line() {
        let message = error_text("[rtmp]\nlisten = \"0.0.0.0:1935\n");
        assert!(message.starts_with("prism.toml:2:"), "{message}");
    }

    #[test]
    fn latency_budgets_default_per_fanout_and_per_destination_with_errors_that_name_them() {
        let config = parse(GOOD).unwrap();
        assert_eq!(
            config.fanout.max_delay.as_millis() as u64,
            DEFAULT_MAX_DELAY_MS
        );
        assert_eq!(config.streams[0].destinations[0].max_delay, None);

        let text = GOOD.replace("enabled = false", "enabled = false\n  max_delay_ms = 200")
            + "\n[fanout]\nmax_delay_ms = 50\n";
        let config = parse(&text).unwrap();
        assert_eq!(config.fanout.max_delay, Duration::from_millis(50));
        assert_eq!(
            config.streams[0].destinations[1].max_delay,
            Some(Duration::from_millis(200))
        );

        let message = error_text(&format!("{GOOD}\n[fanout]\nmax_delay_ms = 1001\n"));
        assert!(
            message.contains("fanout.max_delay_ms: must be from 0 (write every message at once) to 1000; got 1001"),
            "{message}"
        );
        let message = error_text(&GOOD.replace(
            "url = \"rtmp://ingest.example.com/app/fullkey\"",
            "url = \"srt://ingest.example.com:9000?streamid=x\"\n  max_delay_ms = 100",
        ));
        assert!(
            message.contains("streams[0].destinations[1].max_delay_ms: SRT destinations"),
            "{message}"
        );
    }

    #[test]
    fn tracks_are_default_or_all_and_srt_takes_the_default() {
        let config = parse(GOOD).unwrap();
        assert_eq!(config.streams[0].destinations[0].tracks, Tracks::Default);
        let text = GOOD.replace("enabled = false", "enabled = false\n  tracks = \"all\"");
        assert_eq!(
            parse(&text).unwrap().streams[0].destinations[1].tracks,
            Tracks::All
        );
        let message =
            error_text(&GOOD.replace("enabled = false", "enabled = false\n  tracks = \"some\""));
        assert!(
            message.contains("streams[0].destinations[1].tracks: must be \"default\""),
            "{message}"
        );
        let message = error_text(&GOOD.replace(
            "url = \"rtmp://ingest.example.com/app/fullkey\"",
            "url = \"srt://ingest.example.com:9000?streamid=x\"\n  tracks = \"all\"",
        ));
        assert!(
            message.contains("streams[0].destinations[1].tracks: SRT destinations carry MPEG-TS"),
            "{message}"
        );
    }

    #[test]
    fn missing_section() {
        let message = error_text("[[streams]]\nid = \"a\"\nkey = \"k\"\n");
        assert!(message.contains("missing field `rtmp`"), "{message}");
    }

    #[test]
    fn duplicate_stream_key_does_not_echo_the_key() {
        let text = format!("{GOOD}\n[[streams]]\nid = \"backup\"\nkey = \"live_8f2c1d\"\n");
        let message = error_text(&text);
        assert!(
            message.starts_with("prism.toml:21:7: streams[1].key: duplicate stream key"),
            "{message}"
        );
        assert!(message.contains("\"main\""));
        assert!(!message.contains("live_8f2c1d"));
    }

    #[test]
    fn duplicate_ids() {
        let text = format!("{GOOD}\n[[streams]]\nid = \"main\"\nkey = \"other\"\n");
        assert!(error_text(&text).contains("streams[1].id: duplicate stream id \"main\""));
        let text = GOOD.replace("id = \"custom\"", "id = \"youtube\"");
        let message = error_text(&text);
        assert!(
            message.starts_with("prism.toml:15:8: streams[0].destinations[1].id: duplicate"),
            "{message}"
        );
    }

    #[test]
    fn bad_url_and_bad_listen() {
        let text = GOOD.replace(
            "rtmp://ingest.example.com/app/fullkey",
            "http://example.com/x",
        );
        let message = error_text(&text);
        assert!(
            message.starts_with(
                "prism.toml:16:9: streams[0].destinations[1].url: url must start with rtmp://"
            ),
            "{message}"
        );
        let text = GOOD.replace(
            "rtmp://ingest.example.com/app/fullkey",
            "rtmp://ingest.example.com/app",
        );
        assert!(error_text(&text).contains("no stream key"));
        let text = GOOD.replace("127.0.0.1:1935", "localhost");
        let message = error_text(&text);
        assert!(
            message.starts_with("prism.toml:3:10: rtmp.listen"),
            "{message}"
        );
    }

    #[test]
    fn metrics_and_log_format() {
        let config = parse(&format!(
            "log_format = \"json\"\n{GOOD}\n[metrics]\nlisten = \"127.0.0.1:9100\"\n"
        ))
        .unwrap();
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(
            config.metrics_listen,
            Some("127.0.0.1:9100".parse().unwrap())
        );
        assert_eq!(parse(GOOD).unwrap().metrics_listen, None);
        let message = error_text(&format!("log_format = \"xml\"\n{GOOD}"));
        assert!(
            message.starts_with("prism.toml:1:14: unknown variant `xml`"),
            "{message}"
        );
        let message = error_text(&format!("{GOOD}\n[metrics]\nlisten = \"9100\"\n"));
        assert!(message.contains("metrics.listen"), "{message}");
    }

    #[test]
    fn srt_section_and_passphrases() {
        let text =
            format!("{GOOD}\n[srt]\nlisten = \"0.0.0.0:9000\"\npassphrase = \"0123456789\"\n");
        let srt = parse(&text).unwrap().srt.unwrap();
        assert_eq!(srt.latency, Duration::from_millis(120));
        assert_eq!(srt.passphrase.as_deref(), Some("0123456789"));
        assert!(!format!("{srt:?}").contains("0123456789"));
        let short = error_text(&text.replace("0123456789", "short"));
        assert!(
            short.contains("srt.passphrase: an SRT passphrase is 10 to 79 characters"),
            "{short}"
        );
        let text = GOOD.replace(
            "key = \"live_8f2c1d\"",
            "key = \"live_8f2c1d\"\nsrt_passphrase = \"abc\"",
        );
        let message = error_text(&text);
        assert!(
            message.starts_with("prism.toml:8:18: streams[0].srt_passphrase"),
            "{message}"
        );
    }

    #[test]
    fn platform_presets_fill_the_url() {
        let text = GOOD.replace(
            "url = \"rtmp://a.rtmp.youtube.com/live2\"",
            "platform = \"twitch\"",
        );
        let config = parse(&text).unwrap();
        let twitch = &config.streams[0].destinations[0];
        assert_eq!(twitch.platform.as_deref(), Some("twitch"));
        assert_eq!(twitch.url.tc_url, "rtmp://live.twitch.tv/app");
        let text = GOOD.replace(
            "url = \"rtmp://a.rtmp.youtube.com/live2\"",
            "platform = \"myspace\"",
        );
        assert!(error_text(&text).contains("unknown platform \"myspace\""));
        let text = GOOD.replace(
            "url = \"rtmp://a.rtmp.youtube.com/live2\"",
            "platform = \"custom\"",
        );
        let error = parse(&text).unwrap_err();
        assert_eq!(
            error.field.as_deref(),
            Some("streams[0].destinations[0].url")
        );
        assert_eq!(error.field_name(), Some("url"));
        assert!(error.message.starts_with("missing"), "{error}");
    }

    #[test]
    fn admin_needs_a_token_unless_loopback_and_insecure() {
        let with = |section: &str| parse(&format!("{GOOD}\n[admin]\n{section}\n"));
        let admin = with("listen = \"127.0.0.1:8080\"\ntoken = \"0123456789abcdef\"")
            .unwrap()
            .admin
            .unwrap();
        assert_eq!(admin.token.as_deref(), Some("0123456789abcdef"));
        assert!(!format!("{admin:?}").contains("0123456789abcdef"));
        assert!(with("listen = \"127.0.0.1:8080\"\ninsecure_no_auth = true")
            .unwrap()
            .admin
            .unwrap()
            .token
            .is_none());
        let open = with("listen = \"0.0.0.0:8080\"\ninsecure_no_auth = true")
            .unwrap_err()
            .to_string();
        assert!(open.contains("loopback"), "{open}");
        let short = with("listen = \"127.0.0.1:8080\"\ntoken = \"short\"")
            .unwrap_err()
            .to_string();
        assert!(short.contains("at least 16"), "{short}");
    }

    #[test]
    fn bad_ids_and_empty_keys() {
        let text = GOOD.replace("id = \"main\"", "id = \"main stream\"");
        assert!(error_text(&text).contains("streams[0].id"));
        let text = GOOD.replace("key = \"live_8f2c1d\"", "key = \"\"");
        assert!(error_text(&text).contains("streams[0].key: must not be empty"));
    }

    #[test]
    fn chunk_size_defaults_and_bounds() {
        assert_eq!(parse(GOOD).unwrap().fanout.chunk_size, 60000);
        let with = |value: &str| {
            GOOD.replace(
                "[[streams]]",
                &format!("[fanout]\nchunk_size = {value}\n\n[[streams]]"),
            )
        };
        assert_eq!(parse(&with("4096")).unwrap().fanout.chunk_size, 4096);
        let message = error_text(&with("100000"));
        assert!(
            message.starts_with("prism.toml:6:14: fanout.chunk_size: must be from 128 to 65536"),
            "{message}"
        );
    }

    #[test]
    fn line_column_counts_characters() {
        assert_eq!(line_column("ab\ncdé f", 8), (2, 5));
        assert_eq!(line_column("", 0), (1, 1));
    }

    #[test]
    fn hook_settings_are_read_and_a_bad_one_is_named_with_its_line() {
        let base = "[rtmp]\nlisten = \"127.0.0.1:1935\"\n\n";
        let config = parse(&format!(
            "{base}[auth]\nurl = \"https://auth.example.com/check?t=1\"\non_error = \"allow\"\n\n\
             [[webhooks]]\nurl = \"http://127.0.0.1:9000/e\"\nsecret = \"0123456789abcdef\"\nevents = [\"schedule_*\"]\n\n\
             [[streams]]\nid = \"main\"\nkey = \"live_8f2c1d\"\nauth = false\n"
        ))
        .unwrap();
        let auth = config.auth.unwrap();
        assert_eq!(auth.on_error, prism_hooks::config::OnError::Allow);
        assert_eq!(auth.timeout, Duration::from_millis(2000));
        assert_eq!(config.webhooks[0].id, "127.0.0.1:9000");
        assert_eq!(
            config.webhooks[0].events.as_deref(),
            Some(&["schedule_start".to_string(), "schedule_end".to_string()][..])
        );
        assert_eq!(config.streams[0].auth, StreamAuth::Off);

        let message = error_text(&format!(
            "{base}[auth]\nurl = \"https://a.example\"\non_error = \"maybe\"\n"
        ));
        assert!(
            message.starts_with("prism.toml:6:") && message.contains("auth.on_error"),
            "{message}"
        );
        let message = error_text(&format!("{base}[auth]\nurl = \"ftp://a.example\"\n"));
        assert!(
            message.starts_with("prism.toml:5:") && message.contains("auth.url"),
            "{message}"
        );
        let message = error_text(&format!(
            "{base}[[webhooks]]\nurl = \"http://h/\"\nevents = [\"publish_begin\"]\n"
        ));
        assert!(
            message.starts_with("prism.toml:6:") && message.contains("webhooks[0].events"),
            "{message}"
        );
        let message = error_text(&format!(
            "{base}[[webhooks]]\nurl = \"http://h/\"\nsecret = \"short\"\n"
        ));
        assert!(message.contains("webhooks[0].secret"), "{message}");
        let message = error_text(&format!(
            "{base}[[streams]]\nid = \"main\"\nkey = \"live_8f2c1d\"\nauth = \"ftp://x\"\n"
        ));
        assert!(
            message.starts_with("prism.toml:7:") && message.contains("streams[0].auth"),
            "{message}"
        );
        // A hook URL's query may hold a token: errors leave it out.
        let message = error_text(&format!(
            "{base}[auth]\nurl = \"gopher://h/?token=s3cret\"\n"
        ));
        assert!(!message.contains("s3cret"), "{message}");
    }

    const NODE: &str = "[rtmp]\nlisten = \"127.0.0.1:1935\"\n\n[cluster]\nredis = \"redis://10.0.0.5:6379\"\nnode_id = \"node-a\"\n";

    #[test]
    fn a_cluster_node_takes_its_streams_from_the_shared_document() {
        let node = parse(NODE).unwrap();
        let cluster = node.cluster.as_ref().unwrap();
        assert_eq!(cluster.node_id, "node-a");
        assert_eq!(cluster.lease, Duration::from_millis(5000));
        assert_eq!(cluster.prefix, "prism");
        assert!(node.streams.is_empty());
        let streams = &GOOD[GOOD.find("[[streams]]").unwrap()..];
        let config = Config::parse_with_streams(
            Path::new("prism.toml"),
            NODE,
            Path::new("redis:prism:streams"),
            streams,
        )
        .unwrap();
        assert_eq!(config.streams.len(), 1);
        assert_eq!(config.streams[0].destinations.len(), 2);
        // Errors in the document name it and its own lines.
        let broken = streams.replace("key = \"live_8f2c1d\"", "key = \"\"");
        let message = Config::parse_with_streams(
            Path::new("prism.toml"),
            NODE,
            Path::new("redis:prism:streams"),
            &broken,
        )
        .unwrap_err()
        .to_string();
        assert!(message.starts_with("redis:prism:streams:3:"), "{message}");
        // Node settings have no place in the shared document.
        let message = Config::parse_with_streams(
            Path::new("prism.toml"),
            NODE,
            Path::new("redis:prism:streams"),
            "[fanout]\nchunk_size = 4096\n",
        )
        .unwrap_err()
        .to_string();
        assert!(message.contains("unknown field `fanout`"), "{message}");
    }

    #[test]
    fn cluster_settings_are_checked_with_their_line() {
        // Streams in a node's file would be ignored silently: refused, with
        // what to do instead.
        let message = error_text(&format!(
            "{NODE}{}",
            &GOOD[GOOD.find("[[streams]]").unwrap()..]
        ));
        assert!(message.starts_with("prism.toml:8:"), "{message}");
        assert!(message.contains("prism import"), "{message}");
        // ...but `prism import` reads them.
        let text = format!("{NODE}{}", &GOOD[GOOD.find("[[streams]]").unwrap()..]);
        assert_eq!(
            Config::parse_for_import(Path::new("prism.toml"), &text)
                .unwrap()
                .streams
                .len(),
            1
        );
        let message = error_text(&NODE.replace("redis://10.0.0.5:6379", "10.0.0.5:6379"));
        assert!(
            message.starts_with("prism.toml:5:") && message.contains("redis://"),
            "{message}"
        );
        let message = error_text(&format!("{NODE}lease_ms = 100\n"));
        assert!(
            message.starts_with("prism.toml:7:") && message.contains("cluster.lease_ms"),
            "{message}"
        );
        let message = error_text(&NODE.replace("node-a", "node a"));
        assert!(message.contains("cluster.node_id"), "{message}");
        // The URL (it may hold a password) stays out of debug output.
        let node = parse(&NODE.replace("redis://", "redis://:hunter22@")).unwrap();
        assert!(!format!("{node:?}").contains("hunter22"));
    }

    mod no_panics {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Any text gets a config or an error with a position; never a panic.
            #[test]
            fn any_text(text in "(\\PC|\n){0,400}") {
                if let Err(e) = parse(&text) {
                    prop_assert!(e.line >= 1 && e.column >= 1);
                }
            }

            /// Mutations of a good file: an error names a line inside the file.
            #[test]
            fn mutated_good_file(at in 0usize..400, insert in "[\\[\\]=\"a-z0-9. \n]{1,8}") {
                let mut text = GOOD.to_string();
                let at = at.min(text.len());
                if text.is_char_boundary(at) {
                    text.insert_str(at, &insert);
                    if let Err(e) = parse(&text) {
                        prop_assert!(e.line <= text.lines().count() + 1, "{e}");
                    }
                }
            }
        }
    }
}
