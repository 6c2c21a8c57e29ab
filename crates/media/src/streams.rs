//! The one table of the streams a node relays, by id and by key.
//!
//! Ingest finds a stream by the key a publisher names (through
//! [`KeyDirectory`], which is all it sees of the table); the control plane,
//! the API, the metrics and the cluster find it by id. What the layers above
//! attach to a stream (its destinations, its pulls) travels in `parts`, so
//! there is no second table to keep in step.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use crate::arbiter::SourceRole;
use crate::auth::{PublishAttempt, PublishAuthorizer, Verdict};
use crate::hub::{PublishError, StreamHub};
use crate::secret::StreamKey;

/// One stream: its hub and what the layers above attach to it.
pub struct Stream<P> {
    pub id: String,
    pub hub: Arc<StreamHub>,
    pub parts: P,
}

/// How a publisher gets in: the stream a key names and the SRT passphrase
/// its SRT publishers must use.
struct Door<P> {
    stream: Arc<Stream<P>>,
    srt_passphrase: Option<String>,
}

struct Table<P> {
    /// In the order they were added (the config's order).
    streams: Vec<Arc<Stream<P>>>,
    by_key: HashMap<String, Door<P>>,
    /// Keys that publish to a stream within a window of time.
    event_keys: HashMap<String, EventKey>,
}

/// A key that publishes to a stream only within a window of time: a
/// scheduled event's own key.
#[derive(Clone, Debug)]
pub struct EventKey {
    pub key: String,
    pub stream: String,
    pub opens: SystemTime,
    pub closes: SystemTime,
}

pub struct Streams<P> {
    table: RwLock<Table<P>>,
    /// Asked before a publish is admitted (`[auth]`), when set.
    authorizer: RwLock<Option<Arc<dyn PublishAuthorizer>>>,
}

impl<P> Default for Streams<P> {
    fn default() -> Self {
        Self {
            table: RwLock::new(Table {
                streams: Vec::new(),
                by_key: HashMap::new(),
                event_keys: HashMap::new(),
            }),
            authorizer: RwLock::new(None),
        }
    }
}

impl<P> Streams<P> {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Table<P>> {
        self.table.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Table<P>> {
        self.table.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a stream under its id and key (replacing one with the same id);
    /// with `srt_passphrase`, its SRT publishers must use that passphrase.
    pub fn insert(
        &self,
        stream: Stream<P>,
        key: &StreamKey,
        srt_passphrase: Option<String>,
    ) -> Arc<Stream<P>> {
        let stream = Arc::new(stream);
        let mut table = self.write();
        table.remove(&stream.id);
        table.streams.push(Arc::clone(&stream));
        table.by_key.insert(
            key.expose().to_string(),
            Door {
                stream: Arc::clone(&stream),
                srt_passphrase,
            },
        );
        stream
    }

    /// Takes a stream out, with its key.
    pub fn remove(&self, id: &str) -> Option<Arc<Stream<P>>> {
        self.write().remove(id)
    }

    /// Gives a stream a new key or SRT passphrase; the old key stops working.
    pub fn rekey(&self, id: &str, key: &StreamKey, srt_passphrase: Option<String>) {
        let mut table = self.write();
        let Some(stream) = table.streams.iter().find(|s| s.id == id).cloned() else {
            return;
        };
        table.by_key.retain(|_, door| door.stream.id != id);
        table.by_key.insert(
            key.expose().to_string(),
            Door {
                stream,
                srt_passphrase,
            },
        );
    }

    pub fn get(&self, id: &str) -> Option<Arc<Stream<P>>> {
        self.read().streams.iter().find(|s| s.id == id).cloned()
    }

    /// The stream `key` names and the SRT passphrase its publishers must
    /// use: a stream's own key, or an event key within its window at `now`.
    pub fn by_key_at(
        &self,
        key: &str,
        now: SystemTime,
    ) -> Option<(Arc<Stream<P>>, Option<String>)> {
        let table = self.read();
        let door = match table.by_key.get(key) {
            Some(door) => door,
            None => {
                let event = table
                    .event_keys
                    .get(key)
                    .filter(|e| e.opens <= now && now < e.closes)?;
                table
                    .by_key
                    .values()
                    .find(|door| door.stream.id == event.stream)?
            }
        };
        Some((Arc::clone(&door.stream), door.srt_passphrase.clone()))
    }

    /// As `by_key_at`, now.
    pub fn by_key(&self, key: &str) -> Option<(Arc<Stream<P>>, Option<String>)> {
        self.by_key_at(key, SystemTime::now())
    }

    /// Replaces the event keys.
    pub fn set_event_keys(&self, keys: Vec<EventKey>) {
        self.write().event_keys = keys.into_iter().map(|k| (k.key.clone(), k)).collect();
    }

    /// Sets (or with `None`, removes) what is asked before a publish is
    /// admitted.
    pub fn set_authorizer(&self, authorizer: Option<Arc<dyn PublishAuthorizer>>) {
        *self.authorizer.write().unwrap_or_else(|e| e.into_inner()) = authorizer;
    }

    /// A snapshot of every stream, in order (cheap: reference counts).
    pub fn all(&self) -> Vec<Arc<Stream<P>>> {
        self.read().streams.clone()
    }
}

impl<P> Table<P> {
    fn remove(&mut self, id: &str) -> Option<Arc<Stream<P>>> {
        let index = self.streams.iter().position(|s| s.id == id)?;
        self.by_key.retain(|_, door| door.stream.id != id);
        Some(self.streams.remove(index))
    }
}

/// What ingest sees of the streams: the hub a key names.
pub trait KeyDirectory: Send + Sync {
    /// The hub `key` names and the SRT passphrase its publishers must use.
    fn find_key(&self, key: &str) -> Option<(Arc<StreamHub>, Option<String>)>;
    /// The hub of the stream with this id, and its SRT passphrase.
    fn find_stream(&self, id: &str) -> Option<(Arc<StreamHub>, Option<String>)>;
    /// What decides who may publish, besides the keys (`[auth]`).
    fn authorizer(&self) -> Option<Arc<dyn PublishAuthorizer>> {
        None
    }
}

impl<P: Send + Sync> KeyDirectory for Streams<P> {
    fn find_key(&self, key: &str) -> Option<(Arc<StreamHub>, Option<String>)> {
        self.by_key(key)
            .map(|(stream, passphrase)| (Arc::clone(&stream.hub), passphrase))
    }

    fn find_stream(&self, id: &str) -> Option<(Arc<StreamHub>, Option<String>)> {
        let table = self.read();
        let door = table.by_key.values().find(|door| door.stream.id == id)?;
        Some((Arc::clone(&door.stream.hub), door.srt_passphrase.clone()))
    }

    fn authorizer(&self) -> Option<Arc<dyn PublishAuthorizer>> {
        self.authorizer
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl dyn KeyDirectory + '_ {
    /// Finds the stream the attempt's key names, asks the authoriser if
    /// there is one, and admits a publish of it (`StreamHub::admit`): what
    /// RTMP and SRT ingest both ask first. Returns its hub and the SRT
    /// passphrase its publishers must use.
    pub async fn admit(
        &self,
        attempt: &PublishAttempt,
        role: SourceRole,
        patience: Duration,
    ) -> Result<(Arc<StreamHub>, Option<String>), PublishError> {
        let mut found = self.find_key(&attempt.key);
        if let Some(authorizer) = self.authorizer() {
            let stream = found.as_ref().map(|(hub, _)| hub.id().to_string());
            match authorizer.authorize(attempt, stream.as_deref()).await {
                None | Some(Verdict::Admit { stream: None }) => {}
                Some(Verdict::Admit { stream: Some(id) }) => {
                    if found.is_none() {
                        found = self.find_stream(&id);
                    }
                }
                Some(Verdict::Refuse(refusal)) => return Err(PublishError::Refused(refusal)),
            }
        }
        let (hub, passphrase) = found.ok_or(PublishError::UnknownKey)?;
        hub.admit(attempt.protocol, role, patience).await?;
        Ok((hub, passphrase))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::IngestProtocol;

    fn add(streams: &Streams<u32>, id: &str, key: &str, part: u32) {
        streams.insert(
            Stream {
                id: id.into(),
                hub: StreamHub::new(id),
                parts: part,
            },
            &StreamKey::new(key),
            None,
        );
    }

    #[test]
    fn a_stream_is_found_by_id_and_by_key_and_leaves_both() {
        let streams = Streams::default();
        add(&streams, "main", "key-main", 1);
        add(&streams, "second", "key-second", 2);
        assert_eq!(streams.get("second").unwrap().parts, 2);
        assert_eq!(streams.by_key("key-main").unwrap().0.id, "main");
        let ids: Vec<_> = streams.all().iter().map(|s| s.id.clone()).collect();
        assert_eq!(ids, ["main", "second"]);

        assert_eq!(streams.remove("main").unwrap().parts, 1);
        assert!(streams.get("main").is_none());
        assert!(streams.by_key("key-main").is_none());
        assert!(streams.by_key("key-second").is_some());
    }

    #[test]
    fn a_new_key_replaces_the_old_one() {
        let streams = Streams::default();
        add(&streams, "main", "old", 1);
        streams.rekey("main", &StreamKey::new("new"), Some("passphrase".into()));
        assert!(streams.by_key("old").is_none());
        let (stream, passphrase) = streams.by_key("new").unwrap();
        assert_eq!(stream.id, "main");
        assert_eq!(passphrase.as_deref(), Some("passphrase"));
    }

    #[test]
    fn an_event_key_publishes_within_its_window_only() {
        let streams = Streams::default();
        add(&streams, "main", "own-key", 1);
        let opens = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let closes = opens + Duration::from_secs(600);
        streams.set_event_keys(vec![EventKey {
            key: "event-key".into(),
            stream: "main".into(),
            opens,
            closes,
        }]);
        let at = |s: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        assert!(streams.by_key_at("event-key", at(999)).is_none());
        assert_eq!(
            streams.by_key_at("event-key", at(1_000)).unwrap().0.id,
            "main"
        );
        assert!(streams.by_key_at("event-key", at(1_600)).is_none());
        assert!(streams.by_key_at("own-key", at(0)).is_some());
        streams.set_event_keys(Vec::new());
        assert!(streams.by_key_at("event-key", at(1_000)).is_none());
    }

    #[test]
    fn adding_a_stream_again_replaces_it_and_its_key() {
        let streams = Streams::default();
        add(&streams, "main", "old", 1);
        add(&streams, "main", "new", 2);
        assert_eq!(streams.all().len(), 1);
        assert!(streams.by_key("old").is_none());
        assert_eq!(streams.by_key("new").unwrap().0.parts, 2);
    }

    fn attempt(key: &str, protocol: IngestProtocol) -> PublishAttempt {
        PublishAttempt {
            key: key.into(),
            protocol,
            remote: "127.0.0.1:5000".parse().unwrap(),
            app: "live".into(),
            args: crate::auth::parse_args("token=good", '&'),
        }
    }

    /// Admits `token=good` publishes; with a key Prism does not know, onto
    /// stream `main`.
    struct TokenCheck;

    impl PublishAuthorizer for TokenCheck {
        fn authorize<'a>(
            &'a self,
            attempt: &'a PublishAttempt,
            stream: Option<&'a str>,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<Verdict>> + Send + 'a>>
        {
            Box::pin(async move {
                let good = attempt
                    .args
                    .iter()
                    .any(|(n, v)| n == "token" && v == "good");
                Some(match (good, stream) {
                    (false, _) => Verdict::Refuse(crate::auth::Refusal::Forbidden),
                    (true, Some(_)) => Verdict::Admit { stream: None },
                    (true, None) => Verdict::Admit {
                        stream: Some("main".into()),
                    },
                })
            })
        }
    }

    #[tokio::test]
    async fn the_authorizer_refuses_or_admits_and_places_unknown_keys() {
        let streams = Arc::new(Streams::default());
        add(&streams, "main", "main-key", 7);
        streams.set_authorizer(Some(Arc::new(TokenCheck)));
        let directory: Arc<dyn KeyDirectory> = streams.clone();
        let mut bad = attempt("main-key", IngestProtocol::Rtmp);
        bad.args = crate::auth::parse_args("token=bad", '&');
        assert!(matches!(
            directory
                .admit(&bad, SourceRole::Primary, Duration::ZERO)
                .await,
            Err(PublishError::Refused(crate::auth::Refusal::Forbidden))
        ));
        let (hub, _) = directory
            .admit(
                &attempt("per-user-key", IngestProtocol::Srt),
                SourceRole::Primary,
                Duration::ZERO,
            )
            .await
            .unwrap();
        assert_eq!(hub.id(), "main");
        streams.set_authorizer(None);
        assert!(directory
            .admit(&bad, SourceRole::Primary, Duration::ZERO)
            .await
            .is_ok());
    }

    /// Every protocol's publish goes through the same checks, in order:
    /// the key, a pulled primary, a source slot already taken.
    #[tokio::test]
    async fn one_admission_refuses_an_unknown_key_a_pulled_primary_and_a_taken_source() {
        let streams = Arc::new(Streams::default());
        let hub = StreamHub::new("main");
        let key = StreamKey::new("main-key-1234".to_string());
        let stream = Stream {
            id: "main".into(),
            hub: Arc::clone(&hub),
            parts: (),
        };
        streams.insert(stream, &key, None);
        let directory: Arc<dyn KeyDirectory> = streams;
        let admit = |key: &'static str, protocol, role| {
            let directory = Arc::clone(&directory);
            async move {
                let attempt = attempt(key, protocol);
                directory.admit(&attempt, role, Duration::ZERO).await
            }
        };
        let rtmp = IngestProtocol::Rtmp;
        assert!(matches!(
            admit("other-key", rtmp, SourceRole::Primary).await,
            Err(PublishError::UnknownKey)
        ));
        hub.set_pull_only(true);
        assert!(matches!(
            admit("main-key-1234", rtmp, SourceRole::Primary).await,
            Err(PublishError::PullOnly)
        ));
        assert!(admit("main-key-1234", rtmp, SourceRole::Backup)
            .await
            .is_ok());
        let pulled = IngestProtocol::RtmpPull;
        assert!(admit("main-key-1234", pulled, SourceRole::Primary)
            .await
            .is_ok());
        hub.set_pull_only(false);
        let _live = hub
            .try_publish(rtmp, "127.0.0.1:5000".parse().unwrap())
            .unwrap();
        assert!(matches!(
            admit("main-key-1234", IngestProtocol::Srt, SourceRole::Primary).await,
            Err(PublishError::AlreadyLive)
        ));
    }
}
