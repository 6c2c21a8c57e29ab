//! The control plane: holds the running configuration and its TOML document,
//! applies every change (API call or reload) to the live relay as a diff, and
//! writes API changes back to the file.
//!
//! A change is: edit a copy of the document, re-validate the whole text with
//! the same parser `--check` uses, write it atomically, then start, stop or
//! reconfigure only what differs. Changes are serialized by one lock; the
//! media path never takes it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;
use tokio::sync::{broadcast, Mutex};
use toml_edit::DocumentMut;
use tracing::{info, warn};

use prism_fanout::destination::DestinationState;
use prism_fanout::DestinationUrl;
use prism_fanout::{
    spawn_destination, DestinationConfig, DestinationHandle, Registry, StreamEntry,
};
use prism_ingest::pull::{spawn_pull, Pull, PullSource};
use prism_media::{HubDirectory, StreamHub};

use crate::config::{Config, DestinationEntry, FanoutConfig, StreamConfig};
use crate::error::ApiError;
use crate::persist;

/// What `/v1/events` streams.
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
        error: Option<String>,
        /// The server acknowledges what it receives.
        verified: bool,
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
    ConfigChanged {
        /// `api` or `reload`.
        source: &'static str,
        /// The stream an API change was about; null for a reload.
        stream: Option<String>,
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
            Event::ConfigChanged { .. } => "config_changed",
        }
    }
}

pub(crate) fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

struct ControlState {
    config: Config,
    document: DocumentMut,
}

pub struct Controller {
    path: PathBuf,
    /// Held for a whole change, across its own task (an owned guard).
    state: Arc<Mutex<ControlState>>,
    registry: Arc<Registry>,
    directory: Arc<HubDirectory>,
    events: broadcast::Sender<Event>,
    /// The running pull of each stream that has a `pull` source.
    pulls: std::sync::Mutex<std::collections::HashMap<String, Pull>>,
}

impl Controller {
    /// Starts every configured stream and destination. `text` is the file
    /// `config` was parsed from.
    pub fn start(
        path: &Path,
        text: &str,
        config: Config,
        registry: Arc<Registry>,
        directory: Arc<HubDirectory>,
    ) -> Result<Arc<Self>, String> {
        let document: DocumentMut = text
            .parse()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let controller = Arc::new(Self {
            path: path.to_path_buf(),
            state: Arc::new(Mutex::new(ControlState { config, document })),
            registry,
            directory,
            events: broadcast::channel(1024).0,
            pulls: Default::default(),
        });
        {
            let state = controller
                .state
                .try_lock()
                .expect("nothing else holds a new controller");
            for stream in &state.config.streams {
                controller.add_stream(stream, &state.config.fanout);
            }
        }
        Ok(controller)
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Events that describe the present: what a client connecting mid-show
    /// is told first.
    pub fn current_state_events(&self) -> Vec<Event> {
        let mut events = Vec::new();
        for stream in self.registry.streams() {
            if let Some(publisher) = stream.hub.publisher() {
                events.push(Event::PublishStart {
                    stream: stream.id.clone(),
                    protocol: publisher.protocol.as_str(),
                    remote: publisher.remote.to_string(),
                    timestamp: now(),
                });
            }
            for destination in stream.destinations() {
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
    /// A transaction: once the edit is validated, the write, the live
    /// changes and the commit of the in-memory document run on their own
    /// task, to completion, even if the caller's future is dropped (hyper
    /// drops a handler's future when its HTTP client disconnects). So the
    /// file, the document the next change starts from and the running
    /// destinations never disagree.
    pub async fn change<T>(
        self: &Arc<Self>,
        stream: &str,
        edit: impl FnOnce(&mut DocumentMut, &Config) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let mut state = Arc::clone(&self.state).lock_owned().await;
        let mut document = state.document.clone();
        let result = edit(&mut document, &state.config)?;
        let text = document.to_string();
        let config = Config::parse(&self.path, &text).map_err(|e| ApiError::invalid(e.message))?;
        let controller = Arc::clone(self);
        let stream = stream.to_string();
        let transaction = tokio::spawn(async move {
            // The write (with its fsyncs) runs off the async threads, so a
            // slow disk never stalls the media path.
            let path = controller.path.clone();
            tokio::task::spawn_blocking(move || persist::write_atomically(&path, &text))
                .await
                .map_err(|e| ApiError::internal(format!("config write task failed: {e}")))?
                .map_err(|e| {
                    ApiError::internal(format!("cannot write {}: {e}", controller.path.display()))
                })?;
            controller.apply(&state.config, &config).await;
            controller.commit(&mut state, config, document, "api", Some(stream));
            Ok(())
        });
        transaction
            .await
            .map_err(|e| ApiError::internal(format!("the change failed: {e}")))??;
        Ok(result)
    }

    /// Re-reads the file and applies the difference; a bad file is refused
    /// and the running configuration stays. Like `change`, the live part
    /// runs to completion on its own task.
    pub async fn reload(self: &Arc<Self>) -> Result<(), ApiError> {
        let mut state = Arc::clone(&self.state).lock_owned().await;
        // Off the async threads: a config on a hung network mount must not
        // stall the relay (or the signal handling that would stop it).
        let path = self.path.clone();
        let text = tokio::task::spawn_blocking(move || std::fs::read_to_string(path))
            .await
            .map_err(|e| ApiError::internal(format!("config read task failed: {e}")))?
            .map_err(|e| ApiError::invalid(format!("cannot read {}: {e}", self.path.display())))?;
        let config =
            Config::parse(&self.path, &text).map_err(|e| ApiError::invalid(e.to_string()))?;
        let document: DocumentMut = text
            .parse()
            .map_err(|e| ApiError::invalid(format!("{e}")))?;
        if config.rtmp.listen != state.config.rtmp.listen
            || config.srt != state.config.srt
            || config.metrics_listen != state.config.metrics_listen
            || config.admin != state.config.admin
            || config.log_format != state.config.log_format
        {
            warn!("reload: listener, admin or log settings changed; they take effect at the next restart");
        }
        let controller = Arc::clone(self);
        tokio::spawn(async move {
            controller.apply(&state.config, &config).await;
            controller.commit(&mut state, config, document, "reload", None);
            info!(path = %controller.path.display(), "configuration reloaded");
        })
        .await
        .map_err(|e| ApiError::internal(format!("the reload failed: {e}")))
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

    /// Starts, stops and reconfigures what differs between two configs.
    async fn apply(&self, old: &Config, new: &Config) {
        let mut stopping = Vec::new();
        for stream in &old.streams {
            if !new.streams.iter().any(|s| s.id == stream.id) {
                if let Some(entry) = self.registry.take_stream(&stream.id) {
                    self.stop_pull(&stream.id).await;
                    self.directory.remove(&stream.key);
                    entry.hub.end_current_publish();
                    stopping.extend(entry.destinations());
                    info!(stream = %stream.id, "stream removed");
                }
            }
        }
        for stream in &new.streams {
            let Some(before) = old.streams.iter().find(|s| s.id == stream.id) else {
                self.add_stream(stream, &new.fanout);
                info!(stream = %stream.id, "stream added");
                continue;
            };
            let Some(entry) = self.registry.stream(&stream.id) else {
                continue;
            };
            entry.hub.set_reconnect_grace(stream.reconnect_grace);
            entry.hub.set_standby(stream.standby.clone());
            if before.pull != stream.pull {
                self.stop_pull(&stream.id).await;
                self.start_pull(stream, &entry.hub);
                info!(stream = %stream.id, pull = ?stream.pull.as_ref().map(|u| u.to_string()), "pull source changed");
            }
            if before.key != stream.key || before.srt_passphrase != stream.srt_passphrase {
                self.directory.remove(&before.key);
                self.directory.insert(
                    &stream.key,
                    Arc::clone(&entry.hub),
                    stream.srt_passphrase.clone(),
                );
                info!(stream = %stream.id, key = %stream.key, "stream key or SRT passphrase changed");
            }
            for destination in &before.destinations {
                if !stream.destinations.iter().any(|d| d.id == destination.id) {
                    stopping.extend(entry.take_destination(&destination.id));
                    info!(stream = %stream.id, destination = %destination.id, "destination removed");
                }
            }
            for destination in &stream.destinations {
                match before.destinations.iter().find(|d| d.id == destination.id) {
                    None => {
                        self.add_destination(&entry, destination, &new.fanout);
                        info!(stream = %stream.id, destination = %destination.id, "destination added");
                    }
                    Some(was)
                        if was.url != destination.url
                            || was.ca_file != destination.ca_file
                            || was.ack_timeout != destination.ack_timeout =>
                    {
                        // Stop the old session first: two publishes with one
                        // key would make the platform refuse the second.
                        if let Some(old) = entry.take_destination(&destination.id) {
                            old.shutdown().await;
                        }
                        self.add_destination(&entry, destination, &new.fanout);
                        info!(stream = %stream.id, destination = %destination.id, url = %destination.url, "destination reconnecting with a new url or key");
                    }
                    Some(was) if was.enabled != destination.enabled => {
                        if let Some(handle) = entry.destination(&destination.id) {
                            handle.set_enabled(destination.enabled);
                        }
                        info!(stream = %stream.id, destination = %destination.id, enabled = destination.enabled, "destination toggled");
                    }
                    Some(_) => {}
                }
            }
        }
        let mut tasks = tokio::task::JoinSet::new();
        for handle in stopping {
            tasks.spawn(async move { handle.shutdown().await });
        }
        while tasks.join_next().await.is_some() {}
    }

    fn add_stream(&self, stream: &StreamConfig, fanout: &FanoutConfig) {
        let hub = StreamHub::new(stream.id.clone());
        hub.set_reconnect_grace(stream.reconnect_grace);
        hub.set_standby(stream.standby.clone());
        let entry = self.registry.add_stream(StreamEntry {
            id: stream.id.clone(),
            hub: Arc::clone(&hub),
            destinations: Default::default(),
        });
        for destination in &stream.destinations {
            self.add_destination(&entry, destination, fanout);
        }
        self.watch_publishes(&hub);
        self.start_pull(stream, &hub);
        self.directory
            .insert(&stream.key, hub, stream.srt_passphrase.clone());
    }

    /// Starts pulling the stream from its `pull` source, if it has one; a
    /// stream without one takes publishers again.
    fn start_pull(&self, stream: &StreamConfig, hub: &Arc<StreamHub>) {
        hub.set_pull_only(stream.pull.is_some());
        let Some(url) = &stream.pull else {
            return;
        };
        let pull = spawn_pull(Arc::clone(hub), pull_source(url), url.to_string());
        info!(stream = %stream.id, source = %url, "pulling the stream from its source");
        self.pulls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(stream.id.clone(), pull);
    }

    async fn stop_pull(&self, stream: &str) {
        let pull = self
            .pulls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(stream);
        if let Some(pull) = pull {
            pull.stop().await;
        }
    }

    fn add_destination(
        &self,
        entry: &StreamEntry,
        destination: &DestinationEntry,
        fanout: &FanoutConfig,
    ) {
        let handle = Arc::new(spawn_destination(
            Arc::clone(&entry.hub),
            DestinationConfig {
                id: destination.id.clone(),
                url: destination.url.clone(),
                enabled: destination.enabled,
                queue_budget_bytes: fanout.queue_budget_bytes,
                connect_timeout: fanout.connect_timeout,
                write_timeout: fanout.write_timeout,
                socket_send_buffer_bytes: fanout.socket_send_buffer_bytes,
                chunk_size: fanout.chunk_size,
                ca_file: destination.ca_file.clone(),
                ack_timeout: destination.ack_timeout.unwrap_or(fanout.ack_timeout),
            },
        ));
        self.watch_destination(&entry.id, &handle);
        entry.put_destination(handle);
    }

    /// Forwards a destination's state changes to the event stream until the
    /// destination is gone.
    fn watch_destination(&self, stream: &str, handle: &DestinationHandle) {
        let mut changes = handle.status.watch_changes();
        let status = Arc::downgrade(&handle.status);
        let (stream, destination) = (stream.to_string(), handle.id.clone());
        let events = self.events.clone();
        tokio::spawn(async move {
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
        tokio::spawn(async move {
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
        let mut standby = hub.watch_standby();
        let stream = hub.id().to_string();
        let events = self.events.clone();
        tokio::spawn(async move {
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
        error: status.last_error(),
        verified: status.verified(),
        timestamp: now(),
    }
}

/// What the pull task needs of a `pull` URL.
fn pull_source(url: &DestinationUrl) -> PullSource {
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
        },
    }
}
