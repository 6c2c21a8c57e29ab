//! The schedule as the daemon runs it: `prism_schedule::Schedule`, kept in
//! its state file beside the config (written atomically on every change) or,
//! in cluster mode, in Redis (a versioned JSON document changed by compare
//! and set, the state file its cache), and a task that moves it along the
//! wall clock and carries out what it says.
//!
//! An entry in progress takes its destinations live whatever their
//! `enabled` says; once it ends they return to what the config says
//! (level-triggered each second, so a restart or a reload mid-entry changes
//! nothing). What each destination sent during an entry is its outcome: in
//! a cluster each node adds what it sent. A show (files played into the
//! stream) runs on one node: the one holding the entry's lease in Redis,
//! taken by the node the stream is live on if any, else by the first to
//! ask; another takes it over if that node dies.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, SystemTime};

use prism_cluster::{Acquired, Cluster, Lease, StoreError};
use prism_media::supervise::catch_panic;
use prism_media::{EventKey, PublishError};
use prism_record::playback::FilePlayer;
use prism_schedule::{Entry, Outcome, Schedule, Status};
use tokio::sync::Notify;
use tracing::{info, warn};

use crate::persist::write_atomically;
use crate::streams::Streams;

/// The clock is looked at at least this often: an NTP step is noticed
/// within a second, and so is another node's change.
const TICK: Duration = Duration::from_secs(1);
/// How long a show waits for the stream's lease in cluster mode.
const LEASE_PATIENCE: Duration = Duration::from_secs(2);
/// A Redis call of the schedule's that takes longer has failed.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);
/// Compare-and-set attempts before a change gives up (others kept winning).
const ATTEMPTS: usize = 8;

pub struct Scheduler {
    schedule: Mutex<Schedule>,
    path: PathBuf,
    /// Cluster mode: the shared document and the version held here.
    shared: OnceLock<Shared>,
    /// The shows playing here, by entry; a show whose files ended stays
    /// listed (finished) until its entry ends, so it is not played again.
    players: Mutex<HashMap<String, Show>>,
    /// Each entry in progress: its destinations' counters here when it
    /// started (or when this node first saw it in progress).
    baselines: Mutex<HashMap<String, Vec<Outcome>>>,
    /// Each entry's status as last seen here: a change is announced once.
    seen: Mutex<HashMap<String, Status>>,
    /// Wakes the task when an entry is booked, changed or canceled.
    wake: Notify,
}

struct Shared {
    cluster: Arc<Cluster>,
    version: AtomicU64,
}

struct Show {
    player: FilePlayer,
    /// Cluster mode: the entry's lease, held while the entry runs here.
    lease: Option<Lease>,
}

/// Why a change to the schedule was not made.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError<E> {
    /// The schedule refused it (overlap, no such entry, …).
    #[error("{0}")]
    Refused(E),
    #[error("the cluster's Redis is unreachable ({0}): schedule changes are refused until it is back; shows go on unchanged")]
    Unavailable(String),
    #[error("the shared schedule in Redis ({0}) is not one Prism wrote; changes are refused until it is fixed")]
    Unreadable(String),
    #[error("the schedule kept changing on other nodes while this change was made; try again")]
    Busy,
}

/// What the schedule's task needs of the control plane (the `Controller`),
/// which it runs beside.
pub(crate) trait ScheduleHost: Send + Sync + 'static {
    fn scheduler(&self) -> &Arc<Scheduler>;
    fn streams(&self) -> &Arc<Streams>;
    /// Tells the event stream that `entry` started or ended.
    fn announce(&self, entry: &Entry);
    /// Each destination's configured `enabled`: (stream, destination, enabled).
    fn configured_destinations(&self) -> impl Future<Output = Vec<(String, String, bool)>> + Send;
}

/// The state file of the config at `config`: `NAME.schedule.json` beside it.
pub fn state_path(config: &Path) -> PathBuf {
    crate::persist::beside_config(config, "schedule.json")
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
        let seen = schedule
            .entries()
            .iter()
            .map(|e| (e.id.clone(), e.status))
            .collect();
        Ok(Self {
            schedule: Mutex::new(schedule),
            path,
            shared: OnceLock::new(),
            players: Mutex::new(HashMap::new()),
            baselines: Mutex::new(HashMap::new()),
            seen: Mutex::new(seen),
            wake: Notify::new(),
        })
    }

    /// Cluster mode: the schedule is the cluster's, in Redis; the state file
    /// becomes this node's cache of it.
    pub fn share(&self, cluster: Arc<Cluster>) {
        let shared = Shared {
            cluster,
            version: AtomicU64::new(0),
        };
        if self.shared.set(shared).is_err() {
            warn!("the schedule was shared twice; the first cluster link stays");
        }
    }

    /// The schedule as this node knows it now.
    pub fn lock(&self) -> MutexGuard<'_, Schedule> {
        self.schedule.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes the schedule to its state file (atomically); a failure is
    /// logged, and the next change writes it again.
    fn save(&self, schedule: &Schedule) {
        if let Err(e) = write_atomically(&self.path, &schedule.to_json()) {
            warn!(file = %self.path.display(), error = %e, "the schedule could not be saved; it is kept in memory and saved at the next change");
        }
    }

    /// Makes a change: `change` runs on the newest schedule (in a cluster,
    /// the one in Redis, again if another node changed it meanwhile), which
    /// is then kept, saved and looked at now. A change that changes nothing
    /// writes nothing.
    pub async fn update<T, E>(
        &self,
        mut change: impl FnMut(&mut Schedule) -> Result<T, E>,
    ) -> Result<T, UpdateError<E>> {
        let Some(shared) = self.shared.get() else {
            let result = {
                let mut schedule = self.lock();
                let before = schedule.clone();
                let result = change(&mut schedule).map_err(UpdateError::Refused)?;
                if *schedule != before {
                    self.save(&schedule);
                }
                result
            };
            self.wake.notify_one();
            return Ok(result);
        };
        let store = shared.cluster.schedule_store();
        for _ in 0..ATTEMPTS {
            let newest = bounded(store.read())
                .await
                .map_err(UpdateError::Unavailable)?;
            let mut schedule = if newest.text.is_empty() {
                Schedule::default()
            } else {
                Schedule::from_json(&newest.text)
                    .map_err(|e| UpdateError::Unreadable(format!("{}: {e}", store.channel())))?
            };
            let before = schedule.clone();
            let result = change(&mut schedule).map_err(UpdateError::Refused)?;
            if schedule == before {
                self.adopt(newest.version, schedule);
                return Ok(result);
            }
            let text = schedule.to_json();
            match tokio::time::timeout(REDIS_TIMEOUT, store.write(newest.version, &text)).await {
                Ok(Ok(version)) => {
                    self.adopt(version, schedule);
                    self.wake.notify_one();
                    return Ok(result);
                }
                // Another node's change landed first: redo it on that one.
                Ok(Err(StoreError::Conflict { .. })) => continue,
                Ok(Err(e)) => return Err(UpdateError::Unavailable(e.to_string())),
                Err(_) => {
                    let e = format!("no answer within {REDIS_TIMEOUT:?}");
                    return Err(UpdateError::Unavailable(e));
                }
            }
        }
        Err(UpdateError::Busy)
    }

    /// Cluster mode: takes a newer shared schedule than the one held here
    /// (another node's change). A node that finds Redis without a schedule
    /// (a new cluster, or Redis lost its data) puts its own there.
    pub(crate) async fn refresh(&self) {
        let Some(shared) = self.shared.get() else {
            return;
        };
        let store = shared.cluster.schedule_store();
        let Ok(version) = bounded(store.version()).await else {
            return;
        };
        if version == shared.version.load(Ordering::Relaxed) && version != 0 {
            return;
        }
        if version == 0 {
            let mine = self.lock().clone();
            if mine.entries().is_empty() {
                return;
            }
            let text = mine.to_json();
            if let Ok(written) = bounded(store.write(0, &text)).await {
                info!(
                    version = written,
                    entries = mine.entries().len(),
                    "cluster: the schedule this node kept is now the cluster's"
                );
                shared.version.store(written, Ordering::Relaxed);
            }
            return;
        }
        let Ok(newest) = bounded(store.read()).await else {
            return;
        };
        match Schedule::from_json(&newest.text) {
            Ok(schedule) => self.adopt(newest.version, schedule),
            Err(e) => {
                warn!(key = %store.channel(), error = %e, "cluster: the shared schedule does not parse; this node keeps the one it has")
            }
        }
    }

    /// Holds `schedule` as the shared one at `version` (and caches it).
    fn adopt(&self, version: u64, schedule: Schedule) {
        if let Some(shared) = self.shared.get() {
            shared.version.store(version, Ordering::Relaxed);
        }
        let mut held = self.lock();
        if *held != schedule {
            self.save(&schedule);
            *held = schedule;
        }
    }

    /// Gives ingest the event keys of the entries not over yet.
    pub fn publish_keys(&self, streams: &Streams) {
        let keys = self
            .lock()
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

    fn baselines(&self) -> MutexGuard<'_, HashMap<String, Vec<Outcome>>> {
        self.baselines.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn players(&self) -> MutexGuard<'_, HashMap<String, Show>> {
        self.players.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A change made together with the outcome of every entry that is over:
/// what this node's destinations sent since it started is added to it in
/// the same write, so an entry never reads ended without its outcome.
pub(crate) async fn update_settling<H: ScheduleHost, T, E>(
    controller: &H,
    mut change: impl FnMut(&mut Schedule) -> Result<T, E>,
) -> Result<T, UpdateError<E>> {
    let scheduler = controller.scheduler();
    // Taken out first: `sent_since` locks the schedule, and the schedule's
    // lock is never waited for while the baselines' is held.
    let baselines: Vec<(String, Vec<Outcome>)> = scheduler
        .baselines()
        .iter()
        .map(|(id, baseline)| (id.clone(), baseline.clone()))
        .collect();
    let counted: Vec<(String, Vec<Outcome>)> = baselines
        .into_iter()
        .map(|(id, baseline)| {
            let sent = sent_since(controller, &id, &baseline);
            (id, sent)
        })
        .collect();
    let mut settled = Vec::new();
    let result = scheduler
        .update(|schedule| {
            let result = change(schedule)?;
            settled.clear();
            for (id, sent) in &counted {
                let over = schedule.get(id).is_none_or(|e| e.status.is_final());
                if over {
                    schedule.add_outcome(id, sent);
                    settled.push(id.clone());
                }
            }
            Ok(result)
        })
        .await?;
    let mut baselines = scheduler.baselines();
    for id in settled {
        baselines.remove(&id);
    }
    Ok(result)
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

/// One turn: the newest schedule, entries moved to now (with the outcome of
/// those that ended), each change of status announced, shows played, and
/// every destination enabled as its config and the entries in progress say.
async fn turn<H: ScheduleHost>(controller: &H) {
    let scheduler = controller.scheduler();
    scheduler.refresh().await;
    let now = SystemTime::now();
    let counting: Vec<String> = scheduler.baselines().keys().cloned().collect();
    let due = {
        // An entry starts or ends at `now` exactly when its next change is
        // due; an entry counted here that is over needs its outcome.
        let schedule = scheduler.lock();
        schedule.next_change().is_some_and(|at| at <= now)
            || counting
                .iter()
                .any(|id| schedule.get(id).is_none_or(|e| e.status.is_final()))
    };
    if due {
        let ticked = update_settling(controller, |schedule| {
            schedule.tick(SystemTime::now());
            Ok::<_, std::convert::Infallible>(())
        })
        .await;
        if let Err(e) = ticked {
            warn!(error = %e, "the schedule could not be moved along; it is tried again in a second");
        }
    }
    observe(controller);
    play_shows(controller).await;
    scheduler.publish_keys(controller.streams());
    enable_booked(controller).await;
}

/// Announces each entry whose status changed since this node last looked
/// (by this node's doing or another's), and counts from the start of each
/// entry now in progress.
fn observe<H: ScheduleHost>(controller: &H) {
    let scheduler = controller.scheduler();
    let entries = scheduler.lock().entries().to_vec();
    let changed: Vec<&Entry> = {
        let mut seen = scheduler.seen.lock().unwrap_or_else(|e| e.into_inner());
        let changed = entries
            .iter()
            .filter(|e| seen.get(&e.id) != Some(&e.status))
            .collect();
        *seen = entries.iter().map(|e| (e.id.clone(), e.status)).collect();
        changed
    };
    for entry in changed {
        match entry.status {
            Status::Upcoming => continue,
            Status::InProgress => {
                info!(entry = %entry.id, stream = %entry.stream, title = %entry.title, "schedule entry started")
            }
            status => {
                info!(entry = %entry.id, stream = %entry.stream, status = status.as_str(), "schedule entry ended")
            }
        }
        controller.announce(entry);
    }
    let mut baselines = scheduler.baselines();
    for entry in entries.iter().filter(|e| e.status == Status::InProgress) {
        if !baselines.contains_key(&entry.id) {
            baselines.insert(entry.id.clone(), counters(controller, entry));
        }
    }
}

/// Who runs a show, as this node sees it.
enum Runner {
    Here(Option<Lease>),
    Elsewhere,
    /// Redis does not answer: a show running here goes on, none starts.
    Unknown,
}

/// Every entry in progress with files plays them on one node; a show whose
/// entry is no longer in progress (or runs elsewhere now) stops.
async fn play_shows<H: ScheduleHost>(controller: &H) {
    let scheduler = controller.scheduler();
    let live: Vec<Entry> = scheduler
        .lock()
        .in_progress()
        .filter(|e| e.source.is_some())
        .cloned()
        .collect();
    let mut running_here = Vec::new();
    let mut starting = Vec::new();
    for entry in live {
        match runner(scheduler, &entry).await {
            Runner::Here(lease) => {
                let mut players = scheduler.players();
                match players.get_mut(&entry.id) {
                    Some(show) => {
                        // Taken again (renewed) with a new fence.
                        show.lease = lease;
                        running_here.push(entry.id);
                    }
                    None => starting.push((entry, lease)),
                }
            }
            Runner::Elsewhere => {}
            Runner::Unknown => running_here.push(entry.id),
        }
    }
    let stopping: Vec<Show> = {
        let mut players = scheduler.players();
        let over: Vec<String> = players
            .keys()
            .filter(|id| !running_here.contains(id))
            .cloned()
            .collect();
        over.iter().filter_map(|id| players.remove(id)).collect()
    };
    for show in stopping {
        // Joins its thread, which looks every 100 ms.
        let _ = tokio::task::spawn_blocking(move || show.player.stop()).await;
        release(scheduler, show.lease).await;
    }
    for (entry, lease) in starting {
        let Some(stream) = controller.streams().get(&entry.stream) else {
            release(scheduler, lease).await;
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
            // Live on another node since this one looked: that node runs
            // the show, at the next turn.
            Err(PublishError::LiveElsewhere { node }) if scheduler.shared.get().is_some() => {
                info!(entry = %entry.id, stream = %entry.stream, %node, "the stream is live on another node; the show runs there");
                release(scheduler, lease).await;
                continue;
            }
            Err(e) => Err(format!("the show could not take the stream: {e}")),
        };
        match started {
            Ok(player) => {
                info!(entry = %entry.id, stream = %entry.stream, "the show plays on this node");
                scheduler
                    .players()
                    .insert(entry.id.clone(), Show { player, lease });
            }
            Err(why) => {
                warn!(entry = %entry.id, stream = %entry.stream, %why, "schedule entry failed");
                release(scheduler, lease).await;
                let failed = update_settling(controller, |schedule| {
                    schedule.fail(&entry.id, why.clone(), SystemTime::now());
                    Ok::<_, std::convert::Infallible>(())
                })
                .await;
                if let Err(e) = failed {
                    warn!(entry = %entry.id, error = %e, "the entry's failure could not be recorded; it is tried again in a second");
                }
                observe(controller);
            }
        }
    }
}

/// Whether `entry`'s show runs here: alone, always; in a cluster, where its
/// lease is (the node the stream is live on takes it first).
async fn runner(scheduler: &Scheduler, entry: &Entry) -> Runner {
    let Some(shared) = scheduler.shared.get() else {
        return Runner::Here(None);
    };
    let cluster = &shared.cluster;
    let live_on = cluster
        .live_nodes(std::slice::from_ref(&entry.stream))
        .await;
    match live_on.as_deref() {
        Ok([Some(node)]) if node != cluster.node_id() => return Runner::Elsewhere,
        Ok(_) => {}
        Err(_) => return Runner::Unknown,
    }
    let name = format!("schedule:{}", entry.id);
    match bounded(cluster.leases().acquire(&name)).await {
        Ok(Acquired::Held(lease)) => Runner::Here(Some(lease)),
        Ok(Acquired::Taken { .. }) => Runner::Elsewhere,
        Err(_) => Runner::Unknown,
    }
}

/// A Redis call of the schedule's, within `REDIS_TIMEOUT`. The node's Redis
/// health is left to the streams' own calls: a schedule call that succeeds
/// must not clear what they found wrong (a version key that holds no
/// version).
async fn bounded<T, E: std::fmt::Display>(
    call: impl Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(REDIS_TIMEOUT, call).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer within {REDIS_TIMEOUT:?}")),
    }
}

/// Gives an entry's lease up once its show stopped here.
async fn release(scheduler: &Scheduler, lease: Option<Lease>) {
    if let (Some(shared), Some(lease)) = (scheduler.shared.get(), lease) {
        let cluster = &shared.cluster;
        let _ = bounded(cluster.leases().release(&lease)).await;
    }
}

/// What `entry`'s destinations sent here since `baseline`.
fn sent_since<H: ScheduleHost>(controller: &H, id: &str, baseline: &[Outcome]) -> Vec<Outcome> {
    let entry = controller.scheduler().lock().get(id).cloned();
    let Some(entry) = entry else {
        return Vec::new();
    };
    counters(controller, &entry)
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
        .collect()
}

/// The counters of the destinations `entry` covers, now.
fn counters<H: ScheduleHost>(controller: &H, entry: &Entry) -> Vec<Outcome> {
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
