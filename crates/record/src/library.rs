//! The recordings on disk: listed with their length and whether they were
//! closed cleanly, deleted, and kept within `keep_hours` and `max_gib`.
//! Blocking (it reads the disk): the control plane calls it off the async
//! threads.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use mp4_atom::{Decode, Moof};

use crate::files::{RecordingId, EXTENSIONS};
use crate::fmp4;

/// A recording file as the API lists it.
#[derive(Clone, Debug, PartialEq)]
pub struct Recording {
    pub id: RecordingId,
    pub path: PathBuf,
    /// `"fmp4"` or `"flv"`.
    pub format: &'static str,
    pub started_at: SystemTime,
    pub duration_ms: u64,
    pub bytes: u64,
    /// Closed cleanly. A file being written, or cut short by a crash, is
    /// not (it still plays up to its last fragment).
    pub complete: bool,
}

/// What reading a file's boxes told.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub duration_ms: u64,
    pub complete: bool,
}

/// The recordings under one folder, with what was read of each kept while
/// the file is unchanged.
#[derive(Default)]
pub struct Library {
    summaries: Mutex<HashMap<PathBuf, (u64, SystemTime, Summary)>>,
}

/// A file the control plane is writing: listed as incomplete, with its
/// length so far, and never deleted.
#[derive(Clone, Debug)]
pub struct Active {
    pub path: PathBuf,
    pub duration_ms: u64,
}

impl Library {
    /// Every recording under `root`, oldest first; of `stream` only when
    /// given.
    pub fn list(&self, root: &Path, stream: Option<&str>, active: &[Active]) -> Vec<Recording> {
        let mut out = Vec::new();
        let Ok(folders) = std::fs::read_dir(root) else {
            return out;
        };
        for folder in folders.flatten() {
            let name = folder.file_name();
            let Some(name) = name.to_str() else { continue };
            if stream.is_some_and(|s| s != name) {
                continue;
            }
            let Ok(files) = std::fs::read_dir(folder.path()) else {
                continue;
            };
            for file in files.flatten() {
                if let Some(recording) = self.read(&file.path(), name, active) {
                    out.push(recording);
                }
            }
        }
        out.sort_by(|a, b| (a.started_at, &a.id).cmp(&(b.started_at, &b.id)));
        out
    }

    /// The recording `id`, if its file exists.
    pub fn find(&self, root: &Path, id: &RecordingId, active: &[Active]) -> Option<Recording> {
        EXTENSIONS
            .iter()
            .find_map(|ext| self.read(&id.path(root, ext), id.stream(), active))
    }

    fn read(&self, path: &Path, stream: &str, active: &[Active]) -> Option<Recording> {
        let extension = path.extension()?.to_str()?;
        let format = match extension {
            "mp4" => "fmp4",
            "flv" => "flv",
            _ => return None,
        };
        let id = RecordingId::parse(path.file_stem()?.to_str()?)?;
        if id.stream() != stream {
            return None;
        }
        let metadata = std::fs::metadata(path).ok().filter(|m| m.is_file())?;
        let started_at = id.started_at()?;
        let writing = active.iter().find(|a| a.path == path);
        let summary = match writing {
            Some(active) => Summary {
                duration_ms: active.duration_ms,
                complete: false,
            },
            None => self.summary(path, format, &metadata),
        };
        Some(Recording {
            id,
            path: path.to_path_buf(),
            format,
            started_at,
            duration_ms: summary.duration_ms,
            bytes: metadata.len(),
            complete: summary.complete,
        })
    }

    fn summary(&self, path: &Path, format: &str, metadata: &std::fs::Metadata) -> Summary {
        let stamp = (
            metadata.len(),
            metadata.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        );
        let cached = self
            .summaries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(path)
            .filter(|(len, modified, _)| (*len, *modified) == stamp)
            .map(|(_, _, summary)| *summary);
        if let Some(summary) = cached {
            return summary;
        }
        // Read without the lock: a listing and a retention sweep at once do
        // not wait on each other's file reads.
        let summary = match format {
            "fmp4" => summarize_mp4(path),
            _ => summarize_flv(path),
        }
        .unwrap_or_default();
        self.summaries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(path.to_path_buf(), (stamp.0, stamp.1, summary));
        summary
    }

    /// Deletes a recording that is not being written.
    pub fn delete(&self, recording: &Recording, active: &[Active]) -> Result<(), DeleteError> {
        if active.iter().any(|a| a.path == recording.path) {
            return Err(DeleteError::Writing);
        }
        std::fs::remove_file(&recording.path).map_err(DeleteError::Io)?;
        self.summaries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&recording.path);
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DeleteError {
    #[error("the recording is being written; stop recording first")]
    Writing,
    #[error("{0}")]
    Io(std::io::Error),
}

/// An fMP4 file's length (from its first fragment's start to its last
/// fragment's end, on its first track) and whether it ends with its index.
/// Reads the box headers and the `moof`s only.
fn summarize_mp4(path: &Path) -> Option<Summary> {
    let mut file = File::open(path).ok()?;
    let len = file.metadata().ok()?.len();
    let mut at = 0u64;
    let (mut first, mut end) = (None::<u64>, 0u64);
    let mut complete = false;
    // A moof is small; anything larger is not one Prism wrote.
    const MAX_MOOF: u64 = 4 << 20;
    while at + 8 <= len {
        file.seek(SeekFrom::Start(at)).ok()?;
        let mut header = [0u8; 8];
        file.read_exact(&mut header).ok()?;
        let size = u64::from(u32::from_be_bytes([
            header[0], header[1], header[2], header[3],
        ]));
        if size < 8 || at + size > len {
            break;
        }
        match &header[4..] {
            b"moof" if size <= MAX_MOOF => {
                let mut body = vec![0u8; size as usize];
                body[..8].copy_from_slice(&header);
                file.read_exact(&mut body[8..]).ok()?;
                if let Ok(moof) = Moof::decode(&mut &body[..]) {
                    if let Some(traf) = moof.traf.first() {
                        let start = traf.tfdt.as_ref().map_or(0, |t| t.base_media_decode_time);
                        let duration: u64 = traf
                            .trun
                            .iter()
                            .flat_map(|trun| trun.samples.iter())
                            .map(|s| u64::from(s.duration.unwrap_or(0)))
                            .sum();
                        first.get_or_insert(start);
                        end = end.max(start + duration);
                    }
                }
            }
            b"mfra" => {
                let mut tail = vec![0u8; 16.min(size as usize)];
                file.seek(SeekFrom::Start(at + size - tail.len() as u64))
                    .ok()?;
                file.read_exact(&mut tail).ok()?;
                complete = at + size == len && fmp4::ends_with_index(&tail, len);
            }
            _ => {}
        }
        at += size;
    }
    Some(Summary {
        duration_ms: first.map_or(0, |first| end.saturating_sub(first)),
        complete,
    })
}

/// An FLV file's length: from its first tag to its last (read through the
/// last PreviousTagSize). FLV has no index: a file no one writes is taken
/// as complete.
fn summarize_flv(path: &Path) -> Option<Summary> {
    let mut file = File::open(path).ok()?;
    let len = file.metadata().ok()?.len();
    let timestamp_at = |file: &mut File, at: u64| -> Option<u64> {
        let mut header = [0u8; 11];
        file.seek(SeekFrom::Start(at)).ok()?;
        file.read_exact(&mut header).ok()?;
        Some(u64::from(u32::from_be_bytes([
            header[7], header[4], header[5], header[6],
        ])))
    };
    let first = timestamp_at(&mut file, 13)?;
    let mut size = [0u8; 4];
    file.seek(SeekFrom::Start(len.checked_sub(4)?)).ok()?;
    file.read_exact(&mut size).ok()?;
    let last_at = len.checked_sub(4 + u64::from(u32::from_be_bytes(size)))?;
    let last = timestamp_at(&mut file, last_at)?;
    Some(Summary {
        duration_ms: last.saturating_sub(first),
        complete: true,
    })
}

/// How long and how much the recordings are kept; `None` keeps them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Retention {
    pub max_age: Option<Duration>,
    pub max_bytes: Option<u64>,
}

/// The recordings `retention` deletes at `now`: those older than its age,
/// then the oldest until the rest fit its size. A file being written is
/// never one of them. `recordings` come oldest first (as `list` gives them).
pub fn expired(
    recordings: &[Recording],
    active: &[Active],
    retention: Retention,
    now: SystemTime,
) -> Vec<Recording> {
    let writing = |r: &Recording| active.iter().any(|a| a.path == r.path);
    let mut doomed = Vec::new();
    let mut kept_bytes: u64 = recordings.iter().map(|r| r.bytes).sum();
    for recording in recordings {
        if writing(recording) {
            continue;
        }
        let too_old = retention.max_age.is_some_and(|max| {
            now.duration_since(recording.started_at)
                .is_ok_and(|age| age > max)
        });
        let too_much = retention.max_bytes.is_some_and(|max| kept_bytes > max);
        if too_old || too_much {
            kept_bytes -= recording.bytes;
            doomed.push(recording.clone());
        }
    }
    doomed
}

/// Bytes free for Prism on the file system that holds `path`.
pub fn disk_free(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let name = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `name` is a valid C string and `stat` a valid out-pointer.
    let result = unsafe { libc::statvfs(name.as_ptr(), &mut stat) };
    (result == 0).then(|| stat.f_bavail as u64 * stat.f_frsize as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recording(stream: &str, age_h: u64, bytes: u64, now: SystemTime) -> Recording {
        let started_at = now - Duration::from_secs(age_h * 3600);
        let id = RecordingId::new(stream, started_at, 1).unwrap();
        Recording {
            path: PathBuf::from(format!("/r/{stream}/{id}.mp4")),
            id,
            format: "fmp4",
            started_at,
            duration_ms: 1000,
            bytes,
            complete: true,
        }
    }

    #[test]
    fn retention_deletes_by_age_then_the_oldest_past_the_size() {
        let now = SystemTime::now();
        let all = vec![
            recording("a", 50, 10, now),
            recording("b", 30, 40, now),
            recording("a", 20, 30, now),
            recording("b", 2, 30, now),
            recording("a", 1, 30, now),
        ];
        let ids = |v: Vec<Recording>| v.into_iter().map(|r| r.bytes).collect::<Vec<_>>();
        let by_age = Retention {
            max_age: Some(Duration::from_secs(24 * 3600)),
            max_bytes: None,
        };
        assert_eq!(ids(expired(&all, &[], by_age, now)), [10, 40]);
        let by_size = Retention {
            max_age: None,
            max_bytes: Some(70),
        };
        // 140 bytes: the oldest go until 70 remain.
        assert_eq!(ids(expired(&all, &[], by_size, now)), [10, 40, 30]);
        // A file being written is kept, whatever its age.
        let writing = [Active {
            path: all[0].path.clone(),
            duration_ms: 0,
        }];
        assert_eq!(ids(expired(&all, &writing, by_age, now)), [40]);
        assert!(expired(&all, &[], Retention::default(), now).is_empty());
    }

    #[test]
    fn a_file_cut_short_lists_as_incomplete_with_its_length() {
        use crate::segmenter::tests::{files, show};
        use crate::segmenter::{Format, Segmenter};
        let root = std::env::temp_dir().join(format!("prism-library-{}", std::process::id()));
        let folder = root.join("main");
        std::fs::create_dir_all(&folder).unwrap();
        let mut segmenter = Segmenter::new(Format::Fmp4, 600_000);
        let mut steps = Vec::new();
        for message in show(6, 2000) {
            segmenter.push(&message, &mut steps);
        }
        let cut = files(&steps).remove(0);
        segmenter.finish(&mut steps);
        let whole = files(&steps).remove(0);
        let at = SystemTime::now();
        let cut_id = RecordingId::new("main", at, 1).unwrap();
        let whole_id = RecordingId::new("main", at, 2).unwrap();
        std::fs::write(cut_id.path(&root, "mp4"), &cut).unwrap();
        std::fs::write(whole_id.path(&root, "mp4"), &whole).unwrap();
        std::fs::write(folder.join("notes.txt"), b"not a recording").unwrap();

        let library = Library::default();
        let listed = library.list(&root, Some("main"), &[]);
        assert_eq!(listed.len(), 2);
        let cut = &listed[0];
        assert!(!cut.complete);
        // The last second was still pending: 5 s of the 6 were written.
        assert_eq!(cut.duration_ms, 5000);
        let whole = &listed[1];
        assert!(whole.complete);
        assert_eq!(whole.duration_ms, 6000);
        assert!(library.list(&root, Some("other"), &[]).is_empty());
        library.delete(whole, &[]).unwrap();
        assert_eq!(library.list(&root, None, &[]).len(), 1);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
