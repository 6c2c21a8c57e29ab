//! A pre-recorded show: files (FLV, or MP4 plain or fragmented, such as
//! Prism's own recordings) played into a stream at real time, with
//! no encoder, from a schedule entry's start to its end. A playlist plays
//! its files in order on one timeline (each file's first frame one frame
//! after the last one's), and may repeat. The player holds the stream's
//! primary source for the whole show: an encoder that was live gives way,
//! and one that publishes meanwhile is refused.
//!
//! Files are read as they play (never whole into memory), tag by tag, on a
//! thread of the player's own; it pushes each message into the hub when its
//! time comes. A panic in it is caught, logged and counted.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, SocketAddr};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tracing::{error, info, warn};

use prism_media::flv::{self, MediaKind};

use crate::mp4_read::Mp4Reader;
use prism_media::supervise::{count_panic, panic_message};
use prism_media::{IngestProtocol, MediaMessage, PublishGuard, StreamHub};

/// Shown as the player's address: nothing connects from there.
const PLAYER: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);
/// The largest tag a file may hold (RTMP's own 24-bit limit).
const MAX_TAG: usize = 16 << 20;
/// Between two files of a playlist: the next starts this long after the
/// last frame of the one before (a frame at 25 fps).
const FILE_GAP_MS: u64 = 40;
/// How often a sleeping player looks whether it was stopped.
const STOP_CHECK: Duration = Duration::from_millis(100);

/// What a file holds, read when a show is booked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileInfo {
    pub duration: Duration,
    pub video: Option<&'static str>,
    pub audio: Option<&'static str>,
}

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{path}: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("{path}: neither FLV nor MP4")]
    NotPlayable { path: String },
    #[error("{path}: {error}")]
    Mp4 {
        path: String,
        error: crate::mp4_read::Mp4ReadError,
    },
    #[error("{path}: a tag of {size} bytes at byte {at} is over the 16 MiB limit")]
    TagTooLarge { path: String, size: usize, at: u64 },
    #[error("{path}: no audio or video in it")]
    NoMedia { path: String },
}

/// Reads `path`'s tag headers (skipping the bodies, so a long file costs
/// little): its length and codecs. A file cut short counts to its last
/// whole tag, as the player plays it.
pub fn describe(path: &Path) -> Result<FileInfo, FileError> {
    let shown = path.display().to_string();
    let io = |error| FileError::Io {
        path: shown.clone(),
        error,
    };
    let mut file = BufReader::new(File::open(path).map_err(io)?);
    if is_mp4(&mut file).map_err(io)? {
        return describe_mp4(file, &shown);
    }
    let start = read_header(&mut file, &shown)?;
    file.seek(SeekFrom::Start(start)).map_err(io)?;
    let (mut first, mut last) = (None, 0u32);
    let (mut video, mut audio) = (None, None);
    let mut header = [0u8; 11];
    let mut at = start;
    while file.read_exact(&mut header).is_ok() {
        let size = u32::from_be_bytes([0, header[1], header[2], header[3]]) as usize;
        if size > MAX_TAG {
            return Err(FileError::TagTooLarge {
                path: shown,
                size,
                at,
            });
        }
        let timestamp = u32::from_be_bytes([header[7], header[4], header[5], header[6]]);
        let mut lead = [0u8; 5];
        let peek = size.min(lead.len());
        if file.read_exact(&mut lead[..peek]).is_err() {
            break;
        }
        let lead = &lead[..peek];
        let media = match MediaKind::from_type_id(header[0] & 0x1f) {
            Some(MediaKind::Video) => {
                video = video.or(flv::video_codec_name(lead));
                !flv::inspect_video(lead).sequence_header
            }
            Some(MediaKind::Audio) => {
                audio = audio.or(flv::audio_codec_name(lead));
                !flv::is_audio_sequence_header(lead)
            }
            _ => false,
        };
        if media {
            first.get_or_insert(timestamp);
            last = last.max(timestamp);
        }
        let skip = (size - peek + 4) as i64;
        if file.seek_relative(skip).is_err() {
            break;
        }
        at += 11 + size as u64 + 4;
    }
    let Some(first) = first else {
        return Err(FileError::NoMedia { path: shown });
    };
    Ok(FileInfo {
        duration: Duration::from_millis(u64::from(last.saturating_sub(first))),
        video,
        audio,
    })
}

/// Whether the file starts with an MP4 `ftyp` box (and not FLV's header).
fn is_mp4(file: &mut (impl Read + Seek)) -> std::io::Result<bool> {
    let mut head = [0u8; 8];
    let read = file.read(&mut head)?;
    file.seek(SeekFrom::Start(0))?;
    Ok(read == 8 && &head[4..] == b"ftyp")
}

/// An MP4's length and codecs, from its `moov` (and `moof`s).
fn describe_mp4(file: BufReader<File>, path: &str) -> Result<FileInfo, FileError> {
    let mp4 = |error| FileError::Mp4 {
        path: path.to_string(),
        error,
    };
    let mut reader = Mp4Reader::open(file).map_err(mp4)?;
    let (video, audio) = reader.codecs();
    let (mut first, mut last) = (None, 0u64);
    while let Some(frames) = reader.next_fragment(false).map_err(mp4)? {
        for frame in frames {
            first.get_or_insert(frame.timestamp);
            last = last.max(frame.timestamp);
        }
    }
    let first = first.ok_or_else(|| FileError::NoMedia {
        path: path.to_string(),
    })?;
    Ok(FileInfo {
        duration: Duration::from_millis(last - first),
        video,
        audio,
    })
}

/// Checks the `FLV` signature; returns where the first tag starts.
fn read_header(file: &mut impl Read, path: &str) -> Result<u64, FileError> {
    let mut header = [0u8; 9];
    if file.read_exact(&mut header).is_err() || &header[..3] != b"FLV" {
        return Err(FileError::NotPlayable {
            path: path.to_string(),
        });
    }
    let length = u32::from_be_bytes([header[5], header[6], header[7], header[8]]);
    // The header, then the first PreviousTagSize.
    Ok(u64::from(length.max(9)) + 4)
}

/// A show being played; stopping it ends the publish cleanly.
pub struct FilePlayer {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FilePlayer {
    /// Plays `files` (FLV) into `hub` from now, in order, again from the
    /// first if `repeat`, until stopped.
    pub fn start(hub: Arc<StreamHub>, files: Vec<PathBuf>, repeat: bool) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let runtime = tokio::runtime::Handle::try_current().ok();
        let stopped = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name(format!("prism-show-{}", hub.id()))
            .spawn(move || {
                // The hub's timers (its grace period) run on the runtime.
                let _runtime = runtime.as_ref().map(|r| r.enter());
                let played = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    play(&hub, &files, repeat, &stopped)
                }));
                if let Err(panic) = played {
                    count_panic("file_source");
                    error!(stream = %hub.id(), panic = %panic_message(panic.as_ref()), "the show's player panicked; the show ends");
                }
            })?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }

    /// Whether it stopped by itself (its files ended, or one failed).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Ends the show (the publish ends cleanly) and waits for the thread.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for FilePlayer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn play(hub: &Arc<StreamHub>, files: &[PathBuf], repeat: bool, stop: &AtomicBool) {
    let mut publish = match hub.take_over(IngestProtocol::File, PLAYER) {
        Ok(publish) => publish,
        Err(e) => {
            warn!(stream = %hub.id(), error = %e, "the show could not take the stream");
            return;
        }
    };
    info!(stream = %hub.id(), files = files.len(), repeat, "show playing");
    let started = Instant::now();
    // Where the next file starts on the show's timeline (ms).
    let mut next_start = 0u64;
    'show: loop {
        let mut played = false;
        for path in files {
            match play_file(&mut publish, path, next_start, started, stop) {
                Ok(Some(last)) => {
                    next_start = last + FILE_GAP_MS;
                    played = true;
                }
                Ok(None) => {}
                Err(e) => {
                    warn!(stream = %hub.id(), error = %e, "a file of the show could not be played; the show goes on with the next");
                }
            }
            if stop.load(Ordering::Relaxed) || !publish.is_current() {
                break 'show;
            }
        }
        // A playlist of which nothing plays any more (its files gone) is
        // not looped through again and again.
        if !repeat || !played {
            break;
        }
    }
    info!(stream = %hub.id(), "show ended");
    publish.finish();
}

/// Plays one file with its first frame at `start_ms` on the show's
/// timeline; returns the timestamp of its last message, if any.
fn play_file(
    publish: &mut PublishGuard,
    path: &Path,
    start_ms: u64,
    started: Instant,
    stop: &AtomicBool,
) -> Result<Option<u64>, FileError> {
    let mut messages = FileMessages::open(path)?;
    let mut first: Option<u64> = None;
    let mut last = None;
    while let Some(message) = messages.next()? {
        // The file's time starts at its first frame: headers and metadata
        // before it (often stamped 0 in a file whose frames start later)
        // go out with it.
        if message.kind != MediaKind::Data && !message.sequence_header {
            first.get_or_insert(message.timestamp);
        }
        let from_first = first.map_or(0, |first| message.timestamp.saturating_sub(first));
        let at = start_ms + from_first;
        if !wait_until(started + Duration::from_millis(at), stop) || !publish.is_current() {
            return Ok(last);
        }
        publish.push(MediaMessage {
            timestamp: at,
            ..message
        });
        last = Some(at);
    }
    Ok(last)
}

/// A file's messages in order, stamped with the file's own times; a file
/// cut short ends with its last whole message.
enum FileMessages {
    Flv {
        file: BufReader<File>,
        path: String,
    },
    Mp4 {
        reader: Box<Mp4Reader<BufReader<File>>>,
        pending: std::collections::VecDeque<MediaMessage>,
        path: String,
    },
}

impl FileMessages {
    fn open(path: &Path) -> Result<Self, FileError> {
        let shown = path.display().to_string();
        let io = |error| FileError::Io {
            path: shown.clone(),
            error,
        };
        let mut file = BufReader::with_capacity(256 << 10, File::open(path).map_err(io)?);
        if is_mp4(&mut file).map_err(io)? {
            let reader = Mp4Reader::open(file).map_err(|error| FileError::Mp4 {
                path: shown.clone(),
                error,
            })?;
            return Ok(FileMessages::Mp4 {
                pending: reader.headers().into(),
                reader: Box::new(reader),
                path: shown,
            });
        }
        let first_tag = read_header(&mut file, &shown)?;
        file.seek(SeekFrom::Start(first_tag)).map_err(io)?;
        Ok(FileMessages::Flv { file, path: shown })
    }

    fn next(&mut self) -> Result<Option<MediaMessage>, FileError> {
        match self {
            FileMessages::Flv { file, path } => loop {
                let mut header = [0u8; 11];
                if file.read_exact(&mut header).is_err() {
                    return Ok(None);
                }
                let size = u32::from_be_bytes([0, header[1], header[2], header[3]]) as usize;
                if size > MAX_TAG {
                    return Err(FileError::TagTooLarge {
                        path: path.clone(),
                        size,
                        at: file.stream_position().unwrap_or(0),
                    });
                }
                let mut body = vec![0u8; size + 4];
                if file.read_exact(&mut body).is_err() {
                    return Ok(None);
                }
                body.truncate(size);
                let Some(kind) = MediaKind::from_type_id(header[0] & 0x1f) else {
                    continue;
                };
                let timestamp = u32::from_be_bytes([header[7], header[4], header[5], header[6]]);
                return Ok(Some(MediaMessage::new(
                    kind,
                    u64::from(timestamp),
                    Bytes::from(body),
                )));
            },
            FileMessages::Mp4 {
                reader,
                pending,
                path,
            } => loop {
                if let Some(message) = pending.pop_front() {
                    return Ok(Some(message));
                }
                match reader.next_fragment(true) {
                    Ok(Some(frames)) => pending.extend(frames),
                    Ok(None) => return Ok(None),
                    Err(error) => {
                        return Err(FileError::Mp4 {
                            path: path.clone(),
                            error,
                        })
                    }
                }
            },
        }
    }
}

/// Sleeps until `due`; false when stopped meanwhile.
fn wait_until(due: Instant, stop: &AtomicBool) -> bool {
    loop {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let left = due.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        std::thread::sleep(left.min(STOP_CHECK));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flv_file(dir: &Path, name: &str, frames: u32) -> PathBuf {
        let mut out = flv::FILE_HEADER.to_vec();
        flv::write_tag(&mut out, 9, 0, &[0x17, 0, 0, 0, 0, 1, 0x64, 0, 0x1f]);
        for n in 0..frames {
            let first = if n % 25 == 0 { 0x17 } else { 0x27 };
            flv::write_tag(&mut out, 9, 1000 + n * 40, &[first, 1, 0, 0, 0, 0xab]);
            flv::write_tag(&mut out, 8, 1000 + n * 40, &[0xaf, 1, 0x21]);
        }
        let path = dir.join(name);
        std::fs::write(&path, out).unwrap();
        path
    }

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("prism-file-source-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_file_is_described_by_its_tags_and_a_bad_one_is_named() {
        let dir = scratch("describe");
        let path = flv_file(&dir, "a.flv", 50);
        let info = describe(&path).unwrap();
        assert_eq!(info.duration, Duration::from_millis(49 * 40));
        assert_eq!((info.video, info.audio), (Some("h264"), Some("aac")));
        let mp4 = dir.join("b.mp4");
        std::fs::write(&mp4, b"\x00\x00\x00\x20ftypisom").unwrap();
        assert!(matches!(describe(&mp4), Err(FileError::Mp4 { .. })));
        let missing = describe(&dir.join("none.flv")).unwrap_err().to_string();
        assert!(missing.contains("none.flv"), "{missing}");
    }

    #[tokio::test]
    async fn a_looping_playlist_whose_files_are_gone_ends_instead_of_spinning() {
        let dir = scratch("gone");
        let hub = StreamHub::new("show");
        let player = FilePlayer::start(Arc::clone(&hub), vec![dir.join("gone.flv")], true).unwrap();
        let started = Instant::now();
        while !player.is_finished() && started.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(player.is_finished());
        player.stop();
    }

    #[tokio::test]
    async fn a_playlist_plays_on_one_timeline_and_stops_when_told() {
        let dir = scratch("play");
        let files = vec![flv_file(&dir, "a.flv", 5), flv_file(&dir, "b.flv", 5)];
        let hub = StreamHub::new("show");
        let player = FilePlayer::start(Arc::clone(&hub), files, false).unwrap();
        let started = Instant::now();
        while !player.is_finished() && started.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(player.is_finished());
        // 5 frames of 40 ms each, twice, with one frame between the files,
        // at real time.
        assert!(started.elapsed() >= Duration::from_millis(160 + 40 + 160));
        let stats = hub.stats();
        assert_eq!(stats.newest_timestamp_ms.load(Ordering::Relaxed), 360);
        assert_eq!(stats.video_frames.load(Ordering::Relaxed), 2 + 10);
        assert_eq!(stats.audio_frames.load(Ordering::Relaxed), 10);
        assert!(!hub.is_live(), "the show ended its publish");
        player.stop();
    }
}
