//! A stream's recorder: a consumer of the stream like a destination, with
//! its own bounded queue (a slow disk drops whole GOPs from the recording,
//! counted, never from a destination), and a task that turns the session's
//! messages into files through the `Segmenter`, writing off the async
//! threads. A write that fails (a full disk, a read-only file system)
//! stops that file with an error state and an event; the recorder tries
//! again by itself, from the next keyframe, with a growing pause.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use prism_fanout::queue::{Batch, DestinationQueue, DirectWriter};
use prism_media::supervise::catch_panic;
use prism_media::{MediaMessage, StreamHub};

use crate::files::RecordingId;
use crate::segmenter::{Format, SegmentReason, Segmenter, Step};
use crate::writer::{ErrorKind, SegmentFile, WriteError};

/// What a recording's queue may hold before it drops whole GOPs: about 20 s
/// of a 6 Mbit/s stream, for a disk that stalls.
pub const QUEUE_BUDGET_BYTES: usize = 16 << 20;
/// Messages are handed to the recorder together, at most this late: one
/// wake-up per batch, not per message.
const BATCH_DELAY: Duration = Duration::from_millis(200);
const BATCH_MAX: usize = 1024;
/// After a failed write, the recorder waits this long before it tries a new
/// file, doubling to the most.
const RETRY_FIRST: Duration = Duration::from_secs(2);
const RETRY_MOST: Duration = Duration::from_secs(60);

/// How a stream's recordings are made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordSettings {
    /// The folder that holds every stream's folder of recordings.
    pub root: PathBuf,
    pub format: Format,
    /// A file ends at the first keyframe after this much media.
    pub segment: Duration,
}

/// What a recorder tells the control plane (it forwards these as events).
#[derive(Clone, Debug)]
pub enum RecordingEvent {
    /// A file was started.
    Started {
        stream: String,
        recording: RecordingId,
        file: PathBuf,
        reason: SegmentReason,
    },
    /// A file was completed and closed.
    Segment {
        stream: String,
        recording: RecordingId,
        file: PathBuf,
        duration_ms: u64,
        bytes: u64,
    },
    /// Recording stopped: the session ended, the recorder was switched
    /// off, or a write failed (`error`).
    Stopped {
        stream: String,
        error: Option<WriteError>,
    },
}

pub type EventSink = Arc<dyn Fn(RecordingEvent) + Send + Sync>;

/// Where a recorder is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordingState {
    /// Waiting for the stream to go live (or for its first keyframe).
    Waiting,
    Recording,
    /// The last write failed; the recorder tries again by itself.
    Failed,
}

impl RecordingState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Waiting => "waiting",
            Self::Recording => "recording",
            Self::Failed => "failed",
        }
    }
}

/// The file being written.
#[derive(Clone, Debug)]
pub struct CurrentFile {
    pub id: RecordingId,
    pub path: PathBuf,
    pub started_at: SystemTime,
    pub start_ms: u64,
    pub end_ms: u64,
    pub bytes: u64,
}

impl CurrentFile {
    pub fn duration_ms(&self) -> u64 {
        self.end_ms.saturating_sub(self.start_ms)
    }
}

#[derive(Debug)]
struct Inner {
    state: RecordingState,
    current: Option<CurrentFile>,
    last_error: Option<WriteError>,
}

/// A recorder's figures: read by the API and the metrics.
#[derive(Debug)]
pub struct RecordingStatus {
    inner: Mutex<Inner>,
    pub bytes_total: AtomicU64,
    errors: [AtomicU64; 4],
    /// Frames the recording lost while a write had failed (the queue counts
    /// its own drops).
    pub discarded_frames: AtomicU64,
}

impl Default for RecordingStatus {
    fn default() -> Self {
        Self {
            inner: Mutex::new(Inner {
                state: RecordingState::Waiting,
                current: None,
                last_error: None,
            }),
            bytes_total: AtomicU64::new(0),
            errors: Default::default(),
            discarded_frames: AtomicU64::new(0),
        }
    }
}

impl RecordingStatus {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn state(&self) -> RecordingState {
        self.lock().state
    }

    pub fn current(&self) -> Option<CurrentFile> {
        self.lock().current.clone()
    }

    pub fn last_error(&self) -> Option<WriteError> {
        self.lock().last_error.clone()
    }

    pub fn errors(&self, kind: ErrorKind) -> u64 {
        let index = ErrorKind::ALL.iter().position(|k| *k == kind).unwrap_or(0);
        self.errors[index].load(Ordering::Relaxed)
    }

    fn fail(&self, error: WriteError) {
        let index = ErrorKind::ALL
            .iter()
            .position(|k| *k == error.kind)
            .unwrap_or(0);
        self.errors[index].fetch_add(1, Ordering::Relaxed);
        let mut inner = self.lock();
        inner.state = RecordingState::Failed;
        inner.current = None;
        inner.last_error = Some(error);
    }
}

/// The queue a recorder consumes: a destination's, never lent a writer.
type RecordQueue = DestinationQueue<NoWriter>;

/// A recorder writes from its own task only.
pub struct NoWriter;

impl DirectWriter for NoWriter {
    fn write_now(&mut self, _message: &MediaMessage) -> bool {
        false
    }

    fn hold(&mut self, _message: &MediaMessage) {}

    fn held_bytes(&self) -> usize {
        0
    }

    fn send_held(&mut self, _now: std::time::Instant) -> bool {
        false
    }
}

/// A running recorder. Stopping it completes the file being written.
pub struct RecorderHandle {
    pub stream: String,
    pub status: Arc<RecordingStatus>,
    queue: Arc<RecordQueue>,
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl RecorderHandle {
    /// Frames dropped from the recording (a slow disk, a failed write).
    pub fn dropped_frames(&self) -> u64 {
        self.queue.dropped_frames() + self.status.discarded_frames.load(Ordering::Relaxed)
    }

    /// Stops recording: the open file is completed and closed.
    pub async fn stop(&self) {
        self.stop.send_replace(true);
        self.queue.interrupt();
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

impl Drop for RecorderHandle {
    fn drop(&mut self) {
        self.stop.send_replace(true);
        self.queue.interrupt();
    }
}

/// Starts recording `hub`'s sessions.
pub fn spawn_recorder(
    hub: Arc<StreamHub>,
    settings: RecordSettings,
    events: EventSink,
) -> RecorderHandle {
    let queue = Arc::new(RecordQueue::new(QUEUE_BUDGET_BYTES));
    queue.set_max_delay(BATCH_DELAY);
    let status = Arc::new(RecordingStatus::default());
    let (stop, stop_rx) = watch::channel(false);
    let stream = hub.id().to_string();
    let recorder = Recorder {
        stream: hub.id().to_string(),
        hub,
        settings,
        status: Arc::clone(&status),
        queue: Arc::clone(&queue),
        events,
    };
    let task = tokio::spawn(supervise(recorder, stop_rx));
    RecorderHandle {
        stream,
        status,
        queue,
        stop,
        task: Mutex::new(Some(task)),
    }
}

#[derive(Clone)]
struct Recorder {
    stream: String,
    hub: Arc<StreamHub>,
    settings: RecordSettings,
    status: Arc<RecordingStatus>,
    queue: Arc<RecordQueue>,
    events: EventSink,
}

/// Runs the recorder, and again after a panic (logged and counted as
/// `prism_task_panics_total{task="recorder"}`), until it is stopped.
async fn supervise(recorder: Recorder, stop: watch::Receiver<bool>) {
    loop {
        let outcome = catch_panic("recorder", recorder.clone().run(stop.clone())).await;
        let Err(panic) = outcome else {
            return;
        };
        recorder.hub.unsubscribe(&recorder.queue);
        error!(stream = %recorder.stream, panic = %panic, "recorder panicked; recording again from the next keyframe");
        recorder.status.fail(WriteError {
            kind: ErrorKind::Io,
            path: recorder.settings.root.clone(),
            message: format!("internal error (recorder panicked): {panic}"),
        });
        if *stop.borrow() {
            return;
        }
        tokio::time::sleep(RETRY_FIRST).await;
    }
}

impl Recorder {
    async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut live = self.hub.watch_live();
        // The session already recorded to its end.
        let mut served: Option<u64> = None;
        loop {
            if *stop.borrow_and_update() {
                return;
            }
            let publish = *live.borrow_and_update();
            if !publish.live || served == Some(publish.session) {
                tokio::select! {
                    r = stop.changed() => if r.is_err() { return },
                    r = live.changed() => if r.is_err() { return },
                }
                continue;
            }
            let Some(session) = self
                .hub
                .subscribe(&self.queue, prism_media::single_track::Tracks::Default)
            else {
                served = Some(publish.session);
                continue;
            };
            served = Some(session);
            let stopped = self.record_session(&mut stop).await;
            self.hub.unsubscribe(&self.queue);
            if stopped {
                return;
            }
        }
    }

    /// Records one live session until it ends (`false`) or the recorder is
    /// stopped (`true`).
    async fn record_session(&self, stop: &mut watch::Receiver<bool>) -> bool {
        let segment_ms = self.settings.segment.as_millis() as u64;
        let mut segmenter = Segmenter::new(self.settings.format, segment_ms);
        let mut file: Option<SegmentFile> = None;
        let mut batch: Vec<MediaMessage> = Vec::with_capacity(BATCH_MAX);
        let mut retry = RETRY_FIRST;
        let mut paused_until: Option<Instant> = None;
        let mut steps = Vec::new();
        let stopped = loop {
            let next = tokio::select! {
                next = self.queue.next_batch(&mut batch, BATCH_MAX) => next,
                r = stop.changed() => {
                    if r.is_err() || *stop.borrow() { break true }
                    continue;
                }
            };
            match next {
                Batch::Ready => {}
                Batch::Ended => break false,
                Batch::Interrupted | Batch::Hold(_) => {
                    if *stop.borrow() {
                        break true;
                    }
                    continue;
                }
            }
            if let Some(until) = paused_until {
                if Instant::now() < until {
                    let frames = batch.iter().filter(|m| !m.sequence_header).count();
                    self.status
                        .discarded_frames
                        .fetch_add(frames as u64, Ordering::Relaxed);
                    // Headers still count: a new file needs them.
                    for message in batch.drain(..).filter(|m| m.sequence_header) {
                        segmenter.push(&message, &mut steps);
                    }
                    steps.clear();
                    continue;
                }
                paused_until = None;
                self.set_state(RecordingState::Waiting);
            }
            for message in batch.drain(..) {
                segmenter.push(&message, &mut steps);
            }
            if let Err(error) = self.apply(&mut file, std::mem::take(&mut steps)).await {
                self.failed(error, retry);
                // Start over from the next keyframe, in a new file.
                segmenter = segmenter.restart();
                paused_until = Some(Instant::now() + retry);
                retry = (retry * 2).min(RETRY_MOST);
            } else if file.is_some() {
                retry = RETRY_FIRST;
            }
        };
        segmenter.finish(&mut steps);
        if let Err(error) = self.apply(&mut file, steps).await {
            self.failed(error, retry);
        } else {
            self.set_state(RecordingState::Waiting);
            (self.events)(RecordingEvent::Stopped {
                stream: self.stream.clone(),
                error: None,
            });
        }
        stopped
    }

    fn set_state(&self, state: RecordingState) {
        self.status.lock().state = state;
    }

    fn failed(&self, error: WriteError, retry: Duration) {
        warn!(
            stream = %self.stream,
            kind = error.kind.as_str(),
            error = %error,
            retry_in_s = retry.as_secs(),
            "recording stopped: a write failed; the show goes on, recording resumes by itself"
        );
        self.status.fail(error.clone());
        (self.events)(RecordingEvent::Stopped {
            stream: self.stream.clone(),
            error: Some(error),
        });
    }

    /// Carries out `steps` off the async threads, then tells what happened.
    async fn apply(
        &self,
        file: &mut Option<SegmentFile>,
        steps: Vec<Step>,
    ) -> Result<(), WriteError> {
        if steps.is_empty() {
            return Ok(());
        }
        let root = self.settings.root.clone();
        let stream = self.stream.clone();
        let extension = self.settings.format.extension();
        let open = file.take();
        let joined = tokio::task::spawn_blocking(move || {
            let mut file = open;
            let mut done = Vec::new();
            let result = write_steps(&root, &stream, extension, &mut file, steps, &mut done);
            (file, done, result)
        })
        .await;
        let (open, done, result) = match joined {
            Ok(outcome) => outcome,
            Err(e) => {
                return Err(WriteError {
                    kind: ErrorKind::Io,
                    path: self.settings.root.clone(),
                    message: format!("the write task failed: {e}"),
                })
            }
        };
        *file = open;
        for outcome in done {
            self.tell(outcome);
        }
        result
    }

    fn tell(&self, outcome: Done) {
        match outcome {
            Done::Opened { file, reason } => {
                info!(stream = %self.stream, recording = %file.id, file = %file.path.display(), "recording to a new file");
                {
                    let mut inner = self.status.lock();
                    inner.state = RecordingState::Recording;
                    inner.current = Some(file.clone());
                }
                self.status
                    .bytes_total
                    .fetch_add(file.bytes, Ordering::Relaxed);
                (self.events)(RecordingEvent::Started {
                    stream: self.stream.clone(),
                    recording: file.id,
                    file: file.path,
                    reason,
                });
            }
            Done::Appended { bytes, end_ms } => {
                self.status.bytes_total.fetch_add(bytes, Ordering::Relaxed);
                let mut inner = self.status.lock();
                if let Some(current) = inner.current.as_mut() {
                    current.bytes += bytes;
                    current.end_ms = current.end_ms.max(end_ms);
                }
            }
            Done::Closed { bytes } => {
                self.status.bytes_total.fetch_add(bytes, Ordering::Relaxed);
                let closed = {
                    let mut inner = self.status.lock();
                    inner.current.take()
                };
                if let Some(current) = closed {
                    (self.events)(RecordingEvent::Segment {
                        stream: self.stream.clone(),
                        recording: current.id.clone(),
                        file: current.path.clone(),
                        duration_ms: current.duration_ms(),
                        bytes: current.bytes + bytes,
                    });
                }
            }
            Done::Unsupported(codec) => {
                warn!(stream = %self.stream, codec, format = self.settings.format.as_str(), "recording leaves out a track of a codec this format cannot hold");
            }
            Done::Failed(message) => {
                warn!(stream = %self.stream, error = %message, "recording waits for a codec configuration it can write");
            }
        }
    }
}

/// What a batch of steps did, for the status and the events.
enum Done {
    Opened {
        file: CurrentFile,
        reason: SegmentReason,
    },
    Appended {
        bytes: u64,
        end_ms: u64,
    },
    Closed {
        bytes: u64,
    },
    Unsupported(&'static str),
    Failed(String),
}

fn write_steps(
    root: &std::path::Path,
    stream: &str,
    extension: &str,
    file: &mut Option<SegmentFile>,
    steps: Vec<Step>,
    done: &mut Vec<Done>,
) -> Result<(), WriteError> {
    for step in steps {
        match step {
            Step::Open {
                head,
                start_ms,
                reason,
            } => {
                if let Some(previous) = file.take() {
                    previous.finish(None)?;
                }
                let started_at = SystemTime::now();
                let mut new = SegmentFile::create(root, stream, extension, started_at)?;
                new.append(std::slice::from_ref(&head))?;
                done.push(Done::Opened {
                    file: CurrentFile {
                        id: new.id.clone(),
                        path: new.path.clone(),
                        started_at,
                        start_ms,
                        end_ms: start_ms,
                        bytes: new.bytes,
                    },
                    reason,
                });
                *file = Some(new);
            }
            Step::Append { parts, end_ms } => {
                let Some(open) = file.as_mut() else {
                    continue;
                };
                let before = open.bytes;
                open.append(&parts)?;
                done.push(Done::Appended {
                    bytes: open.bytes - before,
                    end_ms,
                });
            }
            Step::Close { trailer } => {
                let Some(open) = file.take() else {
                    continue;
                };
                let bytes = trailer.as_ref().map_or(0, Bytes::len) as u64;
                open.finish(trailer.as_ref())?;
                done.push(Done::Closed { bytes });
            }
            Step::Unsupported(codec) => done.push(Done::Unsupported(codec)),
            Step::Failed(error) => done.push(Done::Failed(error.to_string())),
        }
    }
    Ok(())
}
