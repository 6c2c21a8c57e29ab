//! The control plane: holds the running configuration and its TOML document,
//! applies every change (API call or reload) to the live relay as a diff, and
//! writes API changes back to the file.
//!
//! In cluster mode the streams' document lives in Redis instead (see
//! `prism-cluster`): a change is a compare-and-set of the next version there,
//! and every version another node writes is applied here as the same diff.
//!
//! A change is: edit a copy of the document, re-validate the whole text with
//! the same parser `--check` uses, write it atomically, then start, stop or
//! reconfigure only what differs. Changes are serialized by one lock; the
//! media path never takes it.

use crate::scheduler::{state_path, Scheduler};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;
use tokio::sync::{broadcast, Mutex};
use toml_edit::DocumentMut;
use tracing::{error, info, warn};

use prism_cluster::node::VersionError;
use prism_cluster::{Cluster, StoreError};
use prism_fanout::DestinationState;
use prism_fanout::DestinationUrl;
use prism_fanout::{
    spawn_delayed_destination, spawn_destination, DestinationConfig, DestinationHandle,
};
use prism_hooks::auth::HttpAuthorizer;
use prism_hooks::Webhooks;
use prism_ingest::pull::{spawn_pull, PullSource};
use prism_media::arbiter::SourceRole;
use prism_media::auth::{PublishAuthorizer, Refusal, Verdict};
use prism_media::supervise::catch_panic;
use prism_media::{Stream as StreamRecord, StreamHub};

use crate::command::{free_stream_id, Command, Outcome};
use crate::config::{Config, DestinationEntry, FanoutConfig, RecordConfig, StreamConfig};
pub use crate::control_error::ControlError;
use crate::persist;
use crate::plan::{plan, Change};
use crate::streams::{RunningStream, StreamParts, Streams};
use prism_record::library::{Active, Library};

/// What `/v1/events` streams.
/// A destination's last failure as the API and events show it: `kind`
/// to act on (`prism_fanout::ErrorKind::as_str`), `message` to read.
#[derive(Clone, Debug, Serialize)]
pub struct FailureView {
    pub kind: &'static str,
    pub message: String,
}

impl From<prism_fanout::DestinationError> for FailureView {
    fn from(error: prism_fanout::DestinationError) -> Self {
        Self {
            kind: error.kind().as_str(),
            message: error.message().to_string(),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    PublishStart {
        stream: String,
        protocol: &'static str,
        remote: String,
        timestamp: String,
    },
    PublishStop {
        stream: String,
        timestamp: String,
    },
    DestinationState {
        stream: String,
        destination: String,
        state: &'static str,
        error: Option<FailureView>,
        /// The server acknowledges what it receives.
        verified: bool,
        /// The rules of its platform the stream breaks now.
        warnings: Vec<prism_fanout::rules::Warning>,
        timestamp: String,
    },
    StandbyStart {
        stream: String,
        /// `auto` (the encoder is gone or silent) or `manual`.
        reason: &'static str,
        timestamp: String,
    },
    StandbyStop {
        stream: String,
        timestamp: String,
    },
    /// The destinations continue from another source.
    SourceSwitch {
        stream: String,
        /// `primary`, `backup`, or null: no source (the on-air one left and
        /// the other cannot take over yet).
        to: Option<&'static str>,
        /// `start`, `disconnect`, `silence`, `failback` or `forced`.
        reason: Option<&'static str>,
        timestamp: String,
    },
    ConfigChanged {
        /// `api`, `reload`, or `cluster` (another node's change).
        source: &'static str,
        /// The stream an API change was about; null for a reload.
        stream: Option<String>,
        timestamp: String,
    },
    /// A schedule entry began: its destinations are live.
    ScheduleStart {
        entry: String,
        stream: String,
        title: String,
        timestamp: String,
    },
    /// A schedule entry ended: `completed`, `canceled`, or `failed` (with
    /// why).
    ScheduleEnd {
        entry: String,
        stream: String,
        title: String,
        status: &'static str,
        failure: Option<String>,
        timestamp: String,
    },
    /// A recording file was started.
    RecordingStart {
        stream: String,
        recording: String,
        /// Under `[record] path`.
        file: String,
        /// `start`, `length` (`segment_s` elapsed) or `configuration` (the
        /// codec parameters changed).
        reason: &'static str,
        timestamp: String,
    },
    /// A recording file was completed and closed.
    RecordingSegment {
        stream: String,
        recording: String,
        file: String,
        duration_s: f64,
        bytes: u64,
        timestamp: String,
    },
    /// Recording stopped: the publish ended, it was switched off, or a
    /// write failed (`error`; it resumes by itself).
    RecordingStop {
        stream: String,
        error: Option<FailureView>,
        timestamp: String,
    },
}

impl Event {
    /// The SSE event name.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::PublishStart { .. } => "publish_start",
            Event::PublishStop { .. } => "publish_stop",
            Event::DestinationState { .. } => "destination_state",
            Event::StandbyStart { .. } => "standby_start",
            Event::StandbyStop { .. } => "standby_stop",
            Event::SourceSwitch { .. } => "source_switch",
            Event::ConfigChanged { .. } => "config_changed",
            Event::ScheduleStart { .. } => "schedule_start",
            Event::ScheduleEnd { .. } => "schedule_end",
            Event::RecordingStart { .. } => "recording_start",
            Event::RecordingSegment { .. } => "recording_segment",
            Event::RecordingStop { .. } => "recording_stop",
        }
    }
}

pub(crate) fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

struct ControlState {
    config: Config,
    /// The streams' TOML: the node's whole file, or in cluster mode the
    /// shared streams document.
    document: DocumentMut,
    /// Cluster mode: the store version `document` is, and the node's file
    /// (its own settings), re-validated with every new document.
    version: u64,
    node_text: String,
}

/// Where the streams are kept: the node's file, or Redis (cluster mode).
enum Backing {
    File,
    Cluster {
        cluster: Arc<Cluster>,
        /// The last document this node applied, kept on disk so a restart
        /// while Redis is away starts from it.
        cache: PathBuf,
    },
}

pub struct Controller {
    path: PathBuf,
    backing: Backing,
    /// Held for a whole change, across its own task (an owned guard).
    state: Arc<Mutex<ControlState>>,
    streams: Arc<Streams>,
    events: broadcast::Sender<Event>,
    library: Arc<Library>,
    /// Woken when a recording file is completed (retention looks then).
    recording_completed: Arc<tokio::sync::Notify>,
    /// What a pulled source's messages may take: the `[rtmp]` bounds every
    /// publisher has (fixed at start, like the listener they govern).
    pull_limits: prism_rtmp::ServerLimits,
    /// The schedule, and its state file.
    scheduler: Arc<Scheduler>,
    /// The `[[webhooks]]` running now (replaced when they change).
    webhooks: std::sync::Mutex<Option<Arc<Webhooks>>>,
}

impl Controller {
    /// Starts every configured stream and destination. `text` is the file
    /// `config` was parsed from.
    pub fn start(
        path: &Path,
        text: &str,
        config: Config,
        streams: Arc<Streams>,
    ) -> Result<Arc<Self>, ControlError> {
        let document: DocumentMut = text
            .parse()
            .map_err(|e| ControlError::Invalid(format!("{}: {e}", path.display())))?;
        let scheduler = Scheduler::load(state_path(path)).map_err(ControlError::Invalid)?;
        Ok(Self::launch(
            path,
            Backing::File,
            ControlState {
                config,
                document,
                version: 0,
                node_text: text.to_string(),
            },
            streams,
            scheduler,
        ))
    }

    /// Cluster mode: the streams come from Redis. Starts from the cached
    /// copy of the last document this node applied, if any, then follows
    /// the store (every new version is applied as a diff, within a second).
    /// `text` is the node's file; `config` was parsed from it.
    pub fn start_cluster(
        path: &Path,
        text: &str,
        config: Config,
        cluster: Arc<Cluster>,
        streams: Arc<Streams>,
    ) -> Result<Arc<Self>, ControlError> {
        let cache = cache_path(path);
        let (version, document, config) = match read_cache(&cache) {
            Some((version, streams)) => {
                match Config::parse_with_streams(path, text, &cache, &streams) {
                    Ok(config) => {
                        info!(version, cache = %cache.display(), streams = config.streams.len(), "cluster: starting from the last configuration this node applied");
                        let document = streams.parse().map_err(|e| {
                            ControlError::Invalid(format!("{}: {e}", cache.display()))
                        })?;
                        (version, document, config)
                    }
                    Err(e) => {
                        warn!(error = %e, "cluster: the cached configuration is unusable; starting with no streams until Redis answers");
                        (0, DocumentMut::new(), config)
                    }
                }
            }
            None => (0, DocumentMut::new(), config),
        };
        let table = Arc::downgrade(&streams);
        cluster.gate().set_streams(Box::new(move |id| {
            let stream = table.upgrade()?.get(id)?;
            Some(Arc::clone(&stream.hub))
        }));
        let scheduler = Scheduler::load(state_path(path)).map_err(ControlError::Invalid)?;
        scheduler.share(Arc::clone(&cluster));
        let controller = Self::launch(
            path,
            Backing::Cluster {
                cluster: Arc::clone(&cluster),
                cache,
            },
            ControlState {
                config,
                document,
                version,
                node_text: text.to_string(),
            },
            streams,
            scheduler,
        );
        cluster.set_applied_version(version);
        let mut versions = cluster.watch_versions();
        let weak = Arc::downgrade(&controller);
        cluster.spawn_watch();
        tokio::spawn(async move {
            while versions.changed().await.is_ok() {
                let Some(controller) = weak.upgrade() else {
                    return;
                };
                if let Err(panic) = catch_panic("cluster_sync", controller.sync()).await {
                    error!(%panic, "cluster: applying a configuration version panicked; the next version is applied as usual");
                }
            }
        });
        Ok(controller)
    }

    fn launch(
        path: &Path,
        backing: Backing,
        state: ControlState,
        streams: Arc<Streams>,
        scheduler: Scheduler,
    ) -> Arc<Self> {
        let scheduler = Arc::new(scheduler);
        let pull_limits = prism_rtmp::ServerLimits {
            max_message_len: state.config.rtmp.max_message_bytes,
            max_partial_messages: state.config.rtmp.max_partial_messages,
        };
        let controller = Arc::new(Self {
            path: path.to_path_buf(),
            backing,
            state: Arc::new(Mutex::new(state)),
            streams,
            events: broadcast::channel(1024).0,
            library: Arc::default(),
            recording_completed: Arc::default(),
            pull_limits,
            scheduler,
            webhooks: std::sync::Mutex::new(None),
        });
        {
            let state = controller
                .state
                .try_lock()
                .expect("nothing else holds a new controller");
            for stream in &state.config.streams {
                controller.add_stream(stream, &state.config);
            }
            controller.install_authorizer(&state.config);
            controller.start_webhooks(&state.config);
        }
        spawn_webhook_dispatch(&controller);
        crate::retention::spawn(Arc::downgrade(&controller));
        crate::rule_checks::spawn(Arc::downgrade(&controller.streams));
        crate::scheduler::spawn(Arc::downgrade(&controller));
        controller
    }

    /// The schedule.
    pub fn scheduler(&self) -> &Arc<Scheduler> {
        &self.scheduler
    }

    /// Cluster mode: this node's link to the cluster.
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        match &self.backing {
            Backing::File => None,
            Backing::Cluster { cluster, .. } => Some(cluster),
        }
    }

    /// The node's one table of streams.
    pub fn streams(&self) -> &Arc<Streams> {
        &self.streams
    }

    /// The recordings on disk.
    pub fn library(&self) -> &Arc<Library> {
        &self.library
    }

    /// Where recordings lie, and the files being written now.
    pub async fn recording_context(&self) -> (PathBuf, Vec<Active>) {
        let root = self.record_config().await.root;
        (root, self.active_recordings())
    }

    /// `[record]` as it runs.
    pub async fn record_config(&self) -> RecordConfig {
        self.state.lock().await.config.record.clone()
    }

    /// The files the recorders are writing.
    pub fn active_recordings(&self) -> Vec<Active> {
        self.streams
            .all()
            .iter()
            .filter_map(|stream| stream.parts.recorder())
            .filter_map(|recorder| recorder.status.current())
            .map(|file| Active {
                duration_ms: file.duration_ms(),
                path: file.path,
            })
            .collect()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Events that describe the present: what a client connecting mid-show
    /// is told first.
    pub fn current_state_events(&self) -> Vec<Event> {
        let mut events = Vec::new();
        for stream in self.streams.all() {
            if let Some(publisher) = stream.hub.publisher() {
                events.push(Event::PublishStart {
                    stream: stream.id.clone(),
                    protocol: publisher.protocol.as_str(),
                    remote: publisher.remote.to_string(),
                    timestamp: now(),
                });
            }
            for destination in stream.parts.destinations.all() {
                events.push(destination_event(
                    &stream.id,
                    &destination.id,
                    &destination.status,
                ));
            }
        }
        events
    }

    /// A read of the running configuration.
    pub async fn with_config<T>(&self, read: impl FnOnce(&Config) -> T) -> T {
        read(&self.state.lock().await.config)
    }

    /// Applies an edit of the config document: validates the result, writes
    /// it to the file, applies the difference live.
    ///
    /// Carries out a typed command: its edit of the configuration, then the
    /// same transaction as every change (`change`).
    pub async fn execute(self: &Arc<Self>, command: Command) -> Result<Outcome, ControlError> {
        // A new stream's id is chosen first, so the change's event names it.
        let command = match command {
            Command::AddStream {
                id: None,
                key,
                pull,
            } => {
                let id = self.with_config(free_stream_id).await;
                Command::AddStream {
                    id: Some(id),
                    key,
                    pull,
                }
            }
            command => command,
        };
        let stream = command.stream().to_string();
        self.change(&stream, move |document, config| {
            command.edit(document, config)
        })
        .await
    }

    /// A transaction: once the edit is validated, the write, the live
    /// changes and the commit of the in-memory document run on their own
    /// task, to completion, even if the caller's future is dropped (hyper
    /// drops a handler's future when its HTTP client disconnects). So the
    /// file, the document the next change starts from and the running
    /// destinations never disagree.
    ///
    /// `edit` makes the change on the document; its own error (the caller's
    /// type, which the controller's errors convert into) is returned as is.
    pub async fn change<T, E: From<ControlError>>(
        self: &Arc<Self>,
        stream: &str,
        edit: impl FnOnce(&mut DocumentMut, &Config) -> Result<T, E>,
    ) -> Result<T, E> {
        if let Backing::Cluster { cluster, .. } = &self.backing {
            return self.change_in_cluster(cluster, stream, edit).await;
        }
        let state = Arc::clone(&self.state).lock_owned().await;
        let mut document = state.document.clone();
        let result = edit(&mut document, &state.config)?;
        self.commit_change(state, document, stream).await?;
        Ok(result)
    }

    /// The validated part of `change`: parse, write, apply, commit.
    async fn commit_change(
        self: &Arc<Self>,
        mut state: tokio::sync::OwnedMutexGuard<ControlState>,
        document: DocumentMut,
        stream: &str,
    ) -> Result<(), ControlError> {
        let text = document.to_string();
        let (path, parsed) = (self.path.clone(), text.clone());
        let config = off_async_threads(move || Config::parse(&path, &parsed))
            .await?
            .map_err(ControlError::InvalidConfig)?;
        let controller = Arc::clone(self);
        let stream = stream.to_string();
        let transaction = tokio::spawn(async move {
            // The write (with its fsyncs) runs off the async threads, so a
            // slow disk never stalls the media path.
            let path = controller.path.clone();
            tokio::task::spawn_blocking(move || persist::write_atomically(&path, &text))
                .await
                .map_err(|e| ControlError::Internal(format!("config write task failed: {e}")))?
                .map_err(|e| {
                    ControlError::Internal(format!(
                        "cannot write {}: {e}",
                        controller.path.display()
                    ))
                })?;
            controller.apply(&state.config, &config).await;
            controller.commit(&mut state, config, document, "api", Some(stream));
            Ok(())
        });
        transaction
            .await
            .map_err(|e| ControlError::Internal(format!("the change failed: {e}")))?
    }

    /// Re-reads the file and applies the difference; a bad file is refused
    /// and the running configuration stays. Like `change`, the live part
    /// runs to completion on its own task.
    pub async fn reload(self: &Arc<Self>) -> Result<(), ControlError> {
        if let Backing::Cluster { .. } = &self.backing {
            return self.reload_in_cluster().await;
        }
        let mut state = Arc::clone(&self.state).lock_owned().await;
        // Off the async threads: a config on a hung network mount must not
        // stall the relay (or the signal handling that would stop it).
        let path = self.path.clone();
        let text = tokio::task::spawn_blocking(move || std::fs::read_to_string(path))
            .await
            .map_err(|e| ControlError::Internal(format!("config read task failed: {e}")))?
            .map_err(|e| {
                ControlError::Invalid(format!("cannot read {}: {e}", self.path.display()))
            })?;
        let (path, parsed) = (self.path.clone(), text.clone());
        let config = off_async_threads(move || Config::parse(&path, &parsed))
            .await?
            .map_err(|e| ControlError::Invalid(e.to_string()))?;
        let document: DocumentMut = text
            .parse()
            .map_err(|e| ControlError::Invalid(format!("{e}")))?;
        warn_of_restart_settings(&state.config, &config);
        let controller = Arc::clone(self);
        tokio::spawn(async move {
            controller.apply(&state.config, &config).await;
            state.node_text = text;
            controller.commit(&mut state, config, document, "reload", None);
            info!(path = %controller.path.display(), "configuration reloaded");
        })
        .await
        .map_err(|e| ControlError::Internal(format!("the reload failed: {e}")))
    }

    /// Cluster mode: the edit is made on the newest streams document and
    /// written to Redis only if nobody changed it meanwhile (compare and
    /// set by version); then applied here. Other nodes apply it when they
    /// hear of the new version.
    async fn change_in_cluster<T, E: From<ControlError>>(
        self: &Arc<Self>,
        cluster: &Arc<Cluster>,
        stream: &str,
        edit: impl FnOnce(&mut DocumentMut, &Config) -> Result<T, E>,
    ) -> Result<T, E> {
        // Catch up first: an edit made on an old version would conflict.
        let newest = cluster.read_version().await.map_err(|e| match e {
            VersionError::Unreachable(e) => redis_unavailable(e),
            VersionError::Bad(e) => ControlError::StoreUnavailable(e.to_string()),
        })?;
        if newest > cluster.applied_version() {
            self.sync().await?;
        }
        let state = Arc::clone(&self.state).lock_owned().await;
        let mut document = state.document.clone();
        let result = edit(&mut document, &state.config)?;
        self.commit_change_in_cluster(cluster, state, document, stream)
            .await?;
        Ok(result)
    }

    /// The validated part of `change_in_cluster`: parse, compare-and-set in
    /// Redis, apply, commit.
    async fn commit_change_in_cluster(
        self: &Arc<Self>,
        cluster: &Arc<Cluster>,
        mut state: tokio::sync::OwnedMutexGuard<ControlState>,
        document: DocumentMut,
        stream: &str,
    ) -> Result<(), ControlError> {
        let text = document.to_string();
        let (path, node_text, origin, streams) = (
            self.path.clone(),
            state.node_text.clone(),
            store_origin(cluster),
            text.clone(),
        );
        let config = off_async_threads(move || {
            Config::parse_with_streams(&path, &node_text, &origin, &streams)
        })
        .await?
        .map_err(ControlError::InvalidConfig)?;
        let written = tokio::time::timeout(
            CLUSTER_WRITE_TIMEOUT,
            cluster.store().write(state.version, &text),
        )
        .await;
        let version = match written {
            Ok(Ok(version)) => {
                cluster.health().saw_success();
                version
            }
            Ok(Err(StoreError::Conflict { current })) => {
                return Err(ControlError::Conflict(format!(
                    "the streams changed on another node meanwhile (now version {current}); nothing was changed here: send the request again"
                )))
            }
            Ok(Err(StoreError::Redis(e))) => {
                cluster.health().saw_failure(&e.to_string());
                return Err(redis_unavailable(e));
            }
            Ok(Err(e @ StoreError::BadVersion { .. })) => {
                cluster.health().saw_failure(&e.to_string());
                return Err(ControlError::StoreUnavailable(e.to_string()));
            }
            // The write may or may not have landed: the version poll tells,
            // and the change is applied once either way.
            Err(_) => {
                let error = "Redis did not answer in time; the change may still land, see GET /v1/streams";
                cluster.health().saw_failure(error);
                return Err(redis_unavailable(error));
            }
        };
        let controller = Arc::clone(self);
        let stream = stream.to_string();
        tokio::spawn(async move {
            controller.apply(&state.config, &config).await;
            controller.adopted(&mut state, version, &text);
            controller.commit(&mut state, config, document, "api", Some(stream));
        })
        .await
        .map_err(|e| ControlError::Internal(format!("the change failed: {e}")))
    }

    /// Cluster mode: applies the store's newest version if it is newer than
    /// the one running here. A document that does not validate here (edited
    /// in Redis by hand, or a newer Prism's) is refused and logged; the
    /// running configuration stays.
    pub async fn sync(self: &Arc<Self>) -> Result<(), ControlError> {
        let Backing::Cluster { cluster, .. } = &self.backing else {
            return Ok(());
        };
        let mut state = Arc::clone(&self.state).lock_owned().await;
        let stored = cluster
            .health()
            .bounded(CLUSTER_WRITE_TIMEOUT, cluster.store().read())
            .await
            .map_err(redis_unavailable)?;
        if stored.version == state.version {
            return Ok(());
        }
        if stored.version < state.version {
            // Redis lost the document (restarted without persistence, or
            // flushed): put back the newest version this node knows.
            warn!(store_version = stored.version, version = state.version, "cluster: Redis holds an older configuration than this node ran; restoring this node's");
            let text = state.document.to_string();
            return cluster
                .health()
                .bounded(
                    CLUSTER_WRITE_TIMEOUT,
                    cluster.store().restore(state.version, &text),
                )
                .await
                .map(|_| ())
                .map_err(redis_unavailable);
        }
        let origin = store_origin(cluster);
        let (path, node_text, parsed_origin, streams) = (
            self.path.clone(),
            state.node_text.clone(),
            origin.clone(),
            stored.text.clone(),
        );
        let parsed = off_async_threads(move || {
            Config::parse_with_streams(&path, &node_text, &parsed_origin, &streams)
        })
        .await?;
        let config = match parsed {
            Ok(config) => config,
            Err(e) => {
                error!(
                    version = stored.version,
                    "cluster: the shared configuration is invalid here, keeping version {}: {e}",
                    state.version
                );
                return Err(ControlError::Invalid(e.to_string()));
            }
        };
        let document: DocumentMut = stored
            .text
            .parse()
            .map_err(|e| ControlError::Invalid(format!("{}: {e}", origin.display())))?;
        let controller = Arc::clone(self);
        tokio::spawn(async move {
            controller.apply(&state.config, &config).await;
            info!(
                version = stored.version,
                was = state.version,
                streams = config.streams.len(),
                "cluster: configuration applied"
            );
            controller.adopted(&mut state, stored.version, &stored.text);
            controller.commit(&mut state, config, document, "cluster", None);
        })
        .await
        .map_err(|e| {
            ControlError::Internal(format!("applying the cluster's configuration failed: {e}"))
        })
    }

    /// Cluster mode: SIGHUP or `POST /v1/reload` re-reads the node's file
    /// (its own settings) and the shared streams.
    async fn reload_in_cluster(self: &Arc<Self>) -> Result<(), ControlError> {
        let Backing::Cluster { cluster, .. } = &self.backing else {
            return Ok(());
        };
        {
            let mut state = self.state.lock().await;
            let path = self.path.clone();
            let text = tokio::task::spawn_blocking(move || std::fs::read_to_string(path))
                .await
                .map_err(|e| ControlError::Internal(format!("config read task failed: {e}")))?
                .map_err(|e| {
                    ControlError::Invalid(format!("cannot read {}: {e}", self.path.display()))
                })?;
            let (path, node_text, origin, streams) = (
                self.path.clone(),
                text.clone(),
                store_origin(cluster),
                state.document.to_string(),
            );
            let config = off_async_threads(move || {
                Config::parse_with_streams(&path, &node_text, &origin, &streams)
            })
            .await?
            .map_err(|e| ControlError::Invalid(e.to_string()))?;
            warn_of_restart_settings(&state.config, &config);
            state.node_text = text;
        }
        self.sync().await
    }

    /// Cluster mode: `version` of the streams document is the running one;
    /// it is kept on disk for a restart while Redis is away.
    fn adopted(&self, state: &mut ControlState, version: u64, text: &str) {
        state.version = version;
        let Backing::Cluster { cache, cluster } = &self.backing else {
            return;
        };
        cluster.set_applied_version(version);
        let contents = format!("{CACHE_HEADER}{version}\n{text}");
        if let Err(e) = persist::write_atomically(cache, &contents) {
            warn!(cache = %cache.display(), error = %e, "cluster: cannot keep a copy of the configuration on disk");
        }
    }

    /// Makes an applied config the running one and tells the event stream.
    fn commit(
        &self,
        state: &mut ControlState,
        config: Config,
        document: DocumentMut,
        source: &'static str,
        stream: Option<String>,
    ) {
        state.config = config;
        state.document = document;
        let _ = self.events.send(Event::ConfigChanged {
            source,
            stream,
            timestamp: now(),
        });
    }

    /// Starts, stops and reconfigures what differs between two configs: the
    /// steps `plan` lists, carried out.
    async fn apply(&self, old: &Config, new: &Config) {
        let mut stopping = Vec::new();
        for change in plan(old, new) {
            match change {
                Change::RemoveStream { stream } => {
                    if let Some(entry) = self.streams.remove(&stream.id) {
                        entry.parts.stop_pulls().await;
                        entry.parts.stop_recording().await;
                        entry.hub.end_current_publish();
                        stopping.extend(entry.parts.destinations.take_all());
                        info!(stream = %stream.id, "stream removed");
                    }
                }
                Change::AddStream { stream } => {
                    self.add_stream(stream, new);
                    info!(stream = %stream.id, "stream added");
                }
                Change::UpdateStreamSettings { stream } => {
                    if let Some(entry) = self.streams.get(&stream.id) {
                        entry.hub.set_reconnect_grace(stream.reconnect_grace);
                        entry.hub.set_failover(stream.failover);
                        entry.hub.set_standby(stream.standby.clone());
                    }
                }
                Change::RestartPull { stream } => {
                    if let Some(entry) = self.streams.get(&stream.id) {
                        entry.parts.stop_pulls().await;
                        self.start_pulls(stream, &entry);
                        info!(stream = %stream.id, pull = ?stream.pull.as_ref().map(|u| u.to_string()), "pull source changed");
                    }
                }
                Change::Rekey { stream, old } => {
                    if self.streams.get(&stream.id).is_some() {
                        let _ = old;
                        self.streams
                            .rekey(&stream.id, &stream.key, stream.srt_passphrase.clone());
                        info!(stream = %stream.id, key = %stream.key, "stream key or SRT passphrase changed");
                    }
                }
                Change::RemoveDestination {
                    stream,
                    destination,
                } => {
                    if let Some(entry) = self.streams.get(stream) {
                        stopping.extend(entry.parts.destinations.take(destination));
                        info!(%stream, %destination, "destination removed");
                    }
                }
                Change::AddDestination {
                    stream,
                    destination,
                } => {
                    if let Some(entry) = self.streams.get(stream) {
                        self.add_destination(&entry, destination, &new.fanout);
                        info!(%stream, destination = %destination.id, "destination added");
                    }
                }
                Change::ReplaceDestination {
                    stream,
                    destination,
                } => {
                    if let Some(entry) = self.streams.get(stream) {
                        if let Some(old) = entry.parts.destinations.take(&destination.id) {
                            old.shutdown().await;
                        }
                        self.add_destination(&entry, destination, &new.fanout);
                        info!(%stream, destination = %destination.id, url = %destination.url, "destination reconnecting with a new url or key");
                    }
                }
                Change::SetEnabled {
                    stream,
                    destination,
                    enabled,
                } => {
                    let handle = self
                        .streams
                        .get(stream)
                        .and_then(|entry| entry.parts.destinations.get(destination));
                    // A destination a schedule entry takes live stays live.
                    let booked = self.scheduler.booked(stream, destination);
                    if let Some(handle) = handle {
                        handle.set_enabled(enabled || booked);
                    }
                    info!(%stream, %destination, enabled, "destination toggled");
                }
                Change::StopRecording { stream } => {
                    if let Some(entry) = self.streams.get(&stream.id) {
                        entry.parts.stop_recording().await;
                        info!(stream = %stream.id, "recording stopped");
                    }
                }
                Change::StartRecording { stream } => {
                    if let Some(entry) = self.streams.get(&stream.id) {
                        self.start_recording(&entry, &new.record);
                    }
                }
            }
        }
        if hooks_changed(old, new) {
            self.install_authorizer(new);
        }
        if old.webhooks != new.webhooks {
            self.start_webhooks(new);
        }
        prism_fanout::shut_down(stopping).await;
    }

    /// Starts the configured webhooks (stopping those running), each with
    /// what its journal in `NAME.webhooks/` beside the config still holds.
    fn start_webhooks(&self, config: &Config) {
        let running = (!config.webhooks.is_empty()).then(|| {
            Arc::new(Webhooks::start(
                config.webhooks.clone(),
                &webhooks_dir(&self.path),
            ))
        });
        *self.webhooks.lock().unwrap_or_else(|e| e.into_inner()) = running;
    }

    /// Gives ingest the publish authorisation hook the config names (or
    /// none): `[auth]`, and each stream's own `auth`.
    fn install_authorizer(&self, config: &Config) {
        let streams = config
            .streams
            .iter()
            .map(|s| (s.id.clone(), s.auth.clone()))
            .collect();
        match HttpAuthorizer::new(config.auth.clone(), streams) {
            Ok(authorizer) => {
                let authorizer = authorizer.map(|a| Arc::new(a) as Arc<dyn PublishAuthorizer>);
                self.streams.set_authorizer(authorizer);
            }
            // Its CA file was checked with the config: it went away since.
            // Every publish a hook would be asked about is refused, never
            // let through unasked.
            Err(e) => {
                error!(error = %e, "the publish authorisation hook could not be set up; publishes it would be asked about are refused until the config is fixed");
                self.streams.set_authorizer(Some(Arc::new(RefuseAll)));
            }
        }
    }

    fn add_stream(&self, stream: &StreamConfig, config: &Config) {
        let fanout = &config.fanout;
        let hub = StreamHub::new(stream.id.clone());
        if let Some(cluster) = self.cluster() {
            hub.set_gate(Arc::clone(cluster.gate()) as Arc<dyn prism_media::PublishGate>);
        }
        hub.set_reconnect_grace(stream.reconnect_grace);
        hub.set_failover(stream.failover);
        hub.set_standby(stream.standby.clone());
        let entry = self.streams.insert(
            StreamRecord {
                id: stream.id.clone(),
                hub: Arc::clone(&hub),
                parts: StreamParts::default(),
            },
            &stream.key,
            stream.srt_passphrase.clone(),
        );
        for destination in &stream.destinations {
            self.add_destination(&entry, destination, fanout);
        }
        self.watch_publishes(&hub);
        self.start_pulls(stream, &entry);
        if stream.record {
            self.start_recording(&entry, &config.record);
        }
    }

    /// Starts recording the stream's sessions (its first file at the next
    /// keyframe).
    fn start_recording(&self, entry: &RunningStream, record: &RecordConfig) {
        let events = self.events.clone();
        let root = record.root.clone();
        let completed = Arc::clone(&self.recording_completed);
        let sink: prism_record::recorder::EventSink = Arc::new(move |event| {
            if matches!(event, prism_record::RecordingEvent::Segment { .. }) {
                completed.notify_one();
            }
            let _ = events.send(recording_event(&root, event));
        });
        let recorder =
            prism_record::spawn_recorder(Arc::clone(&entry.hub), record.settings(), sink);
        info!(stream = %entry.id, path = %record.root.display(), format = record.format.as_str(), "recording the stream");
        if let Some(previous) = entry.parts.set_recorder(Some(recorder)) {
            // Not expected (plan stops first); it completes its file.
            tokio::spawn(async move { previous.stop().await });
        }
    }

    /// Starts pulling the stream from its `pull` source and its backup
    /// from `backup_pull`, where it has them; a stream without `pull` takes
    /// pushed primaries again (a pushed backup is taken either way).
    fn start_pulls(&self, stream: &StreamConfig, entry: &RunningStream) {
        let hub = &entry.hub;
        hub.set_pull_only(stream.pull.is_some());
        let sources = [
            (SourceRole::Primary, &stream.pull),
            (SourceRole::Backup, &stream.backup_pull),
        ];
        for (role, url) in sources {
            let Some(url) = url else {
                continue;
            };
            let pull = spawn_pull(
                Arc::clone(hub),
                pull_source(url, self.pull_limits),
                url.to_string(),
                role,
            );
            info!(stream = %stream.id, source = %url, role = role.as_str(), "pulling the stream from its source");
            entry.parts.add_pull(role, pull);
        }
    }

    fn add_destination(
        &self,
        entry: &RunningStream,
        destination: &DestinationEntry,
        fanout: &FanoutConfig,
    ) {
        let config = DestinationConfig {
            id: destination.id.clone(),
            url: destination.url.clone(),
            enabled: destination.enabled || self.scheduler.booked(&entry.id, &destination.id),
            queue_budget_bytes: fanout.queue_budget_bytes,
            connect_timeout: fanout.connect_timeout,
            write_timeout: fanout.write_timeout,
            socket_send_buffer_bytes: fanout.socket_send_buffer_bytes,
            chunk_size: fanout.chunk_size,
            ca_file: destination.ca_file.clone(),
            ack_timeout: destination.ack_timeout.unwrap_or(fanout.ack_timeout),
            max_delay: destination.effective_max_delay(fanout),
            tracks: destination.tracks,
            rules: destination
                .platform
                .as_deref()
                .and_then(crate::platforms::rules),
        };
        let handle = Arc::new(if destination.delay.is_zero() {
            spawn_destination(Arc::clone(&entry.hub), config)
        } else {
            let line = entry
                .parts
                .delay_line(&entry.hub, fanout.max_delay_buffer_bytes);
            spawn_delayed_destination(line.hub_for(destination.delay), config)
        });
        self.watch_destination(&entry.id, &handle);
        entry.parts.destinations.put(handle);
    }

    /// Forwards a destination's state changes to the event stream until the
    /// destination is gone.
    fn watch_destination(&self, stream: &str, handle: &DestinationHandle) {
        let mut changes = handle.status.watch_changes();
        let status = Arc::downgrade(&handle.status);
        let (stream, destination) = (stream.to_string(), handle.id.clone());
        let events = self.events.clone();
        spawn_event_watch(async move {
            while changes.changed().await.is_ok() {
                let Some(status) = status.upgrade() else {
                    break;
                };
                let _ = events.send(destination_event(&stream, &destination, &status));
            }
        });
    }

    /// Forwards a stream's publish starts and stops until the stream is gone.
    fn watch_publishes(&self, hub: &Arc<StreamHub>) {
        let mut live = hub.watch_live();
        let weak = Arc::downgrade(hub);
        let stream = hub.id().to_string();
        let events = self.events.clone();
        spawn_event_watch(async move {
            while live.changed().await.is_ok() {
                let state = *live.borrow_and_update();
                let event = match (state.live, weak.upgrade().and_then(|h| h.publisher())) {
                    (true, Some(publisher)) => Event::PublishStart {
                        stream: stream.clone(),
                        protocol: publisher.protocol.as_str(),
                        remote: publisher.remote.to_string(),
                        timestamp: now(),
                    },
                    (true, None) => continue,
                    (false, _) => Event::PublishStop {
                        stream: stream.clone(),
                        timestamp: now(),
                    },
                };
                let _ = events.send(event);
            }
        });
        let mut sources = hub.watch_sources();
        let stream = hub.id().to_string();
        let events = self.events.clone();
        spawn_event_watch(async move {
            while sources.changed().await.is_ok() {
                let switched = *sources.borrow_and_update();
                if switched.reason.is_none() {
                    continue; // the session ended
                }
                let _ = events.send(Event::SourceSwitch {
                    stream: stream.clone(),
                    to: switched.to.map(|role| role.as_str()),
                    reason: switched.reason.map(|reason| reason.as_str()),
                    timestamp: now(),
                });
            }
        });
        let mut standby = hub.watch_standby();
        let stream = hub.id().to_string();
        let events = self.events.clone();
        spawn_event_watch(async move {
            let mut was = None;
            while standby.changed().await.is_ok() {
                let now_on = *standby.borrow_and_update();
                let event = match (was, now_on) {
                    (_, Some(reason)) if was != now_on => Event::StandbyStart {
                        stream: stream.clone(),
                        reason: reason.as_str(),
                        timestamp: now(),
                    },
                    (Some(_), None) => Event::StandbyStop {
                        stream: stream.clone(),
                        timestamp: now(),
                    },
                    _ => continue,
                };
                was = now_on;
                let _ = events.send(event);
            }
        });
    }
}

/// Runs a task that forwards a watch to the event stream. Supervised: a
/// panic is logged and counted (`task="event_watch"`), and costs the API's
/// events that one watch, nothing else.
fn spawn_event_watch(watch: impl std::future::Future<Output = ()> + Send + 'static) {
    tokio::spawn(async move {
        if let Err(panic) = catch_panic("event_watch", watch).await {
            error!(%panic, "an event watch panicked; its events stop");
        }
    });
}

fn destination_event(
    stream: &str,
    destination: &str,
    status: &prism_fanout::DestinationStatus,
) -> Event {
    let state: DestinationState = status.state();
    Event::DestinationState {
        stream: stream.to_string(),
        destination: destination.to_string(),
        state: state.as_str(),
        error: status.last_error().map(FailureView::from),
        verified: status.verified(),
        warnings: status.warnings(),
        timestamp: now(),
    }
}

/// What the pull task needs of a `pull` URL.
fn pull_source(url: &DestinationUrl, limits: prism_rtmp::ServerLimits) -> PullSource {
    match &url.srt {
        Some(options) => PullSource::Srt {
            address: url.host_port(),
            stream_id: options.stream_id.as_ref().map(|id| id.expose().to_string()),
            passphrase: options.passphrase.as_ref().map(|p| p.expose().to_string()),
            latency: options.latency,
            key_length: options.key_length,
        },
        None => PullSource::Rtmp {
            host: url.host.clone(),
            port: url.port,
            target: url.publish_target(),
            limits,
        },
    }
}

/// How long an API change waits for Redis before it answers 503.
const CLUSTER_WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// The first line of the cache file, followed by the version.
const CACHE_HEADER: &str = "# Prism cluster cache: the last shared configuration this node applied. Do not edit.\n# version = ";

/// `prism.toml` keeps its cache as `prism.cluster-cache.toml` beside it.
fn cache_path(config: &Path) -> PathBuf {
    persist::beside_config(config, "cluster-cache.toml")
}

/// The cached version and document, if a readable cache is there.
fn read_cache(path: &Path) -> Option<(u64, String)> {
    let text = std::fs::read_to_string(path).ok()?;
    let rest = text.strip_prefix(CACHE_HEADER)?;
    let (version, document) = rest.split_once('\n')?;
    Some((version.trim().parse().ok()?, document.to_string()))
}

/// How errors in the shared streams document name it.
fn store_origin(cluster: &Cluster) -> PathBuf {
    PathBuf::from(format!("redis:{}:streams", cluster.settings().prefix))
}

fn redis_unavailable(error: impl std::fmt::Display) -> ControlError {
    ControlError::StoreUnavailable(format!(
        "the cluster's Redis is unreachable ({error}): changes are refused until it is back; running shows go on unchanged"
    ))
}

fn warn_of_restart_settings(old: &Config, new: &Config) {
    if new.rtmp.listen != old.rtmp.listen
        || new.srt != old.srt
        || new.metrics_listen != old.metrics_listen
        || new.admin != old.admin
        || new.log_format != old.log_format
        || new.cluster != old.cluster
    {
        warn!("reload: listener, admin, cluster or log settings changed; they take effect at the next restart");
    }
}

/// Runs blocking work off the async threads: a config names files
/// (standby clips, CA and token files) that are read and decoded, and the
/// recordings lie on a disk; a slow disk or a large clip must not stall
/// the media path.
pub(crate) async fn off_async_threads<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ControlError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ControlError::Internal(format!("a blocking task failed: {e}")))
}

/// A recorder's news as the event stream tells it (files named under the
/// recordings folder, not by their full path).
fn recording_event(root: &Path, event: prism_record::RecordingEvent) -> Event {
    use prism_record::RecordingEvent as Recording;
    let shown = |file: &Path| {
        file.strip_prefix(root)
            .unwrap_or(file)
            .display()
            .to_string()
    };
    match event {
        Recording::Started {
            stream,
            recording,
            file,
            reason,
        } => Event::RecordingStart {
            stream,
            recording: recording.to_string(),
            file: shown(&file),
            reason: reason.as_str(),
            timestamp: now(),
        },
        Recording::Segment {
            stream,
            recording,
            file,
            duration_ms,
            bytes,
        } => Event::RecordingSegment {
            stream,
            recording: recording.to_string(),
            file: shown(&file),
            duration_s: duration_ms as f64 / 1000.0,
            bytes,
            timestamp: now(),
        },
        Recording::Stopped { stream, error } => Event::RecordingStop {
            stream,
            error: error.map(|e| FailureView {
                kind: e.kind.as_str(),
                message: e.to_string(),
            }),
            timestamp: now(),
        },
    }
}

impl crate::scheduler::ScheduleHost for Controller {
    fn scheduler(&self) -> &Arc<Scheduler> {
        &self.scheduler
    }

    fn streams(&self) -> &Arc<Streams> {
        &self.streams
    }

    fn announce(&self, entry: &prism_schedule::Entry) {
        let _ = self.events.send(schedule_event(entry));
    }

    async fn configured_destinations(&self) -> Vec<(String, String, bool)> {
        self.with_config(|config| {
            config
                .streams
                .iter()
                .flat_map(|s| {
                    s.destinations
                        .iter()
                        .map(|d| (s.id.clone(), d.id.clone(), d.enabled))
                })
                .collect()
        })
        .await
    }
}

/// The event a schedule entry's start or end sends.
fn schedule_event(entry: &prism_schedule::Entry) -> Event {
    let (id, stream, title) = (entry.id.clone(), entry.stream.clone(), entry.title.clone());
    match entry.status {
        prism_schedule::Status::InProgress => Event::ScheduleStart {
            entry: id,
            stream,
            title,
            timestamp: now(),
        },
        status => Event::ScheduleEnd {
            entry: id,
            stream,
            title,
            status: status.as_str(),
            failure: entry.failure.clone(),
            timestamp: now(),
        },
    }
}

impl crate::retention::Recordings for Controller {
    async fn record_config(&self) -> RecordConfig {
        Controller::record_config(self).await
    }

    fn active_recordings(&self) -> Vec<Active> {
        Controller::active_recordings(self)
    }

    fn library(&self) -> &Arc<Library> {
        Controller::library(self)
    }

    fn completed(&self) -> &Arc<tokio::sync::Notify> {
        &self.recording_completed
    }
}

/// Where the webhooks' journals are: `NAME.webhooks/` beside the config.
fn webhooks_dir(config: &Path) -> PathBuf {
    persist::beside_config(config, "webhooks")
}

/// Hands every event to the webhooks, as `GET /v1/events` sends it, until
/// the controller is gone. Events it fell behind on are counted as dropped;
/// a panic is logged and counted, and it goes on with the next event.
fn spawn_webhook_dispatch(controller: &Arc<Controller>) {
    let mut events = controller.events.subscribe();
    let controller = Arc::downgrade(controller);
    tokio::spawn(async move {
        loop {
            let dispatch = dispatch_to_webhooks(&controller, &mut events);
            match catch_panic("webhook_dispatch", dispatch).await {
                Ok(()) => return,
                Err(panic) => {
                    error!(panic = %panic.message, "handing events to the webhooks panicked; it goes on with the next event")
                }
            }
        }
    });
}

async fn dispatch_to_webhooks(
    controller: &std::sync::Weak<Controller>,
    events: &mut broadcast::Receiver<Event>,
) {
    loop {
        let event = match events.recv().await {
            Ok(event) => event,
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                warn!(
                    missed,
                    "the webhooks fell behind the events; those are not sent"
                );
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let Some(controller) = controller.upgrade() else {
            return;
        };
        let webhooks = controller
            .webhooks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(webhooks) = webhooks {
            match serde_json::to_value(&event) {
                Ok(fields) => webhooks.publish(event.kind(), &fields),
                Err(e) => error!(error = %e, "an event could not be made JSON for the webhooks"),
            }
        }
    }
}

/// Whether a change of config changes who the authorisation hook asks.
fn hooks_changed(old: &Config, new: &Config) -> bool {
    let auth = |config: &Config| -> Vec<(String, prism_hooks::config::StreamAuth)> {
        config
            .streams
            .iter()
            .map(|s| (s.id.clone(), s.auth.clone()))
            .collect()
    };
    old.auth != new.auth || auth(old) != auth(new)
}

/// What stands in for a hook that could not be set up: every publish it
/// would be asked about is refused.
struct RefuseAll;

impl PublishAuthorizer for RefuseAll {
    fn authorize<'a>(
        &'a self,
        _attempt: &'a prism_media::auth::PublishAttempt,
        _stream: Option<&'a str>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<Verdict>> + Send + 'a>> {
        Box::pin(async { Some(Verdict::Refuse(Refusal::HookFailed)) })
    }
}
