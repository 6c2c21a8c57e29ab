//! `GET /v1/streams/{id}/preview`: the stream that goes out, as fragmented
//! MP4 for the console's `<video>` (Media Source Extensions): first the init
//! segment, then fragments as they come. The codecs are in
//! `X-Prism-Codecs` for `MediaSource.isTypeSupported`. At most
//! `max_preview_viewers` watch at once; each is a consumer of the stream
//! with its own bounded queue, so a viewer that stops reading costs the
//! show nothing. The response ends when the session ends or its codec
//! configuration changes (the console asks again).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::Response;

use prism_record::preview::{PreviewError, PreviewFeed};

use super::{running_stream, App};
use crate::error::ApiError;

/// How long a preview waits for the stream's first keyframe.
const FIRST_KEYFRAME_WAIT: Duration = Duration::from_secs(10);

pub(crate) async fn preview(
    State(app): State<App>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let stream = running_stream(&app, &id)?;
    let permit = Arc::clone(&app.preview_viewers)
        .try_acquire_owned()
        .map_err(|_| {
            ApiError::unavailable(format!(
                "{} previews are being watched, the most at once (max_preview_viewers)",
                app.max_preview_viewers
            ))
        })?;
    let mut feed = PreviewFeed::open(Arc::clone(&stream.hub)).map_err(refused)?;
    let started = feed.start(FIRST_KEYFRAME_WAIT).await.map_err(refused)?;
    let first = Some(started.init);
    let body = futures_util::stream::unfold(
        (first, feed, permit),
        |(first, mut feed, permit)| async move {
            let bytes: Bytes = match first {
                Some(init) => init,
                None => feed.next().await?,
            };
            Some((Ok::<_, Infallible>(bytes), (None, feed, permit)))
        },
    );
    Response::builder()
        .header(header::CONTENT_TYPE, "video/mp4")
        .header(header::CACHE_CONTROL, "no-store")
        .header("x-prism-codecs", started.codecs)
        .header(
            "x-prism-video",
            if started.has_video { "yes" } else { "no" },
        )
        .body(Body::from_stream(body))
        .map_err(|e| ApiError::internal(e.to_string()))
}

/// Why there is nothing to show, as the console tells it.
fn refused(error: PreviewError) -> ApiError {
    ApiError::conflict(error.to_string())
}
