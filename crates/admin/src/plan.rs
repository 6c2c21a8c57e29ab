//! What a configuration change does to the running streams, decided
//! without doing it: `plan(old, new)` lists the steps, in the order they
//! must run; the controller's `apply` carries them out (tasks, sockets).
//! Pure, so every rule (what restarts a destination, what only toggles it)
//! is tested without a runtime.

use crate::config::{Config, DestinationEntry, StreamConfig};

/// One step from the running configuration to the next.
#[derive(Debug)]
pub enum Change<'a> {
    /// The stream is gone: its publish ends, its pulls and destinations stop.
    RemoveStream { stream: &'a StreamConfig },
    /// A new stream, with its destinations and pulls.
    AddStream { stream: &'a StreamConfig },
    /// A kept stream's grace, failover and standby settings (applied to the
    /// running hub; cheap, so always).
    UpdateStreamSettings { stream: &'a StreamConfig },
    /// Its `pull` or `backup_pull` changed: the pulls restart.
    RestartPull { stream: &'a StreamConfig },
    /// Its key or SRT passphrase changed: publishers find it by the new one.
    Rekey {
        stream: &'a StreamConfig,
        old: &'a StreamConfig,
    },
    RemoveDestination {
        stream: &'a str,
        destination: &'a str,
    },
    AddDestination {
        stream: &'a str,
        destination: &'a DestinationEntry,
    },
    /// What the connection is made with changed (URL, key, CA, timeouts):
    /// the old session ends before the new one starts (two publishes with
    /// one key would make the platform refuse the second).
    ReplaceDestination {
        stream: &'a str,
        destination: &'a DestinationEntry,
    },
    /// Only `enabled` changed: the running destination is told.
    SetEnabled {
        stream: &'a str,
        destination: &'a str,
        enabled: bool,
    },
    /// Recording was switched off, or `[record]` changed: the recorder
    /// completes its file and stops.
    StopRecording { stream: &'a StreamConfig },
    /// Recording was switched on, or `[record]` changed: a recorder starts
    /// (its first file at the next keyframe).
    StartRecording { stream: &'a StreamConfig },
}

/// The steps from `old` to `new`: removed streams first, then each stream
/// of `new` in order (its settings, pulls, key, removed destinations, then
/// added, replaced and toggled ones).
pub fn plan<'a>(old: &'a Config, new: &'a Config) -> Vec<Change<'a>> {
    let mut changes = Vec::new();
    for stream in &old.streams {
        if !new.streams.iter().any(|s| s.id == stream.id) {
            changes.push(Change::RemoveStream { stream });
        }
    }
    for stream in &new.streams {
        let Some(before) = old.streams.iter().find(|s| s.id == stream.id) else {
            changes.push(Change::AddStream { stream });
            continue;
        };
        changes.push(Change::UpdateStreamSettings { stream });
        if before.pull != stream.pull || before.backup_pull != stream.backup_pull {
            changes.push(Change::RestartPull { stream });
        }
        if before.key != stream.key || before.srt_passphrase != stream.srt_passphrase {
            changes.push(Change::Rekey {
                stream,
                old: before,
            });
        }
        let record_changed = old.record != new.record;
        if before.record && (!stream.record || record_changed) {
            changes.push(Change::StopRecording { stream });
        }
        if stream.record && (!before.record || record_changed) {
            changes.push(Change::StartRecording { stream });
        }
        let id = stream.id.as_str();
        for destination in &before.destinations {
            if !stream.destinations.iter().any(|d| d.id == destination.id) {
                changes.push(Change::RemoveDestination {
                    stream: id,
                    destination: &destination.id,
                });
            }
        }
        for destination in &stream.destinations {
            match before.destinations.iter().find(|d| d.id == destination.id) {
                None => changes.push(Change::AddDestination {
                    stream: id,
                    destination,
                }),
                Some(was) if connects_differently(was, destination) => {
                    changes.push(Change::ReplaceDestination {
                        stream: id,
                        destination,
                    })
                }
                Some(was) if was.enabled != destination.enabled => {
                    changes.push(Change::SetEnabled {
                        stream: id,
                        destination: &destination.id,
                        enabled: destination.enabled,
                    })
                }
                Some(_) => {}
            }
        }
    }
    changes
}

/// Whether the destination's connection is made differently (so a running
/// session must end and a new one start).
fn connects_differently(was: &DestinationEntry, now: &DestinationEntry) -> bool {
    was.url != now.url
        || was.ca_file != now.ca_file
        || was.ack_timeout != now.ack_timeout
        || was.max_delay != now.max_delay
        || was.tracks != now.tracks
        || was.delay != now.delay
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(streams: &str) -> Config {
        let text = format!("[rtmp]\nlisten = \"127.0.0.1:1935\"\n{streams}");
        Config::parse(Path::new("prism.toml"), &text).unwrap()
    }

    const BASE: &str = r#"
[[streams]]
id = "main"
key = "main-key-0001"
  [[streams.destinations]]
  id = "a"
  url = "rtmp://a.example/live/key-a"
  [[streams.destinations]]
  id = "b"
  url = "rtmp://b.example/live/key-b"

[[streams]]
id = "other"
key = "other-key-0002"
"#;

    /// The changes as short words, for comparing whole plans.
    fn words(changes: &[Change]) -> Vec<String> {
        changes
            .iter()
            .map(|change| match change {
                Change::RemoveStream { stream } => format!("remove {}", stream.id),
                Change::AddStream { stream } => format!("add {}", stream.id),
                Change::UpdateStreamSettings { stream } => format!("settings {}", stream.id),
                Change::RestartPull { stream } => format!("pull {}", stream.id),
                Change::Rekey { stream, .. } => format!("rekey {}", stream.id),
                Change::RemoveDestination {
                    stream,
                    destination,
                } => format!("remove {stream}/{destination}"),
                Change::AddDestination {
                    stream,
                    destination,
                } => format!("add {stream}/{}", destination.id),
                Change::ReplaceDestination {
                    stream,
                    destination,
                } => format!("replace {stream}/{}", destination.id),
                Change::SetEnabled {
                    stream,
                    destination,
                    enabled,
                } => format!("enable {stream}/{destination} {enabled}"),
                Change::StopRecording { stream } => format!("stop recording {}", stream.id),
                Change::StartRecording { stream } => format!("record {}", stream.id),
            })
            .collect()
    }

    #[test]
    fn the_same_configuration_only_refreshes_settings() {
        let (old, new) = (config(BASE), config(BASE));
        assert_eq!(
            words(&plan(&old, &new)),
            ["settings main", "settings other"]
        );
    }

    #[test]
    fn a_toggle_is_told_and_a_new_url_or_key_restarts_the_destination() {
        let old = config(BASE);
        let new = config(
            &BASE
                .replace(
                    "url = \"rtmp://a.example/live/key-a\"",
                    "url = \"rtmp://a.example/live/key-a\"\n  enabled = false",
                )
                .replace("key-b", "key-b2"),
        );
        assert_eq!(
            words(&plan(&old, &new)),
            [
                "settings main",
                "enable main/a false",
                "replace main/b",
                "settings other"
            ]
        );
    }

    #[test]
    fn removed_streams_go_first_and_a_kept_stream_changes_in_order() {
        let old = config(BASE);
        let new = config(
            r#"
[[streams]]
id = "main"
key = "main-key-rotated"
pull = "rtmp://origin.example/live/cam"
  [[streams.destinations]]
  id = "b"
  url = "rtmp://b.example/live/key-b"
  [[streams.destinations]]
  id = "c"
  url = "rtmp://c.example/live/key-c"

[[streams]]
id = "new"
key = "new-key-0003"
"#,
        );
        assert_eq!(
            words(&plan(&old, &new)),
            [
                "remove other",
                "settings main",
                "pull main",
                "rekey main",
                "remove main/a",
                "add main/c",
                "add new",
            ]
        );
    }

    #[test]
    fn a_new_latency_budget_or_ca_restarts_the_destination() {
        let old = config(BASE);
        let new = config(&BASE.replace(
            "url = \"rtmp://b.example/live/key-b\"",
            "url = \"rtmp://b.example/live/key-b\"\n  max_delay_ms = 250",
        ));
        assert_eq!(
            words(&plan(&old, &new)),
            ["settings main", "replace main/b", "settings other"]
        );
    }

    #[test]
    fn recording_starts_and_stops_with_its_switch_and_restarts_with_its_settings() {
        let off = config(BASE);
        let on = config(&BASE.replace(
            "key = \"main-key-0001\"",
            "key = \"main-key-0001\"\nrecord = true",
        ));
        assert_eq!(
            words(&plan(&off, &on)),
            ["settings main", "record main", "settings other"]
        );
        assert_eq!(
            words(&plan(&on, &off)),
            ["settings main", "stop recording main", "settings other"]
        );
        assert_eq!(words(&plan(&on, &on)), ["settings main", "settings other"]);
        let longer = config(&format!(
            "[record]\nsegment_s = 60\n{}",
            BASE.replace(
                "key = \"main-key-0001\"",
                "key = \"main-key-0001\"\nrecord = true"
            )
        ));
        assert_eq!(
            words(&plan(&on, &longer)),
            [
                "settings main",
                "stop recording main",
                "record main",
                "settings other"
            ]
        );
    }
}
