//! A stream's delay ring: what the stream sent, with when it arrived, held
//! for the destinations that go out `delay_s` behind the others. One ring
//! per stream serves every delay: each delay reads it through its own
//! cursor, and an entry leaves the ring once every cursor has passed it, so
//! it holds about bitrate × the longest delay. The messages are the ones
//! every destination shares (their payloads are never copied).
//!
//! The ring also carries the session's start and end, so a delayed output
//! begins and ends its own session that much later, and goes through the
//! encoder's reconnects, failovers and the standby clip as the live stream
//! did (it replays what the live destinations got).
//!
//! Bounded by bytes: past its budget the oldest GOP is dropped, and the
//! cursors that still needed it start again from the next keyframe, with
//! the sequence headers in force there. Sans-IO: the caller passes the time.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::message::{MediaKind, MediaMessage};
use crate::replay::ReplayCache;

/// What the ring holds, in arrival order.
#[derive(Clone, Debug)]
pub enum DelayEvent {
    /// A publish session began.
    Begin,
    Media(MediaMessage),
    /// The session ended.
    End,
}

#[derive(Debug)]
struct Entry {
    at: Instant,
    event: DelayEvent,
}

/// One delay's reading position.
#[derive(Clone, Copy, Debug)]
struct Cursor {
    delay: Duration,
    /// The index (counted since the ring was made) of its next entry.
    next: u64,
    /// It starts (or starts again) at `next`: it first gets the headers in
    /// force there, and a `Begin` if a session is open there.
    restart: bool,
    /// It got a `Begin` and no `End` since.
    open: bool,
}

/// Why the ring dropped media: its budget was too small for the delay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Overflow {
    pub at: Instant,
    /// What the ring held when it dropped, in bytes and in time.
    pub held_bytes: usize,
    pub held: Duration,
}

#[derive(Debug)]
pub struct DelayRing {
    entries: VecDeque<Entry>,
    /// The index of `entries[0]`.
    first: u64,
    /// What the held messages cost (see `MediaMessage::cost`).
    bytes: usize,
    budget: usize,
    /// Headers and metadata of the entries that left the ring, and whether
    /// a session was open before `entries[0]`: what a cursor starting at
    /// the front needs.
    front_headers: ReplayCache,
    front_open: bool,
    /// Whether a session is open after the last entry.
    open: bool,
    cursors: Vec<Cursor>,
    overflow: Option<Overflow>,
    /// Video went through: media starts only at keyframes.
    has_video: bool,
}

impl DelayRing {
    /// A ring that holds at most `budget` bytes of messages.
    pub fn new(budget: usize) -> Self {
        Self {
            entries: VecDeque::new(),
            first: 0,
            bytes: 0,
            budget,
            front_headers: ReplayCache::default(),
            front_open: false,
            open: false,
            cursors: Vec::new(),
            overflow: None,
            has_video: false,
        }
    }

    /// Holds `event`, arrived at `at`. Without a cursor nothing is held.
    pub fn push(&mut self, at: Instant, event: DelayEvent) {
        match &event {
            DelayEvent::Begin => self.open = true,
            DelayEvent::End => self.open = false,
            DelayEvent::Media(message) => {
                self.bytes += message.cost();
                self.has_video |= message.kind == MediaKind::Video;
            }
        }
        self.entries.push_back(Entry { at, event });
        if self.cursors.is_empty() {
            self.trim();
            return;
        }
        if self.bytes > self.budget {
            self.drop_oldest_gop();
        }
    }

    /// Starts reading for `delay`, unless it is read already. Mid-session it
    /// starts at the last keyframe held: its output begins once the delay
    /// has passed since that keyframe arrived.
    pub fn add_delay(&mut self, delay: Duration) {
        if self.cursors.iter().any(|c| c.delay == delay) {
            return;
        }
        let start = self.latest_start();
        self.cursors.push(Cursor {
            delay,
            next: start,
            restart: true,
            open: false,
        });
    }

    /// Stops reading for `delay`; what only it needed leaves the ring.
    pub fn remove_delay(&mut self, delay: Duration) {
        self.cursors.retain(|c| c.delay != delay);
        self.trim();
    }

    /// Appends to `out` what is due for `delay` at `now`: entries that
    /// arrived at least `delay` before it, in order.
    pub fn take_due(&mut self, delay: Duration, now: Instant, out: &mut Vec<DelayEvent>) {
        let Some(at) = self.cursors.iter().position(|c| c.delay == delay) else {
            return;
        };
        // Moved along on a copy: the ring is read meanwhile.
        let mut cursor = self.cursors[at];
        while let Some(entry) = self.entry(cursor.next) {
            if entry.at + delay > now {
                break;
            }
            if cursor.restart {
                cursor.restart = false;
                self.preamble(&mut cursor, out);
            }
            let event = entry.event.clone();
            match &event {
                DelayEvent::Begin if cursor.open => {
                    // A session it never saw end (dropped by an overflow).
                    out.push(DelayEvent::End);
                }
                DelayEvent::End if !cursor.open => {
                    cursor.next += 1;
                    continue;
                }
                _ => {}
            }
            cursor.open = match &event {
                DelayEvent::Begin => true,
                DelayEvent::End => false,
                DelayEvent::Media(_) => cursor.open,
            };
            if matches!(event, DelayEvent::Media(_)) && !cursor.open {
                // Media of a session whose start it never saw.
                cursor.next += 1;
                continue;
            }
            out.push(event);
            cursor.next += 1;
        }
        self.cursors[at] = cursor;
        self.trim();
    }

    /// When the next entry falls due for any delay.
    pub fn next_due(&self) -> Option<Instant> {
        self.cursors
            .iter()
            .filter_map(|c| self.entry(c.next).map(|e| e.at + c.delay))
            .min()
    }

    /// What the held messages cost, in bytes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The last time the budget made the ring drop media.
    pub fn overflow(&self) -> Option<Overflow> {
        self.overflow
    }

    fn entry(&self, index: u64) -> Option<&Entry> {
        let offset = index.checked_sub(self.first)?;
        self.entries.get(usize::try_from(offset).ok()?)
    }

    /// The headers in force at `cursor.next`, and a `Begin` when a session
    /// is open there.
    fn preamble(&self, cursor: &mut Cursor, out: &mut Vec<DelayEvent>) {
        let mut headers = self.front_headers.clone();
        let mut open = self.front_open;
        let upto = (cursor.next - self.first) as usize;
        for entry in self.entries.range(..upto) {
            match &entry.event {
                DelayEvent::Begin => open = true,
                DelayEvent::End => open = false,
                DelayEvent::Media(message) => {
                    headers.record_headers(message);
                }
            }
        }
        let starts_at_begin = matches!(
            self.entry(cursor.next).map(|e| &e.event),
            Some(DelayEvent::Begin)
        );
        if !open || starts_at_begin {
            return;
        }
        if !cursor.open {
            out.push(DelayEvent::Begin);
            cursor.open = true;
        }
        out.extend(headers.headers().cloned().map(DelayEvent::Media));
    }

    /// Where a new cursor starts: the last keyframe, or the last session
    /// start, held since the last session start; otherwise the end.
    fn latest_start(&self) -> u64 {
        for (offset, entry) in self.entries.iter().enumerate().rev() {
            match &entry.event {
                DelayEvent::Media(m) if m.keyframe => return self.first + offset as u64,
                DelayEvent::Begin => return self.first + offset as u64,
                DelayEvent::End => break,
                DelayEvent::Media(_) => {}
            }
        }
        self.first + self.entries.len() as u64
    }

    /// Lets go of the entries every cursor has passed.
    fn trim(&mut self) {
        let keep_from = self
            .cursors
            .iter()
            .map(|c| c.next)
            .min()
            .unwrap_or(self.first + self.entries.len() as u64);
        while self.first < keep_from {
            self.pop_front();
        }
    }

    fn pop_front(&mut self) {
        let Some(entry) = self.entries.pop_front() else {
            return;
        };
        self.first += 1;
        match entry.event {
            DelayEvent::Begin => self.front_open = true,
            DelayEvent::End => {
                self.front_open = false;
                self.front_headers = ReplayCache::default();
            }
            DelayEvent::Media(message) => {
                self.bytes -= message.cost();
                self.front_headers.record_headers(&message);
            }
        }
    }

    /// Over budget: drops from the front up to the next keyframe (or
    /// session marker), at least one GOP, until the ring is within budget.
    /// Cursors that had not passed the dropped entries start again at the
    /// new front.
    fn drop_oldest_gop(&mut self) {
        let held_bytes = self.bytes;
        let held = match (self.entries.front(), self.entries.back()) {
            (Some(front), Some(back)) => back.at.saturating_duration_since(front.at),
            _ => Duration::ZERO,
        };
        while self.bytes > self.budget && !self.entries.is_empty() {
            self.pop_front();
            while let Some(entry) = self.entries.front() {
                let start_here = match &entry.event {
                    DelayEvent::Media(m) => m.keyframe || !self.has_video,
                    _ => true,
                };
                if start_here {
                    break;
                }
                self.pop_front();
            }
        }
        let first = self.first;
        for cursor in &mut self.cursors {
            if cursor.next < first {
                cursor.next = first;
                cursor.restart = true;
            }
        }
        self.overflow = Some(Overflow {
            at: self.entries.back().map_or_else(Instant::now, |e| e.at),
            held_bytes,
            held,
        });
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn video(ts: u64, key: bool) -> DelayEvent {
        let first = if key { 0x17 } else { 0x27 };
        DelayEvent::Media(MediaMessage::new(
            MediaKind::Video,
            ts,
            Bytes::from(vec![first, 1, 0, 0, 0, 0xab]),
        ))
    }

    fn header() -> DelayEvent {
        DelayEvent::Media(MediaMessage::new(
            MediaKind::Video,
            0,
            Bytes::from_static(&[0x17, 0, 0, 0, 0, 1]),
        ))
    }

    /// A session's start: its header, then `frames` video frames 100 ms
    /// apart with a keyframe every tenth, arrived at `at(timestamp)`.
    fn show(ring: &mut DelayRing, at: impl Fn(u64) -> Instant, frames: u64) {
        ring.push(at(0), DelayEvent::Begin);
        ring.push(at(0), header());
        for n in 0..frames {
            ring.push(at(n * 100), video(n * 100, n % 10 == 0));
        }
    }

    fn describe(events: &[DelayEvent]) -> Vec<String> {
        events
            .iter()
            .map(|e| match e {
                DelayEvent::Begin => "begin".into(),
                DelayEvent::End => "end".into(),
                DelayEvent::Media(m) if m.sequence_header => "header".into(),
                DelayEvent::Media(m) => {
                    format!("{}{}", m.timestamp, if m.keyframe { "k" } else { "" })
                }
            })
            .collect()
    }

    #[test]
    fn each_delay_gets_the_session_that_much_later_and_the_ring_holds_the_longest() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut ring = DelayRing::new(1 << 20);
        let (short, long) = (Duration::from_secs(1), Duration::from_secs(2));
        ring.add_delay(short);
        ring.add_delay(long);
        show(&mut ring, at, 30);
        ring.push(at(3000), DelayEvent::End);
        let mut out = Vec::new();
        ring.take_due(short, at(1500), &mut out);
        assert_eq!(describe(&out)[..3], ["begin", "header", "0k"]);
        assert_eq!(out.len(), 2 + 6);
        out.clear();
        ring.take_due(long, at(1500), &mut out);
        assert!(out.is_empty());
        assert_eq!(ring.next_due(), Some(at(600) + short));
        ring.take_due(short, at(4000), &mut out);
        assert_eq!(describe(&out).last().unwrap(), "end");
        // The long delay still needs everything.
        assert_eq!(ring.entries.len(), 33);
        out.clear();
        ring.take_due(long, at(5000), &mut out);
        assert_eq!(out.len(), 33);
        assert_eq!(ring.bytes(), 0);
        assert!(ring.entries.is_empty());
    }

    #[test]
    fn a_delay_added_mid_show_starts_at_the_last_keyframe_with_its_headers() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut ring = DelayRing::new(1 << 20);
        let first = Duration::from_secs(10);
        ring.add_delay(first);
        show(&mut ring, at, 25);
        let late = Duration::from_secs(1);
        ring.add_delay(late);
        ring.push(at(2500), video(2500, false));
        let mut out = Vec::new();
        ring.take_due(late, at(3000), &mut out);
        assert_eq!(describe(&out)[..3], ["begin", "header", "2000k"]);
        assert_eq!(
            describe(&out).last().unwrap(),
            "2000k",
            "2100 is due at 3.1 s"
        );
    }

    #[test]
    fn over_budget_the_oldest_gop_goes_and_a_lagging_cursor_restarts_on_a_keyframe() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // Room for about two GOPs of ten messages.
        let budget = 25 * (6 + crate::message::MESSAGE_OVERHEAD);
        let mut ring = DelayRing::new(budget);
        let delay = Duration::from_secs(10);
        ring.add_delay(delay);
        ring.push(at(0), DelayEvent::Begin);
        ring.push(at(0), header());
        for n in 0..40u64 {
            ring.push(at(n * 100), video(n * 100, n % 10 == 0));
            assert!(ring.bytes() <= budget);
        }
        assert!(ring.overflow().is_some());
        let mut out = Vec::new();
        ring.take_due(delay, at(20_000), &mut out);
        let seen = describe(&out);
        assert_eq!(seen[..2], ["begin", "header"], "{seen:?}");
        assert!(seen[2].ends_with('k'), "{seen:?}");
        assert_eq!(seen.last().unwrap(), "3900");
    }
}
