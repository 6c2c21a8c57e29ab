//! The schedule: every entry, booked, changed, canceled, and moved along by
//! the wall clock. Sans-IO: the caller passes the time and carries out what
//! a step says (take destinations live, play files, tell the event stream).
//!
//! An entry only moves forward (upcoming → in progress → completed,
//! canceled or failed), so a clock that steps back never starts an entry
//! again, and one that steps forward past a whole window marks the entry
//! failed, with why, rather than skipping it silently.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::entry::{Entry, FileSource, Status};

/// What a caller asks to book.
#[derive(Clone, Debug)]
pub struct Booking {
    pub stream: String,
    pub title: String,
    pub starts_at: SystemTime,
    pub ends_at: SystemTime,
    pub destinations: Option<Vec<String>>,
    pub source: Option<FileSource>,
    pub key: Option<String>,
}

/// A change to an upcoming entry; fields given are set.
#[derive(Clone, Debug, Default)]
pub struct Change {
    pub title: Option<String>,
    pub starts_at: Option<SystemTime>,
    pub ends_at: Option<SystemTime>,
    pub destinations: Option<Option<Vec<String>>>,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("no schedule entry {0:?}")]
    NotFound(String),
    #[error("it ends before it starts (ends_at must be after starts_at)")]
    EndsBeforeStart,
    #[error("it would end in the past")]
    EndsInThePast,
    #[error("it overlaps entry {other:?} ({title}) on the same destinations")]
    Overlap { other: String, title: String },
    #[error("entry {id:?} is {status} and can no longer be changed")]
    NotUpcoming { id: String, status: &'static str },
}

/// What a tick did to an entry, for the caller to carry out and tell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    Started(String),
    Ended(String),
    /// Its whole window passed while Prism could not start it.
    Missed(String),
}

/// Entries over (completed, canceled, failed) kept as history: the oldest
/// beyond this are let go, so the state file stays small.
pub const MAX_HISTORY: usize = 1000;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    entries: Vec<Entry>,
    /// Numbers the next entry's id.
    next: u64,
}

impl Schedule {
    /// Reads a schedule written by `to_json`.
    pub fn from_json(text: &str) -> Result<Schedule, serde_json::Error> {
        serde_json::from_str(text)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a schedule always serializes")
    }

    /// Every entry, in the order they start.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    pub fn get(&self, id: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.id == id)
    }

    /// The entries in progress now.
    pub fn in_progress(&self) -> impl Iterator<Item = &Entry> {
        self.entries
            .iter()
            .filter(|e| e.status == Status::InProgress)
    }

    /// Books an entry; it must end after `now` and share no destination
    /// with another entry in its window.
    pub fn book(&mut self, booking: Booking, now: SystemTime) -> Result<&Entry, ScheduleError> {
        self.next += 1;
        let entry = Entry {
            id: format!("e{}", self.next),
            stream: booking.stream,
            title: booking.title,
            starts_at: booking.starts_at,
            ends_at: booking.ends_at,
            destinations: booking.destinations,
            source: booking.source,
            key: booking.key,
            status: Status::Upcoming,
            failure: None,
            started_at: None,
            ended_at: None,
            outcome: Vec::new(),
        };
        self.check(&entry, now)?;
        let at = self
            .entries
            .partition_point(|e| e.starts_at <= entry.starts_at);
        self.entries.insert(at, entry);
        Ok(&self.entries[at])
    }

    /// Changes an upcoming entry.
    pub fn change(
        &mut self,
        id: &str,
        change: Change,
        now: SystemTime,
    ) -> Result<&Entry, ScheduleError> {
        let at = self.position(id)?;
        let mut entry = self.entries[at].clone();
        if entry.status != Status::Upcoming {
            return Err(ScheduleError::NotUpcoming {
                id: id.to_string(),
                status: entry.status.as_str(),
            });
        }
        if let Some(title) = change.title {
            entry.title = title;
        }
        entry.starts_at = change.starts_at.unwrap_or(entry.starts_at);
        entry.ends_at = change.ends_at.unwrap_or(entry.ends_at);
        if let Some(destinations) = change.destinations {
            entry.destinations = destinations;
        }
        self.check(&entry, now)?;
        self.entries.remove(at);
        let at = self
            .entries
            .partition_point(|e| e.starts_at <= entry.starts_at);
        self.entries.insert(at, entry);
        Ok(&self.entries[at])
    }

    /// Cancels an entry: an upcoming one never starts, one in progress
    /// ends now. True when it was in progress (the caller ends it).
    pub fn cancel(&mut self, id: &str, now: SystemTime) -> Result<bool, ScheduleError> {
        let at = self.position(id)?;
        let entry = &mut self.entries[at];
        let was_live = match entry.status {
            Status::Upcoming => false,
            Status::InProgress => true,
            status => {
                return Err(ScheduleError::NotUpcoming {
                    id: id.to_string(),
                    status: status.as_str(),
                })
            }
        };
        entry.status = Status::Canceled;
        if was_live {
            entry.ended_at = Some(now);
        }
        Ok(was_live)
    }

    /// Moves every entry along to `now`.
    pub fn tick(&mut self, now: SystemTime) -> Vec<Step> {
        let mut steps = Vec::new();
        for entry in &mut self.entries {
            match entry.status {
                Status::Upcoming if now >= entry.ends_at => {
                    entry.status = Status::Failed;
                    entry.failure = Some("its whole window passed while Prism was not running (or the clock stepped past it)".into());
                    steps.push(Step::Missed(entry.id.clone()));
                }
                Status::Upcoming if now >= entry.starts_at => {
                    entry.status = Status::InProgress;
                    entry.started_at = Some(now);
                    steps.push(Step::Started(entry.id.clone()));
                }
                Status::InProgress if now >= entry.ends_at => {
                    entry.status = Status::Completed;
                    entry.ended_at = Some(now);
                    steps.push(Step::Ended(entry.id.clone()));
                }
                _ => {}
            }
        }
        self.forget_oldest_history();
        steps
    }

    /// Keeps the [`MAX_HISTORY`] entries that ended last among those over.
    fn forget_oldest_history(&mut self) {
        let mut ended: Vec<SystemTime> = self
            .entries
            .iter()
            .filter(|e| e.status.is_final())
            .map(|e| e.ended_at.unwrap_or(e.ends_at))
            .collect();
        if ended.len() <= MAX_HISTORY {
            return;
        }
        ended.sort_unstable();
        let oldest_kept = ended[ended.len() - MAX_HISTORY];
        let mut over = ended.len() - MAX_HISTORY;
        self.entries.retain(|e| {
            let forget =
                over > 0 && e.status.is_final() && e.ended_at.unwrap_or(e.ends_at) < oldest_kept;
            over -= usize::from(forget);
            !forget
        });
    }

    /// Marks an entry in progress failed (what it plays could not start).
    pub fn fail(&mut self, id: &str, why: String, now: SystemTime) {
        if let Ok(at) = self.position(id) {
            let entry = &mut self.entries[at];
            if !entry.status.is_final() {
                entry.status = Status::Failed;
                entry.failure = Some(why);
                entry.ended_at = Some(now);
            }
        }
    }

    /// Adds what went out during an entry, destination by destination (in a
    /// cluster each node adds what it sent). False when nothing changed.
    pub fn add_outcome(&mut self, id: &str, sent: &[crate::entry::Outcome]) -> bool {
        let Ok(at) = self.position(id) else {
            return false;
        };
        let outcome = &mut self.entries[at].outcome;
        let mut changed = false;
        for part in sent {
            match outcome
                .iter_mut()
                .find(|o| o.destination == part.destination)
            {
                Some(total) => {
                    total.bytes += part.bytes;
                    total.dropped_frames += part.dropped_frames;
                    changed |= part.bytes > 0 || part.dropped_frames > 0;
                }
                None => {
                    outcome.push(part.clone());
                    changed = true;
                }
            }
        }
        changed
    }

    /// When the next entry starts or ends, for the caller's timer.
    pub fn next_change(&self) -> Option<SystemTime> {
        self.entries
            .iter()
            .filter_map(|e| match e.status {
                Status::Upcoming => Some(e.starts_at),
                Status::InProgress => Some(e.ends_at),
                _ => None,
            })
            .min()
    }

    fn position(&self, id: &str) -> Result<usize, ScheduleError> {
        self.entries
            .iter()
            .position(|e| e.id == id)
            .ok_or_else(|| ScheduleError::NotFound(id.to_string()))
    }

    fn check(&self, entry: &Entry, now: SystemTime) -> Result<(), ScheduleError> {
        if entry.ends_at <= entry.starts_at {
            return Err(ScheduleError::EndsBeforeStart);
        }
        if entry.ends_at <= now {
            return Err(ScheduleError::EndsInThePast);
        }
        let clash = self
            .entries
            .iter()
            .filter(|other| other.id != entry.id && !other.status.is_final())
            .find(|other| other.overlaps(entry));
        match clash {
            Some(other) => Err(ScheduleError::Overlap {
                other: other.id.clone(),
                title: other.title.clone(),
            }),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn at(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + s)
    }

    fn booking(from: u64, to: u64, destinations: Option<&[&str]>) -> Booking {
        Booking {
            stream: "main".into(),
            title: format!("{from}-{to}"),
            starts_at: at(from),
            ends_at: at(to),
            destinations: destinations.map(|d| d.iter().map(|s| s.to_string()).collect()),
            source: None,
            key: None,
        }
    }

    #[test]
    fn an_entry_goes_upcoming_in_progress_completed_once_whatever_the_clock_does() {
        let mut schedule = Schedule::default();
        let id = schedule
            .book(booking(100, 200, Some(&["a"])), at(0))
            .unwrap()
            .id
            .clone();
        assert!(schedule.tick(at(50)).is_empty());
        assert_eq!(schedule.next_change(), Some(at(100)));
        assert_eq!(schedule.tick(at(100)), [Step::Started(id.clone())]);
        // The clock steps back (NTP): nothing starts again.
        assert!(schedule.tick(at(90)).is_empty());
        assert_eq!(schedule.get(&id).unwrap().status, Status::InProgress);
        assert_eq!(schedule.tick(at(200)), [Step::Ended(id.clone())]);
        assert!(schedule.tick(at(150)).is_empty());
        let entry = schedule.get(&id).unwrap();
        assert_eq!(
            (entry.status, entry.started_at, entry.ended_at),
            (Status::Completed, Some(at(100)), Some(at(200)))
        );
    }

    #[test]
    fn each_node_adds_what_it_sent_to_the_outcome() {
        let mut schedule = Schedule::default();
        let id = schedule
            .book(booking(100, 200, None), at(0))
            .unwrap()
            .id
            .clone();
        let sent = |destination: &str, bytes| crate::entry::Outcome {
            destination: destination.into(),
            bytes,
            dropped_frames: 0,
        };
        // A node that sent nothing still names the destinations once.
        assert!(schedule.add_outcome(&id, &[sent("a", 0), sent("b", 0)]));
        assert!(!schedule.add_outcome(&id, &[sent("a", 0), sent("b", 0)]));
        assert!(schedule.add_outcome(&id, &[sent("a", 700), sent("b", 0)]));
        assert!(schedule.add_outcome(&id, &[sent("a", 300)]));
        assert_eq!(
            schedule.get(&id).unwrap().outcome,
            [sent("a", 1000), sent("b", 0)]
        );
        assert!(!schedule.add_outcome("e404", &[sent("a", 1)]));
    }

    #[test]
    fn history_keeps_the_entries_that_ended_last() {
        let mut schedule = Schedule::default();
        let total = MAX_HISTORY as u64 + 10;
        for n in 0..total {
            let id = schedule
                .book(booking(10 * n + 1, 10 * n + 5, Some(&["a"])), at(0))
                .unwrap()
                .id
                .clone();
            schedule.cancel(&id, at(0)).unwrap();
        }
        // One still to come is never let go.
        schedule
            .book(booking(100_000, 100_010, None), at(0))
            .unwrap();
        schedule.tick(at(1));
        assert_eq!(schedule.entries().len(), MAX_HISTORY + 1);
        assert_eq!(
            schedule.entries()[0].title,
            "101-105",
            "the ten oldest went"
        );
        assert_eq!(schedule.entries()[MAX_HISTORY].status, Status::Upcoming);
    }

    #[test]
    fn a_window_stepped_over_is_marked_failed_not_skipped() {
        let mut schedule = Schedule::default();
        let id = schedule
            .book(booking(100, 200, None), at(0))
            .unwrap()
            .id
            .clone();
        assert_eq!(schedule.tick(at(500)), [Step::Missed(id.clone())]);
        let entry = schedule.get(&id).unwrap();
        assert_eq!(entry.status, Status::Failed);
        assert!(entry.failure.as_deref().unwrap().contains("window passed"));
    }

    #[test]
    fn overlaps_on_a_destination_are_refused_naming_the_other() {
        let mut schedule = Schedule::default();
        let first = schedule
            .book(booking(100, 200, Some(&["a", "b"])), at(0))
            .unwrap()
            .id
            .clone();
        assert!(schedule
            .book(booking(150, 250, Some(&["c"])), at(0))
            .is_ok());
        assert!(
            schedule
                .book(booking(200, 300, Some(&["a"])), at(0))
                .is_ok(),
            "back to back"
        );
        match schedule.book(booking(150, 160, Some(&["b"])), at(0)) {
            Err(ScheduleError::Overlap { other, .. }) => assert_eq!(other, first),
            other => panic!("{other:?}"),
        }
        // An entry of every destination overlaps them all.
        assert!(matches!(
            schedule.book(booking(120, 130, None), at(0)),
            Err(ScheduleError::Overlap { .. })
        ));
        assert_eq!(
            schedule.book(booking(300, 250, None), at(0)).unwrap_err(),
            ScheduleError::EndsBeforeStart
        );
        assert_eq!(
            schedule.book(booking(10, 20, None), at(30)).unwrap_err(),
            ScheduleError::EndsInThePast
        );
        // A canceled entry frees its window.
        schedule.cancel(&first, at(0)).unwrap();
        assert!(schedule
            .book(booking(150, 160, Some(&["b"])), at(0))
            .is_ok());
    }

    #[test]
    fn only_upcoming_entries_change_and_canceling_a_live_one_ends_it() {
        let mut schedule = Schedule::default();
        let id = schedule
            .book(booking(100, 200, None), at(0))
            .unwrap()
            .id
            .clone();
        let moved = Change {
            starts_at: Some(at(110)),
            title: Some("renamed".into()),
            ..Change::default()
        };
        assert_eq!(
            schedule.change(&id, moved, at(0)).unwrap().starts_at,
            at(110)
        );
        schedule.tick(at(120));
        assert!(matches!(
            schedule.change(&id, Change::default(), at(120)),
            Err(ScheduleError::NotUpcoming { .. })
        ));
        assert_eq!(schedule.cancel(&id, at(130)), Ok(true));
        let entry = schedule.get(&id).unwrap();
        assert_eq!(
            (entry.status, entry.ended_at),
            (Status::Canceled, Some(at(130)))
        );
        assert!(schedule.cancel(&id, at(131)).is_err());
    }

    #[test]
    fn a_schedule_survives_its_state_file() {
        let mut schedule = Schedule::default();
        schedule
            .book(booking(100, 200, Some(&["a"])), at(0))
            .unwrap();
        schedule.tick(at(100));
        let read = Schedule::from_json(&schedule.to_json()).unwrap();
        assert_eq!(read.entries(), schedule.entries());
        let mut read = read;
        let next = read.book(booking(300, 400, None), at(0)).unwrap();
        assert_eq!(next.id, "e2", "ids are never reused");
    }
}
