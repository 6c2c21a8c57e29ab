//! Reading a file that configuration names (a standby clip, a CA file, a
//! token file): the name may come from the TOML file, the admin API or a
//! cluster's shared document in Redis, so whoever wrote it may have named a
//! FIFO (an open or read that never returns), a device (`/dev/zero`: endless
//! bytes) or a huge file. Only a regular file within its size limit is read;
//! the open never blocks (`O_NONBLOCK`), the type and size are checked on the
//! opened descriptor (`fstat`), and the read stops at the limit even if the
//! file grows meanwhile.

use std::fs::{FileType, Metadata, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// Why a named file was not read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is {kind}, not a regular file")]
    NotRegular { path: String, kind: &'static str },
    #[error("{path} is {size} bytes, over the limit of {limit} bytes{hint}")]
    TooLarge {
        path: String,
        size: u64,
        limit: u64,
        /// Which setting raises the limit, if one does.
        hint: &'static str,
    },
}

impl ConfigFileError {
    /// The refusal of `path`, which is of type `kind` and not a regular file.
    pub fn not_regular(path: &Path, kind: FileType) -> Self {
        let kind = if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_char_device() {
            "a character device"
        } else if kind.is_block_device() {
            "a block device"
        } else if kind.is_socket() {
            "a socket"
        } else if kind.is_dir() {
            "a directory"
        } else {
            "a special file"
        };
        ConfigFileError::NotRegular {
            path: path.display().to_string(),
            kind,
        }
    }
}

/// The bytes of the regular file at `path`, at most `limit` of them, and its
/// metadata as read from the opened file. `hint` names the setting that
/// raises the limit (e.g. `" (max_standby_mib)"`), or is empty.
pub fn read_config_file(
    path: &Path,
    limit: u64,
    hint: &'static str,
) -> Result<(Vec<u8>, Metadata), ConfigFileError> {
    let shown = || path.display().to_string();
    let io = |source| ConfigFileError::Io {
        path: shown(),
        source,
    };
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY)
        .open(path)
        .map_err(io)?;
    let metadata = file.metadata().map_err(io)?;
    if !metadata.is_file() {
        return Err(ConfigFileError::not_regular(path, metadata.file_type()));
    }
    let too_large = |size| ConfigFileError::TooLarge {
        path: shown(),
        size,
        limit,
        hint,
    };
    if metadata.len() > limit {
        return Err(too_large(metadata.len()));
    }
    // A regular file never answers `WouldBlock`, O_NONBLOCK or not.
    let mut bytes = Vec::with_capacity(metadata.len() as usize);
    (&file)
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > limit {
        return Err(too_large(bytes.len() as u64));
    }
    Ok((bytes, metadata))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("prism-config-file-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_regular_file_within_the_limit_is_read() {
        let dir = scratch("regular");
        let path = dir.join("clip.mp4");
        std::fs::write(&path, b"hello").unwrap();
        let (bytes, metadata) = read_config_file(&path, 5, "").unwrap();
        assert_eq!(bytes, b"hello");
        assert_eq!(metadata.len(), 5);
        let error = read_config_file(&path, 4, " (max_standby_mib)").unwrap_err();
        assert!(matches!(
            error,
            ConfigFileError::TooLarge {
                size: 5,
                limit: 4,
                ..
            }
        ));
        assert!(error.to_string().ends_with("(max_standby_mib)"), "{error}");
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = scratch("fifo");
        let path = dir.join("fifo");
        let name = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
        let started = Instant::now();
        let error = read_config_file(&path, 1 << 20, "").unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(1));
        assert!(error.to_string().contains("a FIFO"), "{error}");
    }

    #[test]
    fn devices_and_directories_are_refused() {
        let error = read_config_file(Path::new("/dev/zero"), 1 << 20, "").unwrap_err();
        assert!(error.to_string().contains("a character device"), "{error}");
        let error = read_config_file(Path::new("/tmp"), 1 << 20, "").unwrap_err();
        assert!(
            error.to_string().contains("a directory")
                || matches!(error, ConfigFileError::Io { .. }),
            "{error}"
        );
        assert!(matches!(
            read_config_file(Path::new("/nonexistent/file"), 1, "").unwrap_err(),
            ConfigFileError::Io { .. }
        ));
    }
}
