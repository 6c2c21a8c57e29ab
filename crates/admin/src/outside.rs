//! What a configuration names outside its own text: the files it points at
//! (a token file, standby clips, CA files), the environment and this
//! machine's name. Parsing asks for them through `Outside`, so the parse
//! and its validation are pure given the answers: the daemon reads this
//! machine (`System`), while tests and the fuzz target answer from nothing
//! (`Hermetic`) and touch no file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use prism_media::config_file::{read_config_file, ConfigFileError};
use prism_media::standby::StandbyClip;

/// Why something a configuration names could not be used.
#[derive(Debug, thiserror::Error)]
pub enum OutsideError {
    /// A hermetic parse reads no file.
    #[error("{} is not read here (hermetic parse)", .0.display())]
    NotRead(PathBuf),
    #[error(transparent)]
    File(#[from] ConfigFileError),
    #[error("cannot read {}: {source}", path.display())]
    Metadata {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Clip {
        path: PathBuf,
        source: prism_media::standby::StandbyError,
    },
    #[error(transparent)]
    CaFile(#[from] prism_fanout::transport::CaFileError),
}

/// The answers a configuration's parse needs from outside its text.
pub trait Outside {
    /// A regular file's bytes, at most `max_bytes`.
    fn read_file(&self, path: &Path, max_bytes: u64) -> Result<Vec<u8>, OutsideError>;

    /// An environment variable.
    fn env(&self, name: &str) -> Option<String>;

    /// This machine's host name.
    fn host_name(&self) -> Option<String>;

    /// The standby clip in `path` (FLV or MP4, at most `max_bytes`), decoded.
    fn standby_clip(&self, path: &Path, max_bytes: u64) -> Result<Arc<StandbyClip>, OutsideError>;

    /// Whether `path` holds CA certificates a TLS client can use.
    fn check_ca_file(&self, path: &Path) -> Result<(), OutsideError>;

    /// The console on a first run: when there is no admin token file at
    /// `path`, makes one (0600, a new random token) and returns its token;
    /// `None` when the file exists (it is read as usual).
    fn make_token_file(&self, path: &Path) -> Result<Option<String>, OutsideError>;
}

/// A new admin token: 40 random letters and digits (about 238 bits).
pub fn generate_token() -> String {
    use rand::distributions::Alphanumeric;
    use rand::Rng;
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(40)
        .map(char::from)
        .collect()
}

/// This machine: its files, its environment, its host name.
pub struct System;

impl Outside for System {
    fn read_file(&self, path: &Path, max_bytes: u64) -> Result<Vec<u8>, OutsideError> {
        Ok(read_config_file(path, max_bytes, "")?.0)
    }

    fn env(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }

    fn host_name(&self) -> Option<String> {
        let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
        Some(name.trim().to_string())
    }

    /// A clip already read is reused while its file is unchanged, so API
    /// changes, which re-validate the whole config, do not read it again.
    fn standby_clip(&self, path: &Path, max_bytes: u64) -> Result<Arc<StandbyClip>, OutsideError> {
        type Cache = HashMap<PathBuf, (SystemTime, u64, Arc<StandbyClip>)>;
        static CACHE: OnceLock<Mutex<Cache>> = OnceLock::new();
        let unreadable = |source| OutsideError::Metadata {
            path: path.to_path_buf(),
            source,
        };
        // Only a regular file is looked at (a FIFO or device named here is
        // refused before anything blocks); the cache is keyed on its stamp.
        let metadata = std::fs::metadata(path).map_err(unreadable)?;
        if !metadata.is_file() {
            return Err(ConfigFileError::not_regular(path, metadata.file_type()).into());
        }
        let stamp = (metadata.modified().map_err(unreadable)?, metadata.len());
        let cache = CACHE.get_or_init(Default::default);
        if let Some((modified, len, clip)) =
            cache.lock().unwrap_or_else(|e| e.into_inner()).get(path)
        {
            if (*modified, *len) == stamp {
                return Ok(Arc::clone(clip));
            }
        }
        let (bytes, _) = read_config_file(path, max_bytes, " (max_standby_mib)")?;
        let clip = StandbyClip::from_file(&bytes::Bytes::from(bytes)).map_err(|source| {
            OutsideError::Clip {
                path: path.to_path_buf(),
                source,
            }
        })?;
        let clip = Arc::new(clip);
        cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(path.to_path_buf(), (stamp.0, stamp.1, Arc::clone(&clip)));
        Ok(clip)
    }

    fn check_ca_file(&self, path: &Path) -> Result<(), OutsideError> {
        prism_fanout::transport::tls_config(Some(path))?;
        Ok(())
    }

    fn make_token_file(&self, path: &Path) -> Result<Option<String>, OutsideError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let failed = |source| OutsideError::Metadata {
            path: path.to_path_buf(),
            source,
        };
        // Created whole or not at all, never readable by others.
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path);
        let mut file = match file {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(None),
            Err(e) => return Err(failed(e)),
        };
        let token = generate_token();
        file.write_all(format!("{token}\n").as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(failed)?;
        Ok(Some(token))
    }
}

/// This machine, for `prism --check`: read, never written. A missing admin
/// token file, which a start would make, is checked as if made.
pub struct Checking;

impl Outside for Checking {
    fn read_file(&self, path: &Path, max_bytes: u64) -> Result<Vec<u8>, OutsideError> {
        System.read_file(path, max_bytes)
    }

    fn env(&self, name: &str) -> Option<String> {
        System.env(name)
    }

    fn host_name(&self) -> Option<String> {
        System.host_name()
    }

    fn standby_clip(&self, path: &Path, max_bytes: u64) -> Result<Arc<StandbyClip>, OutsideError> {
        System.standby_clip(path, max_bytes)
    }

    fn check_ca_file(&self, path: &Path) -> Result<(), OutsideError> {
        System.check_ca_file(path)
    }

    fn make_token_file(&self, path: &Path) -> Result<Option<String>, OutsideError> {
        Ok((!path.exists()).then(generate_token))
    }
}

/// Nothing outside the text: every named file is missing, the environment
/// empty, the host nameless. Parsing with it reads no file and no variable.
pub struct Hermetic;

impl Outside for Hermetic {
    fn read_file(&self, path: &Path, _max_bytes: u64) -> Result<Vec<u8>, OutsideError> {
        Err(OutsideError::NotRead(path.to_path_buf()))
    }

    fn env(&self, _name: &str) -> Option<String> {
        None
    }

    fn host_name(&self) -> Option<String> {
        None
    }

    fn standby_clip(&self, path: &Path, _max_bytes: u64) -> Result<Arc<StandbyClip>, OutsideError> {
        Err(OutsideError::NotRead(path.to_path_buf()))
    }

    fn check_ca_file(&self, path: &Path) -> Result<(), OutsideError> {
        Err(OutsideError::NotRead(path.to_path_buf()))
    }

    fn make_token_file(&self, _path: &Path) -> Result<Option<String>, OutsideError> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    /// The same text, parsed against this machine and against nothing: the
    /// token file it names is read only by the first.
    #[test]
    fn a_hermetic_parse_reads_no_file_the_config_names() {
        let dir = std::env::temp_dir().join(format!("prism-outside-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("admin.token"), "a-token-of-enough-length-0123\n").unwrap();
        let path = dir.join("prism.toml");
        let text = "[rtmp]\nlisten = \"127.0.0.1:1935\"\n\n[admin]\nlisten = \"127.0.0.1:8080\"\ntoken_file = \"admin.token\"\n";
        let read = Config::parse_in(&path, text, &System);
        let hermetic = Config::parse_in(&path, text, &Hermetic);
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(read.is_ok(), "{:?}", read.err());
        let error = hermetic.unwrap_err().to_string();
        assert!(
            error.contains("admin.token_file") && error.contains("hermetic"),
            "{error}"
        );
    }
}
