//! A recording's file on disk: created beside its stream's other files
//! (0640), appended fragment by fragment, each made durable before the
//! next (`fdatasync`), so a crash or a power cut keeps every fragment
//! written. Blocking: the recorder calls it off the async threads.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, IoSlice, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use bytes::Bytes;

use crate::files::RecordingId;

/// Why writing a recording failed, as an operator acts on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The disk (or the quota) is full.
    DiskFull,
    /// The file system is mounted read-only.
    ReadOnly,
    /// Prism may not write there.
    Permission,
    /// Any other I/O error.
    Io,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 4] = [Self::DiskFull, Self::ReadOnly, Self::Permission, Self::Io];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::DiskFull => "disk_full",
            Self::ReadOnly => "read_only",
            Self::Permission => "permission",
            Self::Io => "io",
        }
    }

    fn of(error: &io::Error) -> Self {
        match error.raw_os_error() {
            Some(libc::ENOSPC | libc::EDQUOT) => Self::DiskFull,
            Some(libc::EROFS) => Self::ReadOnly,
            Some(libc::EACCES | libc::EPERM) => Self::Permission,
            _ => Self::Io,
        }
    }
}

/// A failed write, with its kind and the file it was for.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct WriteError {
    pub kind: ErrorKind,
    pub path: PathBuf,
    pub message: String,
}

impl WriteError {
    fn new(path: &Path, error: io::Error) -> Self {
        Self {
            kind: ErrorKind::of(&error),
            path: path.to_path_buf(),
            message: error.to_string(),
        }
    }
}

/// An open recording file.
#[derive(Debug)]
pub struct SegmentFile {
    file: File,
    pub id: RecordingId,
    pub path: PathBuf,
    pub bytes: u64,
}

impl SegmentFile {
    /// Creates the file of a recording of `stream` starting `started`,
    /// named after that moment (a later free name if one is taken), and
    /// makes its name durable.
    pub fn create(
        root: &Path,
        stream: &str,
        extension: &str,
        started: SystemTime,
    ) -> Result<Self, WriteError> {
        let folder = root.join(stream);
        DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(&folder)
            .map_err(|e| WriteError::new(&folder, e))?;
        for attempt in 1..=100 {
            let id = RecordingId::new(stream, started, attempt).ok_or_else(|| WriteError {
                kind: ErrorKind::Io,
                path: folder.clone(),
                message: format!("{stream:?} cannot name a file"),
            })?;
            let path = id.path(root, extension);
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o640)
                .open(&path)
            {
                Ok(file) => {
                    File::open(&folder)
                        .and_then(|dir| dir.sync_all())
                        .map_err(|e| WriteError::new(&folder, e))?;
                    return Ok(Self {
                        file,
                        id,
                        path,
                        bytes: 0,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(WriteError::new(&path, e)),
            }
        }
        Err(WriteError {
            kind: ErrorKind::Io,
            path: folder,
            message: "100 recordings started in one second".into(),
        })
    }

    /// Appends `parts` in order and makes them durable.
    pub fn append(&mut self, parts: &[Bytes]) -> Result<(), WriteError> {
        self.write(parts)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| WriteError::new(&self.path, e))
    }

    /// Writes the trailer, if any, and closes the file.
    pub fn finish(mut self, trailer: Option<&Bytes>) -> Result<(), WriteError> {
        if let Some(trailer) = trailer {
            self.write(std::slice::from_ref(trailer))
                .map_err(|e| WriteError::new(&self.path, e))?;
        }
        self.file
            .sync_all()
            .map_err(|e| WriteError::new(&self.path, e))
    }

    fn write(&mut self, parts: &[Bytes]) -> io::Result<()> {
        let mut slices: Vec<IoSlice<'_>> = parts
            .iter()
            .filter(|p| !p.is_empty())
            .map(|p| IoSlice::new(p))
            .collect();
        let mut slices = &mut slices[..];
        while !slices.is_empty() {
            let written = self.file.write_vectored(slices)?;
            if written == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            self.bytes += written as u64;
            IoSlice::advance_slices(&mut slices, written);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn files_are_created_0640_under_their_stream_with_a_free_name() {
        let root = std::env::temp_dir().join(format!("prism-writer-{}", std::process::id()));
        let at = SystemTime::now();
        let mut first = SegmentFile::create(&root, "main", "mp4", at).unwrap();
        let second = SegmentFile::create(&root, "main", "mp4", at).unwrap();
        assert_ne!(first.path, second.path);
        assert!(second.id.as_str().ends_with("-2"));
        let mode = std::fs::metadata(&first.path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o640 & !umask_bits());
        first
            .append(&[
                Bytes::from_static(b"ab"),
                Bytes::new(),
                Bytes::from_static(b"cd"),
            ])
            .unwrap();
        assert_eq!(first.bytes, 4);
        let path = first.path.clone();
        first.finish(Some(&Bytes::from_static(b"!"))).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"abcd!");
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// What the process's umask takes away (read without changing it).
    fn umask_bits() -> u32 {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Umask:"))
                    .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
            })
            .unwrap_or(0o022)
    }

    #[test]
    fn errors_say_what_to_fix() {
        let error = |code| ErrorKind::of(&io::Error::from_raw_os_error(code));
        assert_eq!(error(libc::ENOSPC), ErrorKind::DiskFull);
        assert_eq!(error(libc::EROFS), ErrorKind::ReadOnly);
        assert_eq!(error(libc::EACCES), ErrorKind::Permission);
        assert_eq!(error(libc::EIO), ErrorKind::Io);
    }
}
