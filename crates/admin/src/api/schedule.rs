//! The schedule API (Restream's events, Livepush's scheduler): book a
//! stream's destinations for a window of time, list the entries (upcoming,
//! in progress, history), change an upcoming one, cancel one.

use std::time::SystemTime;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::IntoResponse;
use axum::Json;
use serde::{Deserialize, Serialize};

use prism_record::playback;
use prism_schedule::entry::rfc3339;
use prism_schedule::{Booking, Change, Entry, FileSource, Outcome, ScheduleError, Status};

use super::{parse_body, present, query_value, App};
use crate::command::generate_key;
use crate::control::off_async_threads;
use crate::error::ApiError;
use crate::scheduler::{self, UpdateError};

/// An entry as the API shows it.
#[derive(Serialize)]
struct EntryView {
    id: String,
    stream: String,
    title: String,
    starts_at: String,
    ends_at: String,
    /// Null: all of the stream's destinations.
    destinations: Option<Vec<String>>,
    /// The files played instead of an encoder, if any.
    source: Option<SourceView>,
    status: &'static str,
    failure: Option<String>,
    started_at: Option<String>,
    ended_at: Option<String>,
    /// What each destination sent during the entry (once it ended).
    outcome: Vec<Outcome>,
    /// It has an event key of its own.
    has_key: bool,
    /// The event key: in the answer that booked it, and never again.
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
}

#[derive(Serialize)]
struct SourceView {
    files: Vec<String>,
    #[serde(rename = "loop")]
    repeat: bool,
}

fn time(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

fn view(entry: &Entry) -> EntryView {
    EntryView {
        id: entry.id.clone(),
        stream: entry.stream.clone(),
        title: entry.title.clone(),
        starts_at: time(entry.starts_at),
        ends_at: time(entry.ends_at),
        destinations: entry.destinations.clone(),
        source: entry.source.as_ref().map(|s| SourceView {
            files: s.files.clone(),
            repeat: s.repeat,
        }),
        status: entry.status.as_str(),
        failure: entry.failure.clone(),
        started_at: entry.started_at.map(time),
        ended_at: entry.ended_at.map(time),
        outcome: entry.outcome.clone(),
        has_key: entry.key.is_some(),
        key: None,
    }
}

impl From<UpdateError<ScheduleError>> for ApiError {
    fn from(error: UpdateError<ScheduleError>) -> Self {
        match error {
            UpdateError::Refused(error) => error.into(),
            UpdateError::Unavailable(_) | UpdateError::Busy => {
                ApiError::unavailable(error.to_string())
            }
            UpdateError::Unreadable(_) => ApiError::internal(error.to_string()),
        }
    }
}

impl From<ScheduleError> for ApiError {
    fn from(error: ScheduleError) -> Self {
        match error {
            ScheduleError::NotFound(_) => ApiError::not_found(error.to_string()),
            ScheduleError::Overlap { .. } | ScheduleError::NotUpcoming { .. } => {
                ApiError::conflict(error.to_string())
            }
            ScheduleError::EndsBeforeStart | ScheduleError::EndsInThePast => {
                ApiError::invalid(format!("ends_at: {error}"))
            }
        }
    }
}

fn parse_time(field: &str, text: &str) -> Result<SystemTime, ApiError> {
    rfc3339::parse(text).map_err(|e| ApiError::invalid(format!("{field}: {e}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewEntry {
    stream: String,
    title: Option<String>,
    starts_at: String,
    ends_at: String,
    /// The stream's destinations it takes live; all of them when left out.
    destinations: Option<Vec<String>>,
    /// Files played into the stream instead of an encoder.
    source: Option<SourceRequest>,
    /// `true` gives the entry a stream key of its own, which publishes to
    /// the stream from 15 minutes before it starts to its end.
    key: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SourceRequest {
    /// One file, or a playlist.
    file: OneOrMany,
    /// Played again from the first file when the last ends.
    #[serde(default, rename = "loop")]
    repeat: bool,
}

#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// Checks that each file of a show can be played (readable FLV with audio
/// or video), off the async threads: a long file's tags are read.
async fn check_source(app: &App, request: SourceRequest) -> Result<FileSource, ApiError> {
    let files = match request.file {
        OneOrMany::One(file) => vec![file],
        OneOrMany::Many(files) => files,
    };
    if files.is_empty() {
        return Err(ApiError::invalid("source.file: no file"));
    }
    let paths: Vec<_> = files
        .iter()
        .map(|f| app.controller.scheduler().file_path(f))
        .collect();
    let checked = off_async_threads(move || {
        paths
            .iter()
            .try_for_each(|path| playback::describe(path).map(|_| ()))
    })
    .await?;
    checked.map_err(|e| ApiError::invalid(format!("source.file: {e}")))?;
    Ok(FileSource {
        files,
        repeat: request.repeat,
    })
}

/// Checks that `stream` exists and has each of `destinations`.
async fn check_targets(
    app: &App,
    stream: &str,
    destinations: Option<&[String]>,
) -> Result<(), ApiError> {
    let known: Option<Vec<String>> = app
        .controller
        .with_config(|config| {
            let stream = config.streams.iter().find(|s| s.id == stream)?;
            Some(stream.destinations.iter().map(|d| d.id.clone()).collect())
        })
        .await;
    let Some(known) = known else {
        return Err(ApiError::invalid(format!("stream: no stream {stream:?}")));
    };
    for id in destinations.unwrap_or_default() {
        if !known.contains(id) {
            return Err(ApiError::invalid(format!(
                "destinations: no destination {id:?} in stream {stream:?}"
            )));
        }
    }
    Ok(())
}

/// `POST /v1/schedule`: books an entry.
pub(crate) async fn book(
    State(app): State<App>,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let request: NewEntry = parse_body(&body)?;
    let starts_at = parse_time("starts_at", &request.starts_at)?;
    let ends_at = parse_time("ends_at", &request.ends_at)?;
    check_targets(&app, &request.stream, request.destinations.as_deref()).await?;
    let source = match request.source {
        Some(source) => Some(check_source(&app, source).await?),
        None => None,
    };
    let scheduler = app.controller.scheduler();
    let booking = Booking {
        title: request.title.unwrap_or_else(|| request.stream.clone()),
        stream: request.stream,
        starts_at,
        ends_at,
        destinations: request.destinations,
        source,
        key: request.key.unwrap_or(false).then(generate_key),
    };
    let shown = scheduler
        .update(|schedule| {
            let entry = schedule.book(booking.clone(), SystemTime::now())?;
            let mut shown = view(entry);
            shown.key = entry.key.clone();
            Ok(shown)
        })
        .await?;
    scheduler.publish_keys(app.controller.streams());
    Ok((StatusCode::CREATED, Json(shown)))
}

/// `GET /v1/schedule[?status=…]`: the entries, in the order they start.
pub(crate) async fn list(State(app): State<App>, uri: Uri) -> Result<impl IntoResponse, ApiError> {
    let wanted = match query_value(&uri, "status").as_deref() {
        None => None,
        Some(text) => Some(Status::parse(text).ok_or_else(|| {
            ApiError::invalid(format!(
                "status: {text:?} is none of upcoming, in-progress, completed, canceled, failed"
            ))
        })?),
    };
    let scheduler = app.controller.scheduler();
    scheduler.refresh().await;
    let schedule = scheduler.lock();
    let entries: Vec<EntryView> = schedule
        .entries()
        .iter()
        .filter(|e| wanted.is_none_or(|s| e.status == s))
        .map(view)
        .collect();
    Ok(Json(entries))
}

/// `GET /v1/schedule/{id}`.
pub(crate) async fn get(
    State(app): State<App>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let scheduler = app.controller.scheduler();
    scheduler.refresh().await;
    let schedule = scheduler.lock();
    let entry = schedule
        .get(&id)
        .ok_or_else(|| ApiError::from(ScheduleError::NotFound(id.clone())))?;
    Ok(Json(view(entry)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EntryPatch {
    title: Option<String>,
    starts_at: Option<String>,
    ends_at: Option<String>,
    /// A list, or null for all of the stream's destinations.
    #[serde(default, deserialize_with = "present")]
    destinations: Option<Option<Vec<String>>>,
}

/// `PATCH /v1/schedule/{id}`: changes an upcoming entry.
pub(crate) async fn change(
    State(app): State<App>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let patch: EntryPatch = parse_body(&body)?;
    let starts_at = patch
        .starts_at
        .as_deref()
        .map(|t| parse_time("starts_at", t))
        .transpose()?;
    let ends_at = patch
        .ends_at
        .as_deref()
        .map(|t| parse_time("ends_at", t))
        .transpose()?;
    if let Some(Some(destinations)) = &patch.destinations {
        let stream = app
            .controller
            .scheduler()
            .lock()
            .get(&id)
            .map(|e| e.stream.clone())
            .ok_or_else(|| ApiError::from(ScheduleError::NotFound(id.clone())))?;
        check_targets(&app, &stream, Some(destinations)).await?;
    }
    let scheduler = app.controller.scheduler();
    let change = Change {
        title: patch.title,
        starts_at,
        ends_at,
        destinations: patch.destinations,
    };
    let shown = scheduler
        .update(|schedule| {
            schedule
                .change(&id, change.clone(), SystemTime::now())
                .map(view)
        })
        .await?;
    scheduler.publish_keys(app.controller.streams());
    Ok(Json(shown))
}

/// `DELETE /v1/schedule/{id}`: cancels it; one in progress ends now and its
/// destinations return to what the config says.
pub(crate) async fn cancel(
    State(app): State<App>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let controller = &app.controller;
    let scheduler = controller.scheduler();
    let canceled = scheduler::update_settling(controller.as_ref(), |schedule| {
        schedule.cancel(&id, SystemTime::now())?;
        Ok(schedule.get(&id).cloned().expect("just canceled"))
    })
    .await?;
    scheduler::enable_booked(controller.as_ref()).await;
    scheduler.publish_keys(controller.streams());
    Ok(Json(view(&canceled)))
}
