//! A live preview: the stream that goes out (the encoder, the backup, the
//! standby clip), as fragmented MP4 a browser plays through Media Source
//! Extensions. One more consumer of the stream: its own bounded queue (a
//! viewer that stops reading drops whole GOPs, like a slow destination,
//! and costs the show nothing), the recordings' segmenter with short
//! fragments for a low latency. Prism never decodes video.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use prism_fanout::queue::{Batch, DestinationQueue};
use prism_media::{MediaMessage, StreamHub};

use crate::recorder::NoWriter;
use crate::segmenter::{Format, Segmenter, Step};

/// What one viewer's queue may hold before it drops to the next keyframe.
pub const VIEWER_QUEUE_BYTES: usize = 4 << 20;
/// A fragment goes out at each keyframe or after this much media.
pub const FRAGMENT_MS: u64 = 200;

/// Why a preview cannot start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PreviewError {
    #[error("the stream is not live")]
    Idle,
    #[error("the stream has sent no picture or sound this format can carry yet")]
    NothingToShow,
    #[error("the stream's codecs cannot be previewed: {0}")]
    Unsupported(&'static str),
}

/// What a viewer gets first: the codecs (for `MediaSource.isTypeSupported`)
/// and the init segment.
pub struct Started {
    pub codecs: String,
    pub has_video: bool,
    pub init: Bytes,
}

/// One viewer's feed. Dropping it unsubscribes.
pub struct PreviewFeed {
    hub: Arc<StreamHub>,
    queue: Arc<DestinationQueue<NoWriter>>,
    segmenter: Segmenter,
    batch: Vec<MediaMessage>,
    steps: Vec<Step>,
    ready: VecDeque<Bytes>,
    /// The session ended, or the codec configuration changed (the viewer
    /// starts again with a new init segment).
    over: bool,
}

impl PreviewFeed {
    /// Joins the live session from its cached keyframe.
    pub fn open(hub: Arc<StreamHub>) -> Result<Self, PreviewError> {
        let queue = Arc::new(DestinationQueue::new(VIEWER_QUEUE_BYTES));
        hub.subscribe(&queue, prism_media::single_track::Tracks::Default)
            .ok_or(PreviewError::Idle)?;
        Ok(Self {
            hub,
            queue,
            segmenter: Segmenter::new(Format::Fmp4, u64::MAX / 4).with_fragments_of(FRAGMENT_MS),
            batch: Vec::new(),
            steps: Vec::new(),
            ready: VecDeque::new(),
            over: false,
        })
    }

    /// Waits (at most `within`) for the first keyframe: the init segment.
    pub async fn start(&mut self, within: Duration) -> Result<Started, PreviewError> {
        let deadline = tokio::time::Instant::now() + within;
        // A codec left out (Opus beside H.264) does not stop the preview;
        // only when nothing can be shown is it the reason.
        let mut unsupported = None;
        loop {
            if let Some(at) = self
                .steps
                .iter()
                .position(|s| matches!(s, Step::Open { .. }))
            {
                // What follows the init segment is the viewer's first media.
                let rest = self.steps.split_off(at + 1);
                let open = self.steps.pop();
                self.steps = rest;
                if let Some(Step::Open { head, .. }) = open {
                    let tracks = self.segmenter.open_tracks().cloned().unwrap_or_default();
                    return Ok(Started {
                        codecs: tracks.codecs(),
                        has_video: tracks.video.is_some(),
                        init: head,
                    });
                }
            }
            for step in self.steps.drain(..) {
                if let Step::Unsupported(codec) = step {
                    unsupported = Some(codec);
                }
            }
            let batch =
                tokio::time::timeout_at(deadline, self.queue.next_batch(&mut self.batch, 256));
            match batch.await {
                Ok(Batch::Ready) => {
                    for message in self.batch.drain(..) {
                        self.segmenter.push(&message, &mut self.steps);
                    }
                }
                Ok(Batch::Ended) => return Err(PreviewError::Idle),
                Ok(_) => {}
                Err(_) => {
                    return Err(
                        unsupported.map_or(PreviewError::NothingToShow, PreviewError::Unsupported)
                    )
                }
            }
        }
    }

    /// The next bytes for the viewer; `None` once the feed is over (the
    /// session ended, or a new codec configuration needs a new init
    /// segment: the viewer starts again).
    pub async fn next(&mut self) -> Option<Bytes> {
        loop {
            if let Some(bytes) = self.ready.pop_front() {
                return Some(bytes);
            }
            if self.over {
                return None;
            }
            for step in self.steps.drain(..) {
                match step {
                    Step::Append { parts, .. } => self.ready.extend(parts),
                    Step::Open { .. } | Step::Close { .. } => self.over = true,
                    Step::Unsupported(_) | Step::Failed(_) => {}
                }
                if self.over {
                    break;
                }
            }
            if !self.ready.is_empty() || self.over {
                continue;
            }
            match self.queue.next_batch(&mut self.batch, 256).await {
                Batch::Ready => {
                    for message in self.batch.drain(..) {
                        self.segmenter.push(&message, &mut self.steps);
                    }
                }
                Batch::Ended => self.over = true,
                Batch::Interrupted | Batch::Hold(_) => {}
            }
        }
    }

    /// Frames this viewer missed (it read too slowly).
    pub fn dropped_frames(&self) -> u64 {
        self.queue.dropped_frames()
    }
}

impl Drop for PreviewFeed {
    fn drop(&mut self) {
        self.hub.unsubscribe(&self.queue);
    }
}
