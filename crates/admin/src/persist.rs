//! Writing the config file back: edits go through `toml_edit`, so the
//! operator's comments, order and formatting survive; the file is replaced
//! atomically, so a crash at any moment leaves the old file or the new one,
//! never a torn or empty one.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use toml_edit::{value, ArrayOfTables, DocumentMut, Item, Table};

/// Writes `text` to a temporary file beside `path`, flushes it to disk, renames
/// it over `path`, then flushes the directory so the rename itself is durable.
/// What Prism keeps beside its config file: `NAME.SUFFIX` for
/// `NAME.toml` (`prism.schedule.json`, `prism.webhooks`, …).
pub fn beside_config(config: &Path, suffix: &str) -> PathBuf {
    let stem = config
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("prism");
    config.with_file_name(format!("{stem}.{suffix}"))
}

pub fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("prism.toml");
    let temp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut file = match create_private(&temp) {
            // Left by a crash of an earlier process with the same pid.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                fs::remove_file(&temp)?;
                create_private(&temp)?
            }
            other => other?,
        };
        // Then the original's permissions (an operator may have chosen
        // 0640 for a group that reads it).
        if let Ok(metadata) = fs::metadata(path) {
            file.set_permissions(metadata.permissions())?;
        }
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        fs::rename(&temp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

/// Creates `path` readable by its owner only (mode 0600, whatever the
/// umask), and only if nothing is there: the file holds stream keys from
/// its first byte, and an existing file or symlink is never followed.
fn create_private(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

/// The file writes an array the API edits in another TOML form (an inline
/// array instead of `[[…]]` tables): what to write instead is in the message.
#[derive(Debug, thiserror::Error)]
#[error("the config writes `{0}` in a form the API cannot edit; use {1} tables")]
pub struct UneditableForm(&'static str, &'static str);

/// The `[[streams]]` array, created when the file has none yet.
pub fn streams(document: &mut DocumentMut) -> Result<&mut ArrayOfTables, UneditableForm> {
    if document.get("streams").is_none() {
        document["streams"] = Item::ArrayOfTables(ArrayOfTables::new());
    }
    document["streams"]
        .as_array_of_tables_mut()
        .ok_or(UneditableForm("streams", "[[streams]]"))
}

/// The `[[streams]]` table whose `id` is `id`.
pub fn stream<'a>(
    document: &'a mut DocumentMut,
    id: &str,
) -> Result<Option<&'a mut Table>, UneditableForm> {
    Ok(streams(document)?
        .iter_mut()
        .find(|t| t.get("id").and_then(Item::as_str) == Some(id)))
}

/// A stream's `[[streams.destinations]]` array, created when missing.
pub fn destinations(stream: &mut Table) -> Result<&mut ArrayOfTables, UneditableForm> {
    if stream.get("destinations").is_none() {
        stream.insert("destinations", Item::ArrayOfTables(ArrayOfTables::new()));
    }
    stream["destinations"]
        .as_array_of_tables_mut()
        .ok_or(UneditableForm("destinations", "[[streams.destinations]]"))
}

pub fn position(array: &ArrayOfTables, id: &str) -> Option<usize> {
    array
        .iter()
        .position(|t| t.get("id").and_then(Item::as_str) == Some(id))
}

/// Sets or removes (`None`) a string field.
pub fn set_string(table: &mut Table, field: &str, text: Option<&str>) {
    match text {
        Some(text) => {
            table[field] = value(text);
        }
        None => {
            table.remove(field);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_keep_comments_and_order() {
        let text = "# operator's note\n[rtmp]\nlisten = \"0.0.0.0:1935\" # port\n\n[[streams]]\nid = \"main\" # the show\nkey = \"k\"\n";
        let mut document: DocumentMut = text.parse().unwrap();
        let main = stream(&mut document, "main").unwrap().unwrap();
        let mut table = Table::new();
        set_string(&mut table, "id", Some("yt"));
        set_string(&mut table, "url", Some("rtmp://a/b"));
        destinations(main).unwrap().push(table);
        let out = document.to_string();
        assert!(
            out.starts_with("# operator's note\n[rtmp]\nlisten = \"0.0.0.0:1935\" # port\n"),
            "{out}"
        );
        assert!(out.contains("id = \"main\" # the show"), "{out}");
        assert!(
            out.contains("[[streams.destinations]]\nid = \"yt\"\nurl = \"rtmp://a/b\""),
            "{out}"
        );
    }

    #[test]
    fn the_temporary_file_is_private_from_its_creation() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("prism-private-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let temp = dir.join(".prism.toml.tmp");
        let file = create_private(&temp).unwrap();
        assert_eq!(file.metadata().unwrap().permissions().mode() & 0o777, 0o600);
        // An existing file (or a planted symlink) is not opened.
        assert!(create_private(&temp).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn atomic_write_replaces_the_file_and_keeps_its_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("prism-persist-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("prism.toml");
        fs::write(&path, "old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        write_atomically(&path, "new = 1\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "new = 1\n");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let leftovers: Vec<_> = fs::read_dir(&dir).unwrap().filter_map(|e| e.ok()).collect();
        assert_eq!(leftovers.len(), 1, "temporary file left behind");
        fs::remove_dir_all(&dir).unwrap();
    }
}
