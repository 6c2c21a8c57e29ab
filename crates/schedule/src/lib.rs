//! Prism's schedule (sans-IO): entries that book a stream's destinations
//! for a window of time, play files into it instead of an encoder, or give
//! it an event key of its own; moved along by the wall clock the caller
//! passes in, and written to a state file as JSON.

pub mod entry;
pub mod schedule;

pub use entry::{Entry, FileSource, Outcome, Status};
pub use schedule::{Booking, Change, Schedule, ScheduleError, Step};
