//! The schedule as the daemon runs it: `prism_schedule::Schedule` behind a
//! lock, written atomically to its state file (beside the config) on every
//! change, and a task that moves it along the wall clock and carries out
//! what it says. An entry in progress takes its destinations live whatever
//! their `enabled` says; once it ends they return to what the config says
//! (level-triggered each second, so a restart or a reload mid-entry changes
//! nothing). What each destination sent during an entry is its outcome.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime};

use prism_media::supervise::catch_panic;
use prism_media::EventKey;
use prism_record::playback::FilePlayer;
use prism_schedule::{Entry, Outcome, Schedule, Step};
use tokio::sync::Notify;
use tracing::{info, warn};

use crate::persist::write_atomically;
use crate::streams::Streams;

/// The clock is looked at at least this often: an NTP step is noticed
/// within a second.
const TICK: Duration = Duration::from_secs(1);
/// How long a show waits for the stream's lease in cluster mode.
const LEASE_PATIENCE: Duration = Duration::from_secs(2);

pub struct Scheduler {
    schedule: Mutex<Schedule>,
    path: PathBuf,
    /// The shows playing now, by entry; a show whose files ended stays
    /// listed (finished) until its entry ends, so it is not played again.
    players: Mutex<HashMap<String, FilePlayer>>,
    /// Each entry in progress: its destinations' counters when it started.
    baselines: Mutex<HashMap<String, Vec<Outcome>>>,
    /// Wakes the task when an entry is booked, changed or canceled.
    wake: Notify,
}

/// What the schedule's task needs of the control plane (the `Controller`),
/// which it runs beside.
pub(crate) trait ScheduleHost: Send + Sync + 'static {
    fn scheduler(&self) -> &Arc<Scheduler>;
    fn streams(&self) -> &Arc<Streams>;
    /// Tells the event stream that `entry` started or ended.
    fn announce(&self, entry: &Entry);
    /// Each destination's configured `enabled`: (stream, destination, enabled).
    fn configured_destinations(
        &self,
    ) -> impl std::future::Future<Output = Vec<(String, String, bool)>> + Send;
}

/// The state file of the config at `config`: `NAME.schedule.json` beside it.
pub fn state_path(config: &Path) -> PathBuf {
    let stem = config
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("prism");
    config.with_file_name(format!("{stem}.schedule.json"))
}

impl Scheduler {
    /// The schedule kept at `path`; empty when the file does not exist yet.
    pub fn load(path: PathBuf) -> Result<Self, String> {
        let schedule = match std::fs::read_to_string(&path) {
            Ok(text) => Schedule::from_json(&text)
                .map_err(|e| format!("{}:{}:{}: {e}", path.display(), e.line(), e.column()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Schedule::default(),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        Ok(Self {
            schedule: Mutex::new(schedule),
            path,
            players: Mutex::new(HashMap::new()),
            baselines: Mutex::new(HashMap::new()),
            wake: Notify::new(),
        })
    }

    pub fn lock(&self) -> MutexGuard<'_, Schedule> {
        self.schedule.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes the schedule to its state file (atomically); a failure is
    /// logged, and the next change writes it again.
    pub fn save(&self, schedule: &Schedule) {
        if let Err(e) = write_atomically(&self.path, &schedule.to_json()) {
            warn!(file = %self.path.display(), error = %e, "the schedule could not be saved; it is kept in memory and saved at the next change");
        }
    }

    /// After a booking, change or cancellation: saved, and looked at now.
    pub fn changed(&self, schedule: &Schedule) {
        self.save(schedule);
        self.wake.notify_one();
    }

    /// Gives ingest the event keys of the entries not over yet.
    pub fn publish_keys(&self, schedule: &Schedule, streams: &Streams) {
        let keys = schedule
            .entries()
            .iter()
            .filter(|e| !e.status.is_final())
            .filter_map(|e| {
                let (opens, closes) = e.key_window();
                Some(EventKey {
                    key: e.key.clone()?,
                    stream: e.stream.clone(),
                    opens,
                    closes,
                })
            })
            .collect();
        streams.set_event_keys(keys);
    }

    /// Where a show's file `name` is: relative paths are the config's
    /// folder's.
    pub fn file_path(&self, name: &str) -> PathBuf {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        dir.join(name)
    }

    /// Whether an entry in progress takes `destination` of `stream` live.
    pub fn booked(&self, stream: &str, destination: &str) -> bool {
        self.lock()
            .in_progress()
            .any(|e| e.stream == stream && e.covers(destination))
    }
}

/// Runs the schedule until the controller is gone. A panic in one turn is
/// logged and counted; the next turn runs a second later.
pub(crate) fn spawn<H: ScheduleHost>(controller: Weak<H>) {
    tokio::spawn(async move {
        loop {
            let Some(strong) = controller.upgrade() else {
                return;
            };
            let scheduler = Arc::clone(strong.scheduler());
            if let Err(panic) = catch_panic("scheduler", turn(strong.as_ref())).await {
                warn!(%panic, "the schedule's turn panicked; it runs again in a second");
            }
            drop(strong);
            let wait = {
                let next = scheduler.lock().next_change();
                next.and_then(|at| at.duration_since(SystemTime::now()).ok())
                    .unwrap_or(TICK)
                    .min(TICK)
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = scheduler.wake.notified() => {}
            }
        }
    });
}

/// One turn: entries moved to now, then every destination enabled as its
/// config and the entries in progress say.
async fn turn<H: ScheduleHost>(controller: &H) {
    let scheduler = controller.scheduler();
    let now = SystemTime::now();
    let (steps, entries) = {
        let mut schedule = scheduler.lock();
        let steps = schedule.tick(now);
        (steps, schedule.entries().to_vec())
    };
    for step in &steps {
        let id = match step {
            Step::Started(id) | Step::Ended(id) | Step::Missed(id) => id,
        };
        let Some(entry) = entries.iter().find(|e| &e.id == id) else {
            continue;
        };
        match step {
            Step::Started(_) => {
                info!(entry = %entry.id, stream = %entry.stream, title = %entry.title, "schedule entry started");
                let baseline = counters(controller, entry);
                scheduler
                    .baselines
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(entry.id.clone(), baseline);
            }
            Step::Ended(_) | Step::Missed(_) => {
                info!(entry = %entry.id, stream = %entry.stream, status = entry.status.as_str(), "schedule entry ended");
                finish(controller, entry);
            }
        }
        controller.announce(entry);
    }
    play_shows(controller).await;
    {
        let schedule = scheduler.lock();
        scheduler.publish_keys(&schedule, controller.streams());
        if !steps.is_empty() {
            scheduler.save(&schedule);
        }
    }
    enable_booked(controller).await;
}

/// Every entry in progress with files plays them; a show whose entry is no
/// longer in progress stops. In cluster mode a show first takes the
/// stream's lease, so it never plays on two nodes.
async fn play_shows<H: ScheduleHost>(controller: &H) {
    let scheduler = controller.scheduler();
    let live: Vec<Entry> = scheduler
        .lock()
        .in_progress()
        .filter(|e| e.source.is_some())
        .cloned()
        .collect();
    let (stopping, starting): (Vec<FilePlayer>, Vec<Entry>) = {
        let mut players = scheduler.players.lock().unwrap_or_else(|e| e.into_inner());
        let over: Vec<String> = players
            .keys()
            .filter(|id| !live.iter().any(|e| &e.id == *id))
            .cloned()
            .collect();
        let stopping = over.iter().filter_map(|id| players.remove(id)).collect();
        let starting = live
            .into_iter()
            .filter(|e| !players.contains_key(&e.id))
            .collect();
        (stopping, starting)
    };
    for player in stopping {
        // Joins its thread, which looks every 100 ms.
        let _ = tokio::task::spawn_blocking(move || player.stop()).await;
    }
    for entry in starting {
        let Some(stream) = controller.streams().get(&entry.stream) else {
            continue;
        };
        let started = match stream.hub.claim_lease(LEASE_PATIENCE).await {
            Ok(()) => {
                let source = entry.source.as_ref().expect("filtered");
                let files = source
                    .files
                    .iter()
                    .map(|f| scheduler.file_path(f))
                    .collect();
                FilePlayer::start(Arc::clone(&stream.hub), files, source.repeat)
                    .map_err(|e| format!("the show's player could not start: {e}"))
            }
            Err(e) => Err(format!("the show could not take the stream: {e}")),
        };
        match started {
            Ok(player) => {
                scheduler
                    .players
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(entry.id.clone(), player);
            }
            Err(why) => {
                warn!(entry = %entry.id, stream = %entry.stream, %why, "schedule entry failed");
                let failed = {
                    let mut schedule = scheduler.lock();
                    schedule.fail(&entry.id, why, SystemTime::now());
                    scheduler.save(&schedule);
                    schedule.get(&entry.id).cloned()
                };
                if let Some(failed) = failed {
                    controller.announce(&failed);
                }
            }
        }
    }
}

/// Records what went out during `entry` (ended or canceled).
pub(crate) fn finish<H: ScheduleHost>(controller: &H, entry: &Entry) {
    let scheduler = controller.scheduler();
    let baseline = scheduler
        .baselines
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&entry.id)
        .unwrap_or_default();
    let outcome = counters(controller, entry)
        .into_iter()
        .map(|now| {
            let before = baseline
                .iter()
                .find(|b| b.destination == now.destination)
                .cloned()
                .unwrap_or_default();
            Outcome {
                bytes: now.bytes.saturating_sub(before.bytes),
                dropped_frames: now.dropped_frames.saturating_sub(before.dropped_frames),
                destination: now.destination,
            }
        })
        .collect();
    scheduler.lock().set_outcome(&entry.id, outcome);
}

/// The counters of the destinations `entry` covers, now.
fn counters<H: ScheduleHost>(controller: &H, entry: &Entry) -> Vec<Outcome> {
    use std::sync::atomic::Ordering;
    let Some(stream) = controller.streams().get(&entry.stream) else {
        return Vec::new();
    };
    stream
        .parts
        .destinations
        .all()
        .iter()
        .filter(|d| entry.covers(&d.id))
        .map(|d| Outcome {
            destination: d.id.clone(),
            bytes: d.status.bytes_sent.load(Ordering::Relaxed),
            dropped_frames: d.status.dropped_frames(),
        })
        .collect()
}

/// Every destination enabled if its config or an entry in progress says so.
pub(crate) async fn enable_booked<H: ScheduleHost>(controller: &H) {
    let configured = controller.configured_destinations().await;
    let scheduler = controller.scheduler();
    for (stream, destination, enabled) in configured {
        let wanted = enabled || scheduler.booked(&stream, &destination);
        let handle = controller
            .streams()
            .get(&stream)
            .and_then(|s| s.parts.destinations.get(&destination));
        if let Some(handle) = handle {
            if handle.is_enabled() != wanted {
                info!(%stream, %destination, enabled = wanted, "destination set by the schedule");
                handle.set_enabled(wanted);
            }
        }
    }
}
