//! The admin HTTP API (axum): every route but `/healthz` needs the bearer
//! token; request bodies are parsed strictly and errors name the field.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{self, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::{Stream, StreamExt};

mod preview;
mod recordings;
mod schedule;

use crate::streams::{RunningStream, Streams};
use prism_media::arbiter::{SourceChoice, SourceRole};

use crate::command::{Command, DestinationTarget, NewDestination as NewDestinationSpec, Outcome};
use crate::config::{AdminConfig, Config, DestinationEntry, FanoutConfig, StreamConfig};
use crate::control::{ControlError, Controller, Event, FailureView};
use crate::download_link::LinkSigner;
use crate::error::ApiError;
use crate::platforms;
use crate::site_guard::SiteGuard;

/// Every route the router serves, as (method, path). The OpenAPI document
/// must list exactly these; a test holds both to the router.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/v1/openapi.json"),
    ("GET", "/v1/platforms"),
    ("GET", "/v1/events"),
    ("POST", "/v1/reload"),
    ("GET", "/v1/cluster"),
    ("GET", "/v1/streams"),
    ("POST", "/v1/streams"),
    ("GET", "/v1/streams/{id}"),
    ("PATCH", "/v1/streams/{id}"),
    ("GET", "/v1/streams/{id}/key"),
    ("DELETE", "/v1/streams/{id}"),
    ("GET", "/v1/streams/{id}/destinations"),
    ("POST", "/v1/streams/{id}/destinations"),
    ("GET", "/v1/streams/{id}/destinations/{dest}"),
    ("PATCH", "/v1/streams/{id}/destinations/{dest}"),
    ("DELETE", "/v1/streams/{id}/destinations/{dest}"),
    ("PUT", "/v1/streams/{id}/destinations/{dest}/enable"),
    ("PUT", "/v1/streams/{id}/destinations/{dest}/disable"),
    ("PUT", "/v1/streams/{id}/restreams"),
    ("PUT", "/v1/streams/{id}/standby"),
    ("PUT", "/v1/streams/{id}/source"),
    ("PUT", "/v1/streams/{id}/record"),
    ("GET", "/v1/streams/{id}/preview"),
    ("GET", "/v1/recordings"),
    ("GET", "/v1/recordings/{id}"),
    ("DELETE", "/v1/recordings/{id}"),
    ("GET", "/v1/schedule"),
    ("POST", "/v1/schedule"),
    ("GET", "/v1/schedule/{id}"),
    ("PATCH", "/v1/schedule/{id}"),
    ("DELETE", "/v1/schedule/{id}"),
];

/// The OpenAPI 3 document, kept beside the code.
pub const OPENAPI: &str = include_str!("../openapi.json");

#[derive(Clone)]
struct App {
    controller: Arc<Controller>,
    token: Option<Arc<str>>,
    /// Signs and checks recording download links (with a token only).
    links: Option<Arc<LinkSigner>>,
    site: Arc<SiteGuard>,
    /// One permit per open `/v1/events` stream.
    event_streams: Arc<Semaphore>,
    max_event_streams: usize,
    /// One permit per live preview being watched.
    preview_viewers: Arc<Semaphore>,
    max_preview_viewers: usize,
}

/// The router of the admin listener `admin`: its token is `None` only for a
/// loopback listener the operator marked `insecure_no_auth`; at most
/// `max_event_streams` clients follow `/v1/events` at once; every request,
/// the console's and `/healthz` too, passes the [`SiteGuard`] first.
pub fn router(controller: Arc<Controller>, admin: &AdminConfig) -> Router {
    let app = App {
        controller,
        token: admin.token.as_deref().map(Arc::from),
        links: admin.token.as_deref().map(|t| Arc::new(LinkSigner::new(t))),
        site: Arc::new(SiteGuard::new(admin.listen, &admin.allowed_hosts)),
        event_streams: Arc::new(Semaphore::new(admin.max_event_streams)),
        max_event_streams: admin.max_event_streams,
        preview_viewers: Arc::new(Semaphore::new(admin.max_preview_viewers)),
        max_preview_viewers: admin.max_preview_viewers,
    };
    Router::new()
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/platforms", get(list_platforms))
        .route("/v1/events", get(events))
        .route("/v1/reload", post(reload))
        .route("/v1/cluster", get(cluster_status))
        .route("/v1/streams", get(list_streams).post(add_stream))
        .route(
            "/v1/streams/{id}",
            get(get_stream).patch(patch_stream).delete(remove_stream),
        )
        .route(
            "/v1/streams/{id}/destinations",
            get(list_destinations).post(add_destination),
        )
        .route(
            "/v1/streams/{id}/destinations/{dest}",
            get(get_destination)
                .patch(patch_destination)
                .delete(remove_destination),
        )
        .route(
            "/v1/streams/{id}/destinations/{dest}/enable",
            put(enable_destination),
        )
        .route(
            "/v1/streams/{id}/destinations/{dest}/disable",
            put(disable_destination),
        )
        .route("/v1/streams/{id}/key", get(stream_key))
        .route("/v1/streams/{id}/restreams", put(replace_restreams))
        .route("/v1/streams/{id}/standby", put(set_standby))
        .route("/v1/streams/{id}/source", put(set_source))
        .route("/v1/streams/{id}/record", put(recordings::set_record))
        .route("/v1/streams/{id}/preview", get(preview::preview))
        .route("/v1/schedule", get(schedule::list).post(schedule::book))
        .route(
            "/v1/schedule/{id}",
            get(schedule::get)
                .patch(schedule::change)
                .delete(schedule::cancel),
        )
        .route("/v1/recordings", get(recordings::list))
        .route(
            "/v1/recordings/{id}",
            get(recordings::serve).delete(recordings::delete),
        )
        .layer(middleware::from_fn_with_state(app.clone(), authenticate))
        .route("/healthz", get(|| async { "ok\n" }))
        .merge(crate::console::routes())
        .layer(middleware::from_fn_with_state(
            app.clone(),
            refuse_other_sites,
        ))
        .with_state(app)
}

async fn refuse_other_sites(State(app): State<App>, request: Request, next: Next) -> Response {
    match app.site.check(request.method(), request.headers()) {
        Ok(()) => next.run(request).await,
        Err(refusal) => refusal.into_response(),
    }
}

async fn authenticate(State(app): State<App>, request: Request, next: Next) -> Response {
    if let Some(token) = &app.token {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_token)
            .unwrap_or("");
        // Constant time, so response timing does not reveal how much of a
        // guessed token was right.
        if !bool::from(given.as_bytes().ct_eq(token.as_bytes()))
            && !recordings::signed_link_opens(&app, &request)
        {
            return ApiError::unauthorized().into_response();
        }
    }
    next.run(request).await
}

/// The token of an `Authorization: Bearer TOKEN` header. The scheme is
/// case-insensitive (RFC 9110 §11.1), so `bearer` and `BEARER` work too.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_start())
}

/// Parses a JSON body strictly; the error names the offending field.
/// The control plane's errors as HTTP answers: the one place they meet.
impl From<ControlError> for ApiError {
    fn from(error: ControlError) -> Self {
        match error {
            ControlError::Invalid(message) => ApiError::invalid(message),
            // A caller sends one stream or destination, and knows its
            // fields by their JSON names, not by their place in the file.
            ControlError::InvalidConfig(error) => ApiError::invalid(match error.field_name() {
                Some(field) => format!("{field}: {}", error.message),
                None => error.message,
            }),
            ControlError::NotFound(message) => ApiError::not_found(message),
            ControlError::Conflict(message) => ApiError::conflict(message),
            ControlError::StoreUnavailable(message) => ApiError::unavailable(message),
            ControlError::Internal(message) => ApiError::internal(message),
        }
    }
}

/// One `name=value` of the query, percent-decoding not needed for ids.
fn query_value(uri: &axum::http::Uri, name: &str) -> Option<String> {
    uri.query()?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_string())
}

fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            ApiError::bad_request(format!("malformed JSON: {inner}"))
        } else if path == "." {
            ApiError::bad_request(inner.to_string())
        } else {
            ApiError::bad_request(format!("{path}: {inner}"))
        }
    })
}

// ---- views ----------------------------------------------------------------

#[derive(Serialize)]
struct StreamView {
    id: String,
    live: bool,
    /// The standby clip is playing to the destinations.
    standby: bool,
    /// Why: `auto` (the encoder is gone or silent) or `manual`.
    standby_reason: Option<&'static str>,
    /// What an operator should know, e.g. that the standby clip's codec
    /// parameters differ from the encoder's.
    warnings: Vec<String>,
    /// The source the stream is pulled from (its key hidden), if it is.
    pull: Option<String>,
    /// The publisher on air (the active source), if any.
    ingest: Option<IngestView>,
    /// What the destinations get: `primary`, `backup`, `standby` (the
    /// clip), or null (no source, e.g. in the grace period).
    active_source: Option<&'static str>,
    /// `auto`, or the source an operator forced (`PUT .../source`).
    source_choice: &'static str,
    /// The connected encoders, primary first.
    sources: Vec<SourceView>,
    /// Cluster mode: the node the stream is live on (holds its lease),
    /// whichever node answers; absent when it is live nowhere, or when
    /// Redis cannot be asked (then `live` still tells about this node).
    #[serde(skip_serializing_if = "Option::is_none")]
    live_on: Option<String>,
    /// The timestamp (ms, on the session's timeline) of the newest message
    /// that went out: a live preview's position is compared with it.
    newest_timestamp_ms: u64,
    /// The stream is recorded (`record`).
    record: bool,
    /// Its recorder, while it is recorded.
    recording: Option<RecorderView>,
    /// What the live session carries, track by track (video first); a
    /// multitrack publish (enhanced RTMP v2) has more than one of a kind.
    tracks: Vec<TrackView>,
    destinations: Vec<DestinationView>,
}

/// One track of the live session. Rates are measured over the last second
/// of media; what is not known yet is null.
#[derive(Serialize)]
struct TrackView {
    kind: &'static str,
    /// 0 is the default track: the one `tracks = "default"` destinations,
    /// SRT destinations, recordings and the preview get.
    id: u8,
    codec: Option<&'static str>,
    width: Option<u32>,
    height: Option<u32>,
    fps: Option<f64>,
    bitrate_kbps: u64,
    /// Video: the longest recent interval between keyframes.
    keyframe_interval_ms: Option<u64>,
    sample_rate: Option<u32>,
    channels: Option<u8>,
}

impl From<prism_media::profile::TrackInfo> for TrackView {
    fn from(track: prism_media::profile::TrackInfo) -> Self {
        TrackView {
            kind: match track.kind {
                prism_media::MediaKind::Video => "video",
                _ => "audio",
            },
            id: track.id,
            codec: track.codec,
            width: track.width,
            height: track.height,
            fps: track.fps,
            bitrate_kbps: track.bitrate_bps / 1000,
            keyframe_interval_ms: track.keyframe_interval_ms,
            sample_rate: track.sample_rate,
            channels: track.channels,
        }
    }
}

#[derive(Serialize)]
struct RecorderView {
    /// `waiting` (for the stream, or its first keyframe), `recording`, or
    /// `failed` (the last write failed; it tries again by itself).
    state: &'static str,
    /// The file being written.
    current: Option<CurrentRecordingView>,
    last_error: Option<FailureView>,
    /// Frames left out of the recording (a disk too slow, a failed write).
    dropped_frames: u64,
}

#[derive(Serialize)]
struct CurrentRecordingView {
    id: String,
    duration_s: f64,
    bytes: u64,
}

fn recorder_view(recorder: &prism_record::RecorderHandle) -> RecorderView {
    let status = &recorder.status;
    RecorderView {
        state: status.state().as_str(),
        current: status.current().map(|file| CurrentRecordingView {
            id: file.id.to_string(),
            duration_s: file.duration_ms() as f64 / 1000.0,
            bytes: file.bytes,
        }),
        last_error: status.last_error().map(|e| FailureView {
            kind: e.kind.as_str(),
            message: e.to_string(),
        }),
        dropped_frames: recorder.dropped_frames(),
    }
}

#[derive(Serialize)]
struct SourceView {
    role: &'static str,
    protocol: &'static str,
    remote: String,
    /// Connected and sending media.
    live: bool,
    /// Its media is what the destinations get.
    on_air: bool,
    bitrate_kbps: u64,
    width: Option<u32>,
    height: Option<u32>,
    fps: Option<f64>,
    since: String,
}

#[derive(Serialize)]
struct IngestView {
    protocol: &'static str,
    remote: String,
    since: String,
    bitrate_kbps: u64,
    video_codec: Option<&'static str>,
    audio_codec: Option<&'static str>,
    width: Option<u32>,
    height: Option<u32>,
    fps: Option<f64>,
}

#[derive(Serialize)]
struct DestinationView {
    id: String,
    platform: Option<String>,
    /// The server URL, without the key.
    url: String,
    key_hint: String,
    enabled: bool,
    state: &'static str,
    last_error: Option<FailureView>,
    bytes_sent: u64,
    dropped_frames: u64,
    reconnects: u64,
    /// Bytes the server acknowledged.
    acked_bytes: u64,
    /// How long ago it last acknowledged; null if it never did.
    last_ack_age_ms: Option<u64>,
    /// The server acknowledges on this connection: proof it processes what
    /// it receives. A server that never acknowledges stays unverified.
    verified: bool,
    /// When the current session went live; null when it is not live.
    live_since: Option<String>,
    /// The latency budget within which its messages are sent together (its
    /// own `max_delay_ms`, or `[fanout]`'s); 0 for SRT destinations.
    max_delay_ms: u64,
    /// Which tracks of a multitrack stream it gets: "default" or "all".
    tracks: &'static str,
    /// How far behind the stream it goes out (`delay_s`); 0 is live.
    delay_s: u64,
    /// The rules of its platform the stream breaks now (`code`: `codec`,
    /// `bitrate`, `resolution`, `frame_rate`, `keyframe_interval`,
    /// `no_audio`, `audio_codec`, `sample_rate`, `rtmps`, `delay_buffer`).
    warnings: Vec<prism_fanout::rules::Warning>,
}

fn destination_view(
    entry: Option<&RunningStream>,
    destination: &DestinationEntry,
    fanout: &FanoutConfig,
) -> DestinationView {
    use std::sync::atomic::Ordering;
    let handle = entry.and_then(|e| e.parts.destinations.get(&destination.id));
    let status = handle.as_ref().map(|h| &h.status);
    DestinationView {
        id: destination.id.clone(),
        platform: destination.platform.clone(),
        url: destination.url.tc_url.clone(),
        key_hint: destination.url.stream_name.hint(),
        enabled: destination.enabled,
        state: status.map_or("idle", |s| s.state().as_str()),
        last_error: status.and_then(|s| s.last_error()).map(FailureView::from),
        bytes_sent: status.map_or(0, |s| s.bytes_sent.load(Ordering::Relaxed)),
        dropped_frames: status.map_or(0, |s| s.dropped_frames()),
        reconnects: status.map_or(0, |s| s.reconnects.load(Ordering::Relaxed)),
        acked_bytes: status.map_or(0, |s| s.acked_bytes.load(Ordering::Relaxed)),
        last_ack_age_ms: status
            .and_then(|s| s.last_ack_age())
            .map(|age| age.as_millis() as u64),
        verified: status.is_some_and(|s| s.verified()),
        live_since: status
            .and_then(|s| s.live_since())
            .map(|t| humantime::format_rfc3339_seconds(t).to_string()),
        max_delay_ms: destination.effective_max_delay(fanout).as_millis() as u64,
        tracks: destination.tracks.as_str(),
        delay_s: destination.delay.as_secs(),
        warnings: status.map(|s| s.warnings()).unwrap_or_default(),
    }
}

fn source_view(source: &prism_media::hub::SourceInfo) -> SourceView {
    let media = source.publisher.media.clone().unwrap_or_default();
    SourceView {
        role: source.role.as_str(),
        protocol: source.publisher.protocol.as_str(),
        remote: source.publisher.remote.to_string(),
        live: source.healthy,
        on_air: source.on_air,
        bitrate_kbps: source.bitrate_bps / 1000,
        width: media.width,
        height: media.height,
        fps: media.fps,
        since: humantime::format_rfc3339_seconds(source.publisher.since).to_string(),
    }
}

fn stream_view(streams: &Streams, stream: &StreamConfig, fanout: &FanoutConfig) -> StreamView {
    use std::sync::atomic::Ordering;
    let entry = streams.get(&stream.id);
    let ingest = entry.as_ref().and_then(|e| {
        let publisher = e.hub.publisher()?;
        let media = publisher.media.unwrap_or_default();
        Some(IngestView {
            protocol: publisher.protocol.as_str(),
            remote: publisher.remote.to_string(),
            since: humantime::format_rfc3339_seconds(publisher.since).to_string(),
            bitrate_kbps: e.hub.stats().bitrate_bps.load(Ordering::Relaxed) / 1000,
            video_codec: media.video_codec,
            audio_codec: media.audio_codec,
            width: media.width,
            height: media.height,
            fps: media.fps,
        })
    });
    StreamView {
        id: stream.id.clone(),
        // Live includes the grace period after an encoder drops: the
        // destinations are still connected, and `ingest` is null until a
        // publisher resumes.
        live: entry.as_ref().is_some_and(|e| e.hub.is_live()),
        standby: entry.as_ref().is_some_and(|e| e.hub.standby().is_some()),
        standby_reason: entry
            .as_ref()
            .and_then(|e| e.hub.standby())
            .map(|r| r.as_str()),
        warnings: entry.as_ref().map(|e| e.hub.warnings()).unwrap_or_default(),
        pull: stream.pull.as_ref().map(|url| url.to_string()),
        ingest,
        active_source: entry.as_ref().and_then(|e| {
            if e.hub.standby().is_some() {
                Some("standby")
            } else {
                e.hub.active_source().map(SourceRole::as_str)
            }
        }),
        source_choice: match entry.as_ref().map(|e| e.hub.source_choice()) {
            Some(SourceChoice::Forced(role)) => role.as_str(),
            _ => "auto",
        },
        sources: entry
            .as_ref()
            .map(|e| e.hub.sources().iter().map(source_view).collect())
            .unwrap_or_default(),
        live_on: None,
        newest_timestamp_ms: entry.as_ref().map_or(0, |e| {
            e.hub.stats().newest_timestamp_ms.load(Ordering::Relaxed)
        }),
        record: stream.record,
        recording: entry
            .as_ref()
            .and_then(|e| e.parts.recorder())
            .map(|r| recorder_view(&r)),
        tracks: entry
            .as_ref()
            .map(|e| e.hub.tracks().into_iter().map(TrackView::from).collect())
            .unwrap_or_default(),
        destinations: stream
            .destinations
            .iter()
            .map(|d| destination_view(entry.as_deref(), d, fanout))
            .collect(),
    }
}

/// The stream `id` as it runs (its hub and destinations).
fn running_stream(app: &App, id: &str) -> Result<Arc<RunningStream>, ApiError> {
    app.controller
        .streams()
        .get(id)
        .ok_or_else(|| ApiError::not_found(format!("no stream {id:?}")))
}

fn find_stream<'a>(config: &'a Config, id: &str) -> Result<&'a StreamConfig, ApiError> {
    config
        .streams
        .iter()
        .find(|s| s.id == id)
        .ok_or_else(|| ApiError::not_found(format!("no stream {id:?}")))
}

async fn view_of_stream(app: &App, id: &str) -> Result<StreamView, ApiError> {
    let streams = Arc::clone(app.controller.streams());
    let mut view = app
        .controller
        .with_config(|config| {
            find_stream(config, id).map(|s| stream_view(&streams, s, &config.fanout))
        })
        .await?;
    add_live_nodes(app, std::slice::from_mut(&mut view)).await;
    Ok(view)
}

/// Cluster mode: which node each stream is live on, read from the leases.
async fn add_live_nodes(app: &App, views: &mut [StreamView]) {
    let Some(cluster) = app.controller.cluster() else {
        return;
    };
    let ids: Vec<String> = views.iter().map(|v| v.id.clone()).collect();
    if let Ok(nodes) = cluster.live_nodes(&ids).await {
        for (view, node) in views.iter_mut().zip(nodes) {
            view.live_on = node;
        }
    }
}

#[derive(Serialize)]
struct ClusterView {
    /// False on a node on its own (no `[cluster]`).
    enabled: bool,
    node_id: Option<String>,
    redis_up: bool,
    /// Why Redis is unreachable, while it is.
    redis_error: Option<String>,
    /// The version of the shared configuration this node runs.
    version: u64,
    /// Streams live on this node.
    leases_held: usize,
}

async fn cluster_status(State(app): State<App>) -> Json<ClusterView> {
    let view = match app.controller.cluster() {
        None => ClusterView {
            enabled: false,
            node_id: None,
            redis_up: false,
            redis_error: None,
            version: 0,
            leases_held: 0,
        },
        Some(cluster) => ClusterView {
            enabled: true,
            node_id: Some(cluster.node_id().to_string()),
            redis_up: cluster.health().is_up(),
            redis_error: cluster.health().last_error(),
            version: cluster.applied_version(),
            leases_held: cluster.gate().held_streams(),
        },
    };
    Json(view)
}

async fn view_of_destination(app: &App, id: &str, dest: &str) -> Result<DestinationView, ApiError> {
    view_of_stream(app, id)
        .await?
        .destinations
        .into_iter()
        .find(|d| d.id == dest)
        .ok_or_else(|| ApiError::not_found(format!("no destination {dest:?} in stream {id:?}")))
}

fn success() -> Json<serde_json::Value> {
    Json(json!({ "success": true }))
}

// ---- handlers -------------------------------------------------------------

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

async fn list_platforms() -> impl IntoResponse {
    Json(platforms::all())
}

/// The current state, then every change as it happens. A client that falls
/// a whole event buffer behind is dropped rather than silently skipped, so
/// it reconnects and starts from the current state again; one that takes no
/// bytes at all is cut by the listener's write-stall timeout.
async fn events(
    State(app): State<App>,
) -> Result<Sse<impl Stream<Item = Result<sse::Event, Infallible>>>, ApiError> {
    let permit = Arc::clone(&app.event_streams)
        .try_acquire_owned()
        .map_err(|_| {
            metrics::counter!(
                "prism_http_connections_refused_total",
                "listener" => "admin",
                "reason" => "max_event_streams"
            )
            .increment(1);
            ApiError::unavailable(format!(
                "too many event streams open (admin.max_event_streams = {})",
                app.max_event_streams
            ))
        })?;
    // Subscribe before reading the present, so nothing falls between.
    let live = BroadcastStream::new(app.controller.subscribe()).map_while(Result::ok);
    let current = tokio_stream::iter(app.controller.current_state_events());
    let stream = current.chain(live).map(move |event: Event| {
        let _held_while_streaming = &permit;
        let kind = event.kind();
        Ok(sse::Event::default()
            .event(kind)
            .json_data(&event)
            .unwrap_or_else(|_| sse::Event::default().event(kind)))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

async fn reload(State(app): State<App>) -> Result<impl IntoResponse, ApiError> {
    app.controller.reload().await?;
    Ok(success())
}

async fn list_streams(State(app): State<App>) -> impl IntoResponse {
    let streams = Arc::clone(app.controller.streams());
    let mut views: Vec<StreamView> = app
        .controller
        .with_config(|config| {
            config
                .streams
                .iter()
                .map(|s| stream_view(&streams, s, &config.fanout))
                .collect()
        })
        .await;
    add_live_nodes(&app, &mut views).await;
    Json(views)
}

async fn get_stream(
    State(app): State<App>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(view_of_stream(&app, &id).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewStream {
    id: Option<String>,
    key: Option<String>,
    pull: Option<String>,
}

async fn add_stream(State(app): State<App>, body: Bytes) -> Result<impl IntoResponse, ApiError> {
    let request: NewStream = parse_body(&body)?;
    let outcome = app
        .controller
        .execute(Command::AddStream {
            id: request.id,
            key: request.key,
            pull: request.pull,
        })
        .await?;
    let Outcome::StreamAdded { id, key } = outcome else {
        return Err(ApiError::internal("adding a stream made no stream"));
    };
    let mut view = serde_json::to_value(view_of_stream(&app, &id).await?).unwrap_or_default();
    // The only time the key is ever returned: the caller must keep it.
    if !key.is_empty() {
        view["key"] = json!(key);
    }
    Ok((StatusCode::CREATED, Json(view)))
}

async fn remove_stream(
    State(app): State<App>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    app.controller.execute(Command::RemoveStream { id }).await?;
    Ok(success())
}

async fn list_destinations(
    State(app): State<App>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(view_of_stream(&app, &id).await?.destinations))
}

async fn get_destination(
    State(app): State<App>,
    Path((id, dest)): Path<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(view_of_destination(&app, &id, &dest).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewDestination {
    id: Option<String>,
    platform: Option<String>,
    url: Option<String>,
    /// Required but for SRT URLs, whose stream id may carry it instead.
    key: Option<String>,
    enabled: Option<bool>,
    /// Overrides `[fanout] max_delay_ms` (validated by the config parser).
    max_delay_ms: Option<u64>,
    /// "default" or "all" (validated by the config parser).
    tracks: Option<String>,
    /// 0 to 600 (validated by the config parser).
    delay_s: Option<u64>,
}

async fn add_destination(
    State(app): State<App>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let request: NewDestination = parse_body(&body)?;
    if request.key.as_deref().is_some_and(|k| k.trim().is_empty()) {
        return Err(ApiError::invalid("key: must not be empty"));
    }
    if let Some(platform) = &request.platform {
        if platforms::find(platform).is_none() {
            return Err(ApiError::invalid(format!(
                "platform: unknown platform {platform:?} (see GET /v1/platforms)"
            )));
        }
    }
    let outcome = app
        .controller
        .execute(Command::AddDestination {
            stream: id.clone(),
            destination: NewDestinationSpec {
                id: request.id,
                platform: request.platform,
                url: request.url,
                key: request.key,
                enabled: request.enabled,
                max_delay_ms: request.max_delay_ms,
                tracks: request.tracks,
                delay_s: request.delay_s,
            },
        })
        .await?;
    let Outcome::DestinationAdded { id: dest } = outcome else {
        return Err(ApiError::internal(
            "adding a destination made no destination",
        ));
    };
    Ok((
        StatusCode::CREATED,
        Json(view_of_destination(&app, &id, &dest).await?),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DestinationPatch {
    url: Option<String>,
    key: Option<String>,
    enabled: Option<bool>,
    /// A number sets the destination's own budget; null returns it to
    /// `[fanout] max_delay_ms`.
    #[serde(default, deserialize_with = "present")]
    max_delay_ms: Option<Option<u64>>,
    tracks: Option<String>,
    /// Seconds behind the stream; 0 makes it live (it reconnects).
    delay_s: Option<u64>,
}

async fn patch_destination(
    State(app): State<App>,
    Path((id, dest)): Path<(String, String)>,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let patch: DestinationPatch = parse_body(&body)?;
    if patch.key.as_deref().is_some_and(|k| k.trim().is_empty()) {
        return Err(ApiError::invalid("key: must not be empty"));
    }
    app.controller
        .execute(Command::PatchDestination {
            stream: id.clone(),
            id: dest.clone(),
            url: patch.url,
            key: patch.key,
            enabled: patch.enabled,
            max_delay_ms: patch.max_delay_ms,
            tracks: patch.tracks,
            delay_s: patch.delay_s,
        })
        .await?;
    Ok(Json(view_of_destination(&app, &id, &dest).await?))
}

/// What an encoder needs to publish to a stream: asked for explicitly,
/// since it holds the key.
#[derive(Serialize)]
struct EncoderSettings {
    key: String,
    /// The OBS "Server" field.
    rtmp_url: String,
    /// For SRT encoders, when SRT ingest is on.
    srt_url: Option<String>,
}

async fn stream_key(
    State(app): State<App>,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    // The host the operator reached this API by is the best guess at the
    // one encoders reach ingest by, when ingest listens on every address.
    let requested_host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(|h| match h.rsplit_once(':') {
            Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host.to_string(),
            _ => h.to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    let host_for = |listen: std::net::SocketAddr| {
        if listen.ip().is_unspecified() {
            requested_host.clone()
        } else if listen.is_ipv6() {
            format!("[{}]", listen.ip())
        } else {
            listen.ip().to_string()
        }
    };
    let settings = app
        .controller
        .with_config(|config| {
            let stream = find_stream(config, &id)?;
            if stream.pull.is_some() {
                return Err(ApiError::conflict(
                    "this stream pulls from its source and takes no publisher",
                ));
            }
            let key = stream.key.expose().to_string();
            let rtmp = config.rtmp.listen;
            Ok(EncoderSettings {
                rtmp_url: format!("rtmp://{}:{}/live", host_for(rtmp), rtmp.port()),
                srt_url: config.srt.as_ref().map(|srt| {
                    format!(
                        "srt://{}:{}?streamid={key}",
                        host_for(srt.listen),
                        srt.listen.port()
                    )
                }),
                key,
            })
        })
        .await?;
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(settings)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamPatch {
    /// A source URL, or `null` to take publishers again.
    #[serde(default, deserialize_with = "present")]
    pull: Option<Option<String>>,
    reconnect_grace_s: Option<u64>,
    /// An MP4 clip (a path on the server, relative to the config file), or
    /// `null` for none.
    #[serde(default, deserialize_with = "present")]
    standby_file: Option<Option<String>>,
    /// Records the stream (as `PUT .../record`).
    record: Option<bool>,
}

/// A field that is present, `null` included (`Some(None)`), as opposed to
/// absent (`None`).
fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

async fn patch_stream(
    State(app): State<App>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let patch: StreamPatch = parse_body(&body)?;
    app.controller
        .execute(Command::PatchStream {
            id: id.clone(),
            pull: patch.pull,
            reconnect_grace_s: patch.reconnect_grace_s,
            standby_file: patch.standby_file,
            record: patch.record,
        })
        .await?;
    Ok(Json(view_of_stream(&app, &id).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StandbyRequest {
    on: bool,
}

/// Puts a live stream on standby (`{"on": true}`) or takes it off.
async fn set_standby(
    State(app): State<App>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let request: StandbyRequest = parse_body(&body)?;
    let entry = running_stream(&app, &id)?;
    entry
        .hub
        .set_manual_standby(request.on)
        .map_err(|e| match e {
            prism_media::hub::StandbyRequestError::NoClip => ApiError::conflict(format!(
                "stream {id:?} has no standby_file: set one in the config to use standby"
            )),
            prism_media::hub::StandbyRequestError::NotLive => {
                ApiError::conflict(format!("stream {id:?} is not live"))
            }
        })?;
    Ok(Json(view_of_stream(&app, &id).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceRequest {
    source: SourceName,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum SourceName {
    Primary,
    Backup,
    Auto,
}

/// Forces a source on air (at its next keyframe, while it is healthy), or
/// returns to automatic failover and failback.
async fn set_source(
    State(app): State<App>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let request: SourceRequest = parse_body(&body)?;
    let entry = running_stream(&app, &id)?;
    entry.hub.force_source(match request.source {
        SourceName::Primary => SourceChoice::Forced(SourceRole::Primary),
        SourceName::Backup => SourceChoice::Forced(SourceRole::Backup),
        SourceName::Auto => SourceChoice::Auto,
    });
    Ok(Json(view_of_stream(&app, &id).await?))
}

async fn enable_destination(
    State(app): State<App>,
    Path((id, dest)): Path<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    set_enabled(&app, id, dest, true).await?;
    Ok(success())
}

async fn disable_destination(
    State(app): State<App>,
    Path((id, dest)): Path<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    set_enabled(&app, id, dest, false).await?;
    Ok(success())
}

async fn remove_destination(
    State(app): State<App>,
    Path((id, dest)): Path<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    app.controller
        .execute(Command::RemoveDestination {
            stream: id,
            id: dest,
        })
        .await?;
    Ok(success())
}

/// api.video's shape: the whole set of restreams for a stream.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Restream {
    name: String,
    #[serde(rename = "serverUrl")]
    server_url: String,
    #[serde(rename = "streamKey")]
    stream_key: String,
}

async fn replace_restreams(
    State(app): State<App>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let restreams: Vec<Restream> = parse_body(&body)?;
    let mut wanted: Vec<(String, &Restream)> = Vec::with_capacity(restreams.len());
    for (i, restream) in restreams.iter().enumerate() {
        let dest = slug(&restream.name);
        if dest.is_empty() {
            return Err(ApiError::invalid(format!(
                "[{i}].name: needs at least one letter or digit"
            )));
        }
        if wanted.iter().any(|(d, _)| *d == dest) {
            return Err(ApiError::invalid(format!(
                "[{i}].name: two restreams are both named {dest:?}"
            )));
        }
        wanted.push((dest, restream));
    }
    let destinations = wanted
        .into_iter()
        .map(|(dest, restream)| DestinationTarget {
            id: dest,
            url: restream.server_url.clone(),
            key: restream.stream_key.clone(),
        })
        .collect();
    app.controller
        .execute(Command::ReplaceDestinations {
            stream: id.clone(),
            destinations,
        })
        .await?;
    Ok(Json(view_of_stream(&app, &id).await?.destinations))
}

// ---- helpers --------------------------------------------------------------

async fn set_enabled(app: &App, stream: String, id: String, enabled: bool) -> Result<(), ApiError> {
    app.controller
        .execute(Command::PatchDestination {
            stream,
            id,
            url: None,
            key: None,
            enabled: Some(enabled),
            max_delay_ms: None,
            tracks: None,
            delay_s: None,
        })
        .await?;
    Ok(())
}

/// A destination id from a display name: `"YouTube (main)"` → `"youtube-main"`.
fn slug(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    out.trim_end_matches('-').chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        use super::bearer_token;
        for header in ["Bearer abc", "bearer abc", "BEARER  abc", " Bearer abc "] {
            assert_eq!(bearer_token(header), Some("abc"), "{header:?}");
        }
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearerabc"), None);
    }

    use super::*;

    #[test]
    fn slugs() {
        assert_eq!(slug("YouTube (main)"), "youtube-main");
        assert_eq!(slug("  Twitch!! "), "twitch");
        assert_eq!(slug("***"), "");
    }

    /// A config error reaches an API caller under the field's JSON name,
    /// not its place in the file.
    #[test]
    fn a_config_error_names_the_field_as_the_caller_knows_it() {
        let text = "[rtmp]\nlisten = \"127.0.0.1:1935\"\n\n[[streams]]\nid = \"main\"\n\
                    key = \"live_1234\"\n\n[[streams.destinations]]\nid = \"d\"\n\
                    url = \"rtmp://host/app\"\n";
        let parsed = crate::Config::parse_in(
            std::path::Path::new("prism.toml"),
            text,
            &crate::outside::Hermetic,
        );
        let Err(error) = parsed else {
            panic!("a destination without a key is refused");
        };
        assert_eq!(
            error.field.as_deref(),
            Some("streams[0].destinations[0].url")
        );
        let answer = ApiError::from(ControlError::InvalidConfig(error));
        assert!(
            answer.message.starts_with("url: no stream key"),
            "{}",
            answer.message
        );
    }

    /// (No `unwrap_err`: that needs `Debug`, which a type holding a key must not have.)
    fn body_error(json: &[u8]) -> ApiError {
        match parse_body::<NewDestination>(json) {
            Err(e) => e,
            Ok(_) => panic!("{} parsed", String::from_utf8_lossy(json)),
        }
    }

    #[test]
    fn body_errors_name_the_field() {
        let e = body_error(br#"{"key": "k", "urll": "x"}"#);
        assert!(e.message.contains("unknown field `urll`"), "{}", e.message);
        let e = body_error(br#"{"url": 5}"#);
        assert!(e.message.starts_with("url: invalid type"), "{}", e.message);
        let e = body_error(br#"{"key": "k", "enabled": "yes"}"#);
        assert!(
            e.message.starts_with("enabled: invalid type"),
            "{}",
            e.message
        );
        let e = body_error(br#"{"key": "#);
        assert!(e.message.starts_with("malformed JSON"), "{}", e.message);
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
    }
}
