//! The changes the control plane takes, as typed commands. The API builds
//! them from its requests (and the scheduler, a SIGHUP or another node can
//! send the same); `Controller::execute` makes each one's edit on the
//! configuration document, keeping the operator's comments and order, and
//! the result is validated, written and applied like any change. Editing
//! TOML is the controller's business: no handler touches the document.

use toml_edit::{value, ArrayOfTables, DocumentMut, Table};

use crate::config::{Config, MAX_STREAMS};
use crate::control_error::ControlError;
use crate::persist;

/// One change to the streams or their destinations.
#[derive(Debug)]
pub enum Command {
    /// A new stream; without `id` one is made up (`stream`, `stream-2`…),
    /// without `key` one is generated (none for a pulled stream).
    AddStream {
        id: Option<String>,
        key: Option<String>,
        pull: Option<String>,
    },
    RemoveStream {
        id: String,
    },
    /// Fields given are set; `Some(None)` removes an optional one.
    PatchStream {
        id: String,
        pull: Option<Option<String>>,
        reconnect_grace_s: Option<u64>,
        standby_file: Option<Option<String>>,
        /// Records the stream (`record`).
        record: Option<bool>,
    },
    /// A new destination of `stream`; without `id` one is made from the
    /// platform's name (`youtube`, `youtube-2`…).
    AddDestination {
        stream: String,
        destination: NewDestination,
    },
    /// Fields given are set; `max_delay_ms: Some(None)` returns the
    /// destination to `[fanout]`'s budget.
    PatchDestination {
        stream: String,
        id: String,
        url: Option<String>,
        key: Option<String>,
        enabled: Option<bool>,
        max_delay_ms: Option<Option<u64>>,
        /// `"default"` or `"all"` (checked by the config parser).
        tracks: Option<String>,
        /// Seconds behind the stream; 0 makes it live again.
        delay_s: Option<u64>,
    },
    RemoveDestination {
        stream: String,
        id: String,
    },
    /// The whole set of the stream's destinations (api.video's restreams):
    /// others are removed, unchanged ones keep their connection.
    ReplaceDestinations {
        stream: String,
        destinations: Vec<DestinationTarget>,
    },
}

/// What a new destination is made of (the config's fields).
#[derive(Debug, Default)]
pub struct NewDestination {
    pub id: Option<String>,
    pub platform: Option<String>,
    pub url: Option<String>,
    pub key: Option<String>,
    pub enabled: Option<bool>,
    pub max_delay_ms: Option<u64>,
    pub tracks: Option<String>,
    pub delay_s: Option<u64>,
}

/// A destination by id, server URL and key.
#[derive(Debug)]
pub struct DestinationTarget {
    pub id: String,
    pub url: String,
    pub key: String,
}

/// What a command made that the caller needs back.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Done,
    /// The new stream's id and key (empty for a pulled stream without one):
    /// the only time the key is handed out.
    StreamAdded {
        id: String,
        key: String,
    },
    DestinationAdded {
        id: String,
    },
}

impl Command {
    /// The stream the command changes, for the event it causes; empty for
    /// a new stream whose id is not chosen yet.
    pub fn stream(&self) -> &str {
        match self {
            Command::AddStream { id, .. } => id.as_deref().unwrap_or(""),
            Command::RemoveStream { id } | Command::PatchStream { id, .. } => id,
            Command::AddDestination { stream, .. }
            | Command::PatchDestination { stream, .. }
            | Command::RemoveDestination { stream, .. }
            | Command::ReplaceDestinations { stream, .. } => stream,
        }
    }

    /// Makes the command's edit on `document`, checked against the running
    /// `config` (ids that exist, limits); the controller then validates the
    /// whole result as it validates a file.
    pub(crate) fn edit(
        self,
        document: &mut DocumentMut,
        config: &Config,
    ) -> Result<Outcome, ControlError> {
        match self {
            Command::AddStream { id, key, pull } => {
                if config.streams.len() >= MAX_STREAMS {
                    return Err(ControlError::Conflict(format!(
                        "this instance already serves {MAX_STREAMS} streams, the most it takes"
                    )));
                }
                let taken = |candidate: &str| config.streams.iter().any(|s| s.id == candidate);
                let id = match id {
                    Some(id) if taken(&id) => {
                        return Err(ControlError::Conflict(format!(
                            "stream {id:?} already exists"
                        )))
                    }
                    Some(id) => id,
                    None => free_stream_id(config),
                };
                let key = match key {
                    Some(key) if config.streams.iter().any(|s| s.key.expose() == key) => {
                        return Err(ControlError::Conflict(
                            "key: another stream already uses this key".into(),
                        ))
                    }
                    Some(key) => key,
                    // A pulled stream takes no publisher: no key unless asked.
                    None if pull.is_some() => String::new(),
                    None => generate_key(),
                };
                let mut table = Table::new();
                table["id"] = value(id.as_str());
                if !key.is_empty() {
                    table["key"] = value(key.as_str());
                }
                persist::set_string(&mut table, "pull", pull.as_deref());
                streams(document)?.push(table);
                Ok(Outcome::StreamAdded { id, key })
            }
            Command::RemoveStream { id } => {
                let streams = streams(document)?;
                let index = persist::position(streams, &id).ok_or_else(|| no_stream(&id))?;
                streams.remove(index);
                Ok(Outcome::Done)
            }
            Command::PatchStream {
                id,
                pull,
                reconnect_grace_s,
                standby_file,
                record,
            } => {
                let streams = streams(document)?;
                let index = persist::position(streams, &id).ok_or_else(|| no_stream(&id))?;
                let table = streams.get_mut(index).ok_or_else(|| no_stream(&id))?;
                if let Some(pull) = &pull {
                    persist::set_string(table, "pull", pull.as_deref());
                }
                if let Some(grace) = reconnect_grace_s {
                    table["reconnect_grace_s"] = value(toml_integer(grace));
                }
                if let Some(file) = &standby_file {
                    persist::set_string(table, "standby_file", file.as_deref());
                }
                if let Some(record) = record {
                    table["record"] = value(record);
                }
                Ok(Outcome::Done)
            }
            Command::AddDestination {
                stream,
                destination: new,
            } => {
                let running = config
                    .streams
                    .iter()
                    .find(|s| s.id == stream)
                    .ok_or_else(|| no_stream(&stream))?;
                let taken =
                    |candidate: &str| running.destinations.iter().any(|d| d.id == candidate);
                let id = match new.id {
                    Some(id) if taken(&id) => {
                        return Err(ControlError::Conflict(format!(
                            "destination {id:?} already exists in stream {stream:?}"
                        )))
                    }
                    Some(id) => id,
                    None => unique_id(new.platform.as_deref().unwrap_or("destination"), taken),
                };
                let mut table = Table::new();
                table["id"] = value(id.as_str());
                persist::set_string(&mut table, "platform", new.platform.as_deref());
                persist::set_string(&mut table, "url", new.url.as_deref());
                persist::set_string(&mut table, "key", new.key.as_deref());
                if let Some(enabled) = new.enabled {
                    table["enabled"] = value(enabled);
                }
                if let Some(ms) = new.max_delay_ms {
                    table["max_delay_ms"] = value(toml_integer(ms));
                }
                persist::set_string(&mut table, "tracks", new.tracks.as_deref());
                if let Some(seconds) = new.delay_s.filter(|&s| s > 0) {
                    table["delay_s"] = value(toml_integer(seconds));
                }
                destinations_of(document, &stream)?.push(table);
                Ok(Outcome::DestinationAdded { id })
            }
            Command::PatchDestination {
                stream,
                id,
                url,
                key,
                enabled,
                max_delay_ms,
                tracks,
                delay_s,
            } => {
                let table = destination(document, &stream, &id)?;
                if let Some(url) = &url {
                    table["url"] = value(url.as_str());
                }
                if let Some(key) = &key {
                    table["key"] = value(key.as_str());
                }
                if let Some(enabled) = enabled {
                    table["enabled"] = value(enabled);
                }
                if let Some(tracks) = &tracks {
                    table["tracks"] = value(tracks.as_str());
                }
                match delay_s {
                    Some(0) => {
                        table.remove("delay_s");
                    }
                    Some(seconds) => table["delay_s"] = value(toml_integer(seconds)),
                    None => {}
                }
                match max_delay_ms {
                    Some(Some(ms)) => table["max_delay_ms"] = value(toml_integer(ms)),
                    Some(None) => {
                        table.remove("max_delay_ms");
                    }
                    None => {}
                }
                Ok(Outcome::Done)
            }
            Command::RemoveDestination { stream, id } => {
                let destinations = destinations_of(document, &stream)?;
                let index = persist::position(destinations, &id)
                    .ok_or_else(|| no_destination(&stream, &id))?;
                destinations.remove(index);
                Ok(Outcome::Done)
            }
            Command::ReplaceDestinations {
                stream,
                destinations: wanted,
            } => {
                let destinations = destinations_of(document, &stream)?;
                let mut index = 0;
                while let Some(table) = destinations.get(index) {
                    let current = table.get("id").and_then(|i| i.as_str()).unwrap_or_default();
                    if wanted.iter().any(|w| w.id == current) {
                        index += 1;
                    } else {
                        destinations.remove(index);
                    }
                }
                for target in &wanted {
                    let table = match persist::position(destinations, &target.id) {
                        Some(i) => destinations.get_mut(i).expect("position is in range"),
                        None => {
                            let mut table = Table::new();
                            table["id"] = value(target.id.as_str());
                            destinations.push(table);
                            destinations
                                .get_mut(destinations.len() - 1)
                                .expect("just pushed")
                        }
                    };
                    // Unchanged values are left alone, so an unchanged entry
                    // keeps its connection.
                    if table.get("url").and_then(|v| v.as_str()) != Some(target.url.as_str()) {
                        table["url"] = value(target.url.as_str());
                    }
                    if table.get("key").and_then(|v| v.as_str()) != Some(target.key.as_str()) {
                        table["key"] = value(target.key.as_str());
                    }
                }
                Ok(Outcome::Done)
            }
        }
    }
}

fn no_stream(id: &str) -> ControlError {
    ControlError::NotFound(format!("no stream {id:?}"))
}

fn no_destination(stream: &str, id: &str) -> ControlError {
    ControlError::NotFound(format!("no destination {id:?} in stream {stream:?}"))
}

fn streams(document: &mut DocumentMut) -> Result<&mut ArrayOfTables, ControlError> {
    persist::streams(document).map_err(|e| ControlError::Invalid(e.to_string()))
}

fn destinations_of<'a>(
    document: &'a mut DocumentMut,
    stream: &str,
) -> Result<&'a mut ArrayOfTables, ControlError> {
    let table = persist::stream(document, stream)
        .map_err(|e| ControlError::Invalid(e.to_string()))?
        .ok_or_else(|| no_stream(stream))?;
    persist::destinations(table).map_err(|e| ControlError::Invalid(e.to_string()))
}

fn destination<'a>(
    document: &'a mut DocumentMut,
    stream: &str,
    id: &str,
) -> Result<&'a mut Table, ControlError> {
    let destinations = destinations_of(document, stream)?;
    let index = persist::position(destinations, id).ok_or_else(|| no_destination(stream, id))?;
    Ok(destinations.get_mut(index).expect("position is in range"))
}

/// A number from a request as a TOML integer (i64): one past i64's range
/// is kept out of range, so the config check reports it as such.
fn toml_integer(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// An id no stream of `config` has: `stream`, `stream-2`...
pub(crate) fn free_stream_id(config: &Config) -> String {
    unique_id("stream", |c| config.streams.iter().any(|s| s.id == c))
}

/// `base`, or `base-2`, `base-3`... whichever is free.
pub(crate) fn unique_id(base: &str, taken: impl Fn(&str) -> bool) -> String {
    if !taken(base) {
        return base.to_string();
    }
    (2..)
        .map(|n| format!("{base}-{n}"))
        .find(|candidate| !taken(candidate))
        .expect("some suffix is free")
}

/// A new stream key: 24 random letters and digits (about 143 bits).
pub(crate) fn generate_key() -> String {
    let mut random = crate::outside::generate_token();
    random.truncate(24);
    format!("live_{random}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const FILE: &str = "# the operator's note\n[rtmp]\nlisten = \"127.0.0.1:1935\"\n\n[[streams]]\nid = \"main\"\nkey = \"main-key-0001\"\n  [[streams.destinations]]\n  id = \"youtube\"\n  url = \"rtmp://a.example/live\"\n  key = \"k1\"\n";

    fn run(command: Command) -> (Result<Outcome, ControlError>, String) {
        let config = Config::parse(Path::new("prism.toml"), FILE).unwrap();
        let mut document: DocumentMut = FILE.parse().unwrap();
        let outcome = command.edit(&mut document, &config);
        (outcome, document.to_string())
    }

    #[test]
    fn a_destination_without_an_id_gets_a_free_one_and_the_file_keeps_its_comments() {
        let (outcome, text) = run(Command::AddDestination {
            stream: "main".into(),
            destination: NewDestination {
                platform: Some("youtube".into()),
                key: Some("k2".into()),
                ..NewDestination::default()
            },
        });
        assert_eq!(
            outcome.unwrap(),
            Outcome::DestinationAdded {
                id: "youtube-2".into()
            }
        );
        assert!(text.starts_with("# the operator's note\n"), "{text}");
        assert!(text.contains("id = \"youtube-2\""), "{text}");
    }

    #[test]
    fn what_is_not_there_is_not_found_and_what_is_taken_conflicts() {
        let (outcome, _) = run(Command::RemoveDestination {
            stream: "main".into(),
            id: "twitch".into(),
        });
        assert!(matches!(outcome, Err(ControlError::NotFound(_))));
        let (outcome, _) = run(Command::PatchStream {
            id: "other".into(),
            pull: None,
            reconnect_grace_s: Some(5),
            standby_file: None,
            record: None,
        });
        assert!(matches!(outcome, Err(ControlError::NotFound(_))));
        let (outcome, _) = run(Command::AddStream {
            id: Some("main".into()),
            key: None,
            pull: None,
        });
        assert!(matches!(outcome, Err(ControlError::Conflict(_))));
    }

    #[test]
    fn replacing_the_destinations_keeps_an_unchanged_one_untouched() {
        let (outcome, text) = run(Command::ReplaceDestinations {
            stream: "main".into(),
            destinations: vec![
                DestinationTarget {
                    id: "youtube".into(),
                    url: "rtmp://a.example/live".into(),
                    key: "k1".into(),
                },
                DestinationTarget {
                    id: "twitch".into(),
                    url: "rtmp://t.example/app".into(),
                    key: "tk".into(),
                },
            ],
        });
        assert_eq!(outcome.unwrap(), Outcome::Done);
        assert!(
            text.contains(
                "  id = \"youtube\"\n  url = \"rtmp://a.example/live\"\n  key = \"k1\"\n"
            ),
            "{text}"
        );
        assert!(text.contains("id = \"twitch\""), "{text}");
    }

    #[test]
    fn unique_ids_take_the_first_free_suffix() {
        assert_eq!(
            unique_id("youtube", |c| c == "youtube" || c == "youtube-2"),
            "youtube-3"
        );
        let (a, b) = (generate_key(), generate_key());
        assert_ne!(a, b);
        assert!(a.starts_with("live_") && a.len() == 29);
    }
}
