//! One booking of the schedule: a stream's show from `starts_at` to
//! `ends_at`, the destinations it takes live, what plays (an encoder, or
//! files), and what became of it.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// Where an entry is in its life. Only ever moves forward: upcoming, then
/// in progress, then one of the three ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Upcoming,
    InProgress,
    Completed,
    Canceled,
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Upcoming => "upcoming",
            Status::InProgress => "in-progress",
            Status::Completed => "completed",
            Status::Canceled => "canceled",
            Status::Failed => "failed",
        }
    }

    /// The entry is over, one way or another.
    pub fn is_final(self) -> bool {
        matches!(self, Status::Completed | Status::Canceled | Status::Failed)
    }

    pub fn parse(text: &str) -> Option<Status> {
        [
            Status::Upcoming,
            Status::InProgress,
            Status::Completed,
            Status::Canceled,
            Status::Failed,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}

/// Files played into the stream instead of an encoder's publish.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSource {
    /// One file, or a playlist played in order.
    pub files: Vec<String>,
    /// Played again from the first when the last ends.
    #[serde(default)]
    pub repeat: bool,
}

/// What one destination sent during the entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub destination: String,
    pub bytes: u64,
    pub dropped_frames: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub id: String,
    pub stream: String,
    pub title: String,
    #[serde(with = "rfc3339")]
    pub starts_at: SystemTime,
    #[serde(with = "rfc3339")]
    pub ends_at: SystemTime,
    /// The stream's destinations it takes live; `None` covers all of them.
    pub destinations: Option<Vec<String>>,
    pub source: Option<FileSource>,
    /// The entry's own stream key (an event key), if it has one: it
    /// publishes to the stream from `KEY_OPENS_BEFORE` before `starts_at`
    /// to `ends_at`. Kept in the state file (written 0600), shown once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub status: Status,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    #[serde(with = "rfc3339::option", default)]
    pub started_at: Option<SystemTime>,
    #[serde(with = "rfc3339::option", default)]
    pub ended_at: Option<SystemTime>,
    #[serde(default)]
    pub outcome: Vec<Outcome>,
}

/// An event key publishes from this long before its entry starts.
pub const KEY_OPENS_BEFORE: std::time::Duration = std::time::Duration::from_secs(15 * 60);

impl Entry {
    /// When its event key publishes: from 15 minutes before it starts to
    /// its end.
    pub fn key_window(&self) -> (SystemTime, SystemTime) {
        let opens = self
            .starts_at
            .checked_sub(KEY_OPENS_BEFORE)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        (opens, self.ends_at)
    }

    /// Whether it takes `destination` live.
    pub fn covers(&self, destination: &str) -> bool {
        self.destinations
            .as_ref()
            .is_none_or(|ids| ids.iter().any(|id| id == destination))
    }

    /// Whether its window and `other`'s overlap on a destination of the
    /// same stream.
    pub fn overlaps(&self, other: &Entry) -> bool {
        if self.stream != other.stream
            || self.starts_at >= other.ends_at
            || other.starts_at >= self.ends_at
        {
            return false;
        }
        // A file source owns the whole stream; so does an entry of all the
        // stream's destinations.
        if self.source.is_some() || other.source.is_some() {
            return true;
        }
        match (&self.destinations, &other.destinations) {
            (Some(mine), Some(theirs)) => mine.iter().any(|d| theirs.contains(d)),
            _ => true,
        }
    }
}

/// Times as RFC 3339 (UTC) on the wire and in the state file.
pub mod rfc3339 {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(time: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_rfc3339_seconds(*time).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let text = String::deserialize(d)?;
        parse(&text).map_err(serde::de::Error::custom)
    }

    /// An RFC 3339 time, with its offset (`Z` or `+02:00`).
    pub fn parse(text: &str) -> Result<SystemTime, String> {
        let bad = || format!("{text:?} is not an RFC 3339 time (2026-12-07T20:00:00Z)");
        // humantime reads UTC (`Z`) only: an offset is applied by hand.
        let (local, offset_s) = match text.len().checked_sub(6).map(|at| text.split_at(at)) {
            Some((local, offset))
                if (offset.starts_with('+') || offset.starts_with('-'))
                    && offset.as_bytes().get(3) == Some(&b':') =>
            {
                let hours: i64 = offset[1..3].parse().map_err(|_| bad())?;
                let minutes: i64 = offset[4..6].parse().map_err(|_| bad())?;
                let sign = if offset.starts_with('-') { -1 } else { 1 };
                (format!("{local}Z"), sign * (hours * 3600 + minutes * 60))
            }
            _ => (text.to_string(), 0),
        };
        let utc = humantime::parse_rfc3339_weak(&local).map_err(|_| bad())?;
        let shift = std::time::Duration::from_secs(offset_s.unsigned_abs());
        let time = if offset_s >= 0 {
            utc.checked_sub(shift)
        } else {
            utc.checked_add(shift)
        };
        time.ok_or_else(bad)
    }

    pub mod option {
        use std::time::SystemTime;

        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(
            time: &Option<SystemTime>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match time {
                Some(time) => super::serialize(time, s),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<SystemTime>, D::Error> {
            match Option::<String>::deserialize(d)? {
                Some(text) => super::parse(&text)
                    .map(Some)
                    .map_err(serde::de::Error::custom),
                None => Ok(None),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn times_with_an_offset_are_the_same_instant_in_utc() {
        let utc = rfc3339::parse("2026-12-07T20:00:00Z").unwrap();
        assert_eq!(rfc3339::parse("2026-12-07T21:30:00+01:30").unwrap(), utc);
        assert_eq!(rfc3339::parse("2026-12-07T15:00:00-05:00").unwrap(), utc);
        assert_eq!(
            rfc3339::parse("2026-12-07T20:00:00.5Z").unwrap(),
            utc + Duration::from_millis(500)
        );
        assert!(rfc3339::parse("tomorrow").is_err());
        assert!(rfc3339::parse("2026-12-07T20:00:00+1:00").is_err());
    }
}
