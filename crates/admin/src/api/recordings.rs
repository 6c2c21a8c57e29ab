//! The recordings API: a stream's record switch, the list of recordings,
//! a recording's file (with byte ranges, so a browser seeks and `curl -C -`
//! resumes) and its deletion. Disk reads run off the async threads.

use std::time::SystemTime;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use prism_record::library::{Active, DeleteError, Recording};
use prism_record::RecordingId;

use super::{parse_body, query_value, success, view_of_stream, App};
use crate::command::Command;
use crate::control::off_async_threads;
use crate::download_link::LINK_LIFETIME;
use crate::error::ApiError;
use crate::range::{self, Answer};

/// A recording as the API shows it.
#[derive(Serialize)]
pub(crate) struct RecordingView {
    id: String,
    stream: String,
    /// Its file, under `[record] path`.
    file: String,
    started_at: String,
    duration_s: f64,
    bytes: u64,
    /// `fmp4` or `flv`.
    format: &'static str,
    /// Closed cleanly (a file being written, or cut short, is not).
    complete: bool,
    /// A link that fetches the file without the bearer token, for an hour
    /// (for a browser's download or player).
    download_url: String,
}

fn view(app: &App, root: &std::path::Path, recording: &Recording) -> RecordingView {
    let id = recording.id.to_string();
    let mut download_url = format!("/v1/recordings/{id}");
    if let Some(links) = &app.links {
        let expires = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            + LINK_LIFETIME.as_secs();
        download_url = format!("{download_url}?{}", links.query(&id, expires));
    }
    RecordingView {
        download_url,
        id: recording.id.to_string(),
        stream: recording.id.stream().to_string(),
        file: recording
            .path
            .strip_prefix(root)
            .unwrap_or(&recording.path)
            .display()
            .to_string(),
        started_at: humantime::format_rfc3339_seconds(recording.started_at).to_string(),
        duration_s: recording.duration_ms as f64 / 1000.0,
        bytes: recording.bytes,
        format: recording.format,
        complete: recording.complete,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RecordSwitch {
    on: bool,
}

/// `PUT /v1/streams/{id}/record`: records the stream from its next keyframe
/// (`{"on": true}`), or completes the file and stops; persisted like every
/// change.
pub(crate) async fn set_record(
    State(app): State<App>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let switch: RecordSwitch = parse_body(&body)?;
    app.controller
        .execute(Command::PatchStream {
            id: id.clone(),
            pull: None,
            reconnect_grace_s: None,
            standby_file: None,
            record: Some(switch.on),
        })
        .await?;
    Ok(Json(view_of_stream(&app, &id).await?))
}

/// `GET /v1/recordings[?stream=ID]`, oldest first.
pub(crate) async fn list(State(app): State<App>, uri: Uri) -> Result<impl IntoResponse, ApiError> {
    let stream = query_value(&uri, "stream");
    let (root, active) = app.controller.recording_context().await;
    let library = std::sync::Arc::clone(app.controller.library());
    let (root, recordings) = off_async_threads(move || {
        let recordings = library.list(&root, stream.as_deref(), &active);
        (root, recordings)
    })
    .await?;
    let views: Vec<RecordingView> = recordings.iter().map(|r| view(&app, &root, r)).collect();
    Ok(Json(views))
}

/// Whether `request` is a `GET` of one recording through a live signed link
/// (`LinkSigner`): such a request needs no bearer token.
pub(crate) fn signed_link_opens(app: &App, request: &axum::extract::Request) -> bool {
    let (Some(links), true) = (&app.links, request.method() == axum::http::Method::GET) else {
        return false;
    };
    let uri = request.uri();
    let Some(id) = uri.path().strip_prefix("/v1/recordings/") else {
        return false;
    };
    RecordingId::parse(id).is_some()
        && links.verify(id, uri.query().unwrap_or(""), SystemTime::now())
}

/// `GET /v1/recordings/{id}`: the file, whole or a range of it.
pub(crate) async fn serve(
    State(app): State<App>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let recording = find(&app, &id).await?.0;
    let len = recording.bytes;
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let (status, start, count) = match range::answer(range, len) {
        Answer::Whole => (StatusCode::OK, 0, len),
        Answer::Part { start, end } => (StatusCode::PARTIAL_CONTENT, start, end - start + 1),
        Answer::Unsatisfiable => {
            return Ok((
                StatusCode::RANGE_NOT_SATISFIABLE,
                [(header::CONTENT_RANGE, format!("bytes */{len}"))],
            )
                .into_response())
        }
    };
    let mut file = tokio::fs::File::open(&recording.path)
        .await
        .map_err(|e| ApiError::not_found(format!("recording {id:?}: {e}")))?;
    file.seek(std::io::SeekFrom::Start(start))
        .await
        .map_err(|e| ApiError::internal(format!("recording {id:?}: {e}")))?;
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(file.take(count)));
    let content_type = match recording.format {
        "flv" => "video/x-flv",
        _ => "video/mp4",
    };
    let extension = recording
        .path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("mp4");
    let mut response = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CONTENT_LENGTH, count)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(
            header::CONTENT_DISPOSITION,
            format!("inline; filename=\"{}.{extension}\"", recording.id),
        );
    if status == StatusCode::PARTIAL_CONTENT {
        response = response.header(
            header::CONTENT_RANGE,
            format!("bytes {start}-{}/{len}", start + count - 1),
        );
    }
    response
        .body(body)
        .map_err(|e| ApiError::internal(e.to_string()))
}

/// `DELETE /v1/recordings/{id}`; a file being written is refused (409).
pub(crate) async fn delete(
    State(app): State<App>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let (recording, active) = find(&app, &id).await?;
    let library = std::sync::Arc::clone(app.controller.library());
    off_async_threads(move || library.delete(&recording, &active))
        .await?
        .map_err(|e| match e {
            DeleteError::Writing => ApiError::conflict(e.to_string()),
            DeleteError::Io(e) => ApiError::internal(format!("recording {id:?}: {e}")),
        })?;
    Ok(success())
}

/// The recording `id` names, and the files being written.
async fn find(app: &App, id: &str) -> Result<(Recording, Vec<Active>), ApiError> {
    let missing = || ApiError::not_found(format!("no recording {id:?}"));
    let parsed = RecordingId::parse(id).ok_or_else(missing)?;
    let (root, active) = app.controller.recording_context().await;
    let library = std::sync::Arc::clone(app.controller.library());
    let kept = active.clone();
    let found = off_async_threads(move || library.find(&root, &parsed, &kept)).await?;
    found.map(|r| (r, active)).ok_or_else(missing)
}
