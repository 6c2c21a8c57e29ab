//! Where recordings lie and what they are called: `ROOT/STREAM/STREAM-
//! YYYYMMDD-HHMMSS.EXT` (UTC; `-2`, `-3`, … when two start in one second).
//! A recording's id is its file name without the extension; an id is
//! checked before it becomes a path, so no id can name a file outside the
//! stream's folder.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// A recording's id: `STREAM-YYYYMMDD-HHMMSS` or `…-N`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordingId {
    id: String,
    /// Where the stream's id ends in `id`.
    stream_len: usize,
}

impl RecordingId {
    /// The id of a recording of `stream` started at `started` (the
    /// `attempt`-th with that name: 1 for the first).
    pub fn new(stream: &str, started: SystemTime, attempt: u32) -> Option<Self> {
        if !is_plain(stream) {
            return None;
        }
        let stamp = humantime::format_rfc3339_seconds(started).to_string();
        // 2026-12-07T15:08:35Z → 20261207-150835
        let digits: String = stamp.chars().filter(char::is_ascii_digit).collect();
        if digits.len() != 14 {
            return None;
        }
        let mut id = format!("{stream}-{}-{}", &digits[..8], &digits[8..]);
        if attempt > 1 {
            id.push_str(&format!("-{attempt}"));
        }
        Some(Self {
            stream_len: stream.len(),
            id,
        })
    }

    /// Reads an id as a client sends it; `None` unless it has the shape of
    /// one (so it names no other place).
    pub fn parse(id: &str) -> Option<Self> {
        if id.len() > 128 || !is_plain(id) {
            return None;
        }
        let parts: Vec<&str> = id.rsplitn(4, '-').collect();
        let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
        let stream_len = match parts.as_slice() {
            // STREAM-DATE-TIME-N
            [n, time, date, stream]
                if digits(time, 6)
                    && digits(date, 8)
                    && !n.is_empty()
                    && n.bytes().all(|b| b.is_ascii_digit()) =>
            {
                stream.len()
            }
            _ => {
                let parts: Vec<&str> = id.rsplitn(3, '-').collect();
                match parts.as_slice() {
                    [time, date, stream] if digits(time, 6) && digits(date, 8) => stream.len(),
                    _ => return None,
                }
            }
        };
        if stream_len == 0 {
            return None;
        }
        Some(Self {
            id: id.to_string(),
            stream_len,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.id
    }

    pub fn stream(&self) -> &str {
        &self.id[..self.stream_len]
    }

    /// When the recording started (to the second, UTC), read from the id.
    pub fn started_at(&self) -> Option<SystemTime> {
        let stamp = self.id.get(self.stream_len + 1..self.stream_len + 16)?;
        let (date, time) = stamp.split_once('-')?;
        let text = format!(
            "{}-{}-{}T{}:{}:{}Z",
            date.get(..4)?,
            date.get(4..6)?,
            date.get(6..8)?,
            time.get(..2)?,
            time.get(2..4)?,
            time.get(4..6)?
        );
        humantime::parse_rfc3339(&text).ok()
    }

    /// The file of this recording under `root`, in `extension`'s format.
    pub fn path(&self, root: &Path, extension: &str) -> PathBuf {
        root.join(self.stream())
            .join(format!("{}.{extension}", self.id))
    }
}

impl fmt::Display for RecordingId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

/// What stream ids are made of (the config's rule): letters, digits, `-`,
/// `_` and `.`, starting with a letter or a digit, so never `.` or `..`
/// and never a `/`: one path segment inside the stream's folder.
fn is_plain(text: &str) -> bool {
    text.starts_with(|c: char| c.is_ascii_alphanumeric())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// The extensions of the formats a recording may be in.
pub const EXTENSIONS: [&str; 2] = ["mp4", "flv"];

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn ids_name_the_stream_and_the_start_in_utc() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_656_115);
        let id = RecordingId::new("main-2", at, 1).unwrap();
        assert_eq!(id.as_str(), "main-2-20261207-150835");
        assert_eq!(id.stream(), "main-2");
        assert_eq!(id.started_at(), Some(at));
        assert_eq!(
            id.path(Path::new("/rec"), "mp4"),
            Path::new("/rec/main-2/main-2-20261207-150835.mp4")
        );
        // A dotted stream id, as the config allows.
        let dotted = RecordingId::new("cam.1", at, 1).unwrap();
        assert_eq!(dotted.as_str(), "cam.1-20261207-150835");
        assert_eq!(RecordingId::parse(dotted.as_str()), Some(dotted.clone()));
        assert_eq!(
            dotted.path(Path::new("/rec"), "mp4"),
            Path::new("/rec/cam.1/cam.1-20261207-150835.mp4")
        );
        let again = RecordingId::new("main-2", at, 3).unwrap();
        assert_eq!(again.as_str(), "main-2-20261207-150835-3");
        assert_eq!(RecordingId::parse(again.as_str()), Some(again));
        assert_eq!(RecordingId::parse(id.as_str()), Some(id));
    }

    #[test]
    fn nothing_but_an_id_parses() {
        for bad in [
            "",
            "../etc-20261207-150835",
            "..-20261207-150835",
            ".hidden-20261207-150835",
            "main/x-20261207-150835",
            "main-20261207",
            "-20261207-150835",
            "main-2026120-150835",
            "main-20261207-150835-",
            "main-20261207-150835.mp4",
            "main-20261207-15083a",
        ] {
            assert_eq!(RecordingId::parse(bad), None, "{bad:?}");
        }
        assert_eq!(RecordingId::new("a/b", SystemTime::now(), 1), None);
    }
}
