//! The publish authorisation hook: `PublishAuthorizer` over HTTP. Prism
//! POSTs `{stream, key, protocol, remote, app, args}` and admits on 2xx,
//! refuses on 4xx (401: unauthorized), and does what `on_error` says when
//! the hook times out, answers anything else or cannot be reached. A 2xx
//! for a key Prism does not know may name the stream it publishes to
//! (`{"stream": ID}`).
//!
//! Bounded: at most `max_concurrent` calls in flight. A known key's call
//! waits for a free one (within the timeout), so a publisher waits at most
//! about one hook latency behind others; an unknown key's call never waits,
//! it is refused as busy, so a flood of made-up keys never queues ahead of
//! a real publisher. Answers are cached per hook, key and arguments for
//! `cache_s`.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::Semaphore;
use tracing::warn;

use prism_media::auth::{PublishAttempt, PublishAuthorizer, Refusal, Verdict};

use crate::config::{AuthSettings, OnError, StreamAuth};
use crate::http::HttpClient;

/// Answers kept at most (the oldest go first past it).
const MAX_CACHED: usize = 10_000;

/// What a hook is asked.
#[derive(Serialize)]
struct Question<'a> {
    /// The configured stream the key names; null for a key Prism does not
    /// know.
    stream: Option<&'a str>,
    key: &'a str,
    protocol: &'static str,
    remote: String,
    app: &'a str,
    args: serde_json::Map<String, serde_json::Value>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct CacheKey {
    url: String,
    key: String,
    args: Vec<(String, String)>,
}

/// One hook: its settings and client.
struct Hook {
    settings: AuthSettings,
    client: HttpClient,
}

pub struct HttpAuthorizer {
    /// `[auth]`, if set.
    default: Option<Hook>,
    /// Streams with a hook of their own (`auth = "URL"`) or none (`false`).
    streams: HashMap<String, (StreamAuth, Option<Hook>)>,
    in_flight: Arc<Semaphore>,
    cache: Mutex<HashMap<CacheKey, (Instant, Verdict)>>,
}

impl HttpAuthorizer {
    /// `None` when nothing is to be asked (no `[auth]`, no stream's own).
    pub fn new(
        default: Option<AuthSettings>,
        streams: Vec<(String, StreamAuth)>,
    ) -> Result<Option<Self>, String> {
        let hook = |settings: AuthSettings| -> Result<Hook, String> {
            let client = HttpClient::new(settings.ca_file.as_deref())?;
            Ok(Hook { settings, client })
        };
        let max_concurrent = default.as_ref().map_or(16, |d| d.max_concurrent);
        let mut own = HashMap::new();
        for (stream, auth) in streams {
            let made = match &auth {
                StreamAuth::Url(url) => {
                    Some(hook(AuthSettings::for_url(url.clone(), default.as_ref()))?)
                }
                _ => None,
            };
            if auth != StreamAuth::Inherit {
                own.insert(stream, (auth, made));
            }
        }
        let default = default.map(hook).transpose()?;
        if default.is_none() && own.values().all(|(_, hook)| hook.is_none()) {
            return Ok(None);
        }
        Ok(Some(Self {
            default,
            streams: own,
            in_flight: Arc::new(Semaphore::new(max_concurrent)),
            cache: Mutex::new(HashMap::new()),
        }))
    }

    /// The hook to ask about a publish to `stream` (or an unknown key).
    fn hook_for(&self, stream: Option<&str>) -> Option<&Hook> {
        match stream {
            None => self.default.as_ref().filter(|d| d.settings.unknown_keys),
            Some(id) => match self.streams.get(id) {
                Some((StreamAuth::Off, _)) => None,
                Some((_, Some(own))) => Some(own),
                _ => self.default.as_ref(),
            },
        }
    }

    async fn ask(&self, hook: &Hook, attempt: &PublishAttempt, stream: Option<&str>) -> Verdict {
        let settings = &hook.settings;
        let cache_key = CacheKey {
            url: settings.url.shown(),
            key: attempt.key.clone(),
            args: attempt.args.clone(),
        };
        if !settings.cache.is_zero() {
            if let Some(verdict) = self.cached(&cache_key, settings.cache) {
                metrics::counter!("prism_auth_requests_total", "result" => "cached").increment(1);
                return verdict;
            }
        }
        let started = Instant::now();
        // A known key waits its turn (bounded by the timeout); an unknown
        // one is refused at once when every call is in flight.
        let permit = match stream {
            Some(_) => tokio::time::timeout(settings.timeout, self.in_flight.acquire())
                .await
                .ok()
                .and_then(Result::ok),
            None => match self.in_flight.try_acquire() {
                Ok(permit) => Some(permit),
                Err(_) => {
                    metrics::counter!("prism_auth_requests_total", "result" => "busy").increment(1);
                    return Verdict::Refuse(Refusal::Busy);
                }
            },
        };
        let answer = match permit {
            None => Err(format!(
                "{} calls were in flight for the whole timeout",
                settings.max_concurrent
            )),
            Some(_permit) => {
                let left = settings.timeout.saturating_sub(started.elapsed());
                let body = question(attempt, stream);
                hook.client
                    .post(&settings.url, &[], body, left)
                    .await
                    .map_err(|e| e.to_string())
            }
        };
        metrics::histogram!("prism_auth_latency_seconds").record(started.elapsed().as_secs_f64());
        let verdict = match answer {
            Ok(answer) if (200..300).contains(&answer.status) => Verdict::Admit {
                stream: placed_on(&answer.body),
            },
            Ok(answer) if answer.status == 401 => Verdict::Refuse(Refusal::Unauthorized),
            Ok(answer) if (400..500).contains(&answer.status) => {
                Verdict::Refuse(Refusal::Forbidden)
            }
            Ok(answer) => return failed(settings, format!("it answered {}", answer.status)),
            Err(why) => return failed(settings, why),
        };
        let result = match verdict {
            Verdict::Admit { .. } => "admitted",
            Verdict::Refuse(_) => "refused",
        };
        metrics::counter!("prism_auth_requests_total", "result" => result).increment(1);
        if !settings.cache.is_zero() {
            self.remember(cache_key, verdict.clone());
        }
        verdict
    }

    fn cached(&self, key: &CacheKey, for_how_long: Duration) -> Option<Verdict> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let (at, verdict) = cache.get(key)?;
        (at.elapsed() < for_how_long).then(|| verdict.clone())
    }

    fn remember(&self, key: CacheKey, verdict: Verdict) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= MAX_CACHED {
            let oldest = cache
                .iter()
                .min_by_key(|(_, (at, _))| *at)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                cache.remove(&oldest);
            }
        }
        cache.insert(key, (Instant::now(), verdict));
    }
}

impl PublishAuthorizer for HttpAuthorizer {
    fn authorize<'a>(
        &'a self,
        attempt: &'a PublishAttempt,
        stream: Option<&'a str>,
    ) -> Pin<Box<dyn Future<Output = Option<Verdict>> + Send + 'a>> {
        Box::pin(async move {
            let hook = self.hook_for(stream)?;
            Some(self.ask(hook, attempt, stream).await)
        })
    }
}

/// The JSON a hook is sent.
fn question(attempt: &PublishAttempt, stream: Option<&str>) -> Bytes {
    let args = attempt
        .args
        .iter()
        .map(|(name, value)| (name.clone(), serde_json::Value::String(value.clone())))
        .collect();
    let question = Question {
        stream,
        key: &attempt.key,
        protocol: attempt.protocol.as_str(),
        remote: attempt.remote.to_string(),
        app: &attempt.app,
        args,
    };
    Bytes::from(serde_json::to_vec(&question).expect("a question always serializes"))
}

/// The stream a 2xx answer names (`{"stream": ID}`), if any.
fn placed_on(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    Some(value.get("stream")?.as_str()?.to_string())
}

/// A hook that failed: logged (its URL without the query), counted, and
/// answered as `on_error` says.
fn failed(settings: &AuthSettings, why: String) -> Verdict {
    metrics::counter!("prism_auth_requests_total", "result" => "error").increment(1);
    let on_error = match settings.on_error {
        OnError::Deny => "deny",
        OnError::Allow => "allow",
    };
    warn!(hook = %settings.url.shown(), %why, on_error, "the publish authorisation hook failed");
    match settings.on_error {
        OnError::Deny => Verdict::Refuse(Refusal::HookFailed),
        OnError::Allow => Verdict::Admit { stream: None },
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::target::HookUrl;
    use prism_media::IngestProtocol;

    /// A hook on loopback that answers every request `status` with `body`,
    /// counting them.
    async fn hook(status: u16, body: &'static str) -> (HookUrl, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let asked = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&asked);
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let mut request = vec![0u8; 4096];
                let _ = socket.read(&mut request).await;
                let reply = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(reply.as_bytes()).await;
            }
        });
        (
            HookUrl::parse(&format!("http://127.0.0.1:{port}/auth")).unwrap(),
            asked,
        )
    }

    fn attempt(key: &str, token: &str) -> PublishAttempt {
        PublishAttempt {
            key: key.into(),
            protocol: IngestProtocol::Rtmp,
            remote: "127.0.0.1:4000".parse().unwrap(),
            app: "live".into(),
            args: vec![("token".into(), token.into())],
        }
    }

    fn settings(url: HookUrl) -> AuthSettings {
        AuthSettings::for_url(url, None)
    }

    #[tokio::test]
    async fn answers_are_cached_per_key_and_arguments() {
        let (url, asked) = hook(200, "").await;
        let mut settings = settings(url);
        settings.cache = Duration::from_secs(60);
        let authorizer = HttpAuthorizer::new(Some(settings), Vec::new())
            .unwrap()
            .unwrap();
        for _ in 0..3 {
            let verdict = authorizer
                .authorize(&attempt("k1", "a"), Some("main"))
                .await;
            assert_eq!(verdict, Some(Verdict::Admit { stream: None }));
        }
        assert_eq!(asked.load(Ordering::SeqCst), 1);
        authorizer
            .authorize(&attempt("k1", "b"), Some("main"))
            .await;
        authorizer
            .authorize(&attempt("k2", "a"), Some("main"))
            .await;
        assert_eq!(asked.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn an_unknown_key_is_asked_only_with_unknown_keys_and_placed_where_the_hook_says() {
        let (url, asked) = hook(200, r#"{"stream": "main"}"#).await;
        let mut settings = settings(url);
        let off = HttpAuthorizer::new(Some(settings.clone()), Vec::new())
            .unwrap()
            .unwrap();
        assert_eq!(off.authorize(&attempt("alice", "a"), None).await, None);
        assert_eq!(asked.load(Ordering::SeqCst), 0);
        settings.unknown_keys = true;
        let on = HttpAuthorizer::new(Some(settings), Vec::new())
            .unwrap()
            .unwrap();
        assert_eq!(
            on.authorize(&attempt("alice", "a"), None).await,
            Some(Verdict::Admit {
                stream: Some("main".into())
            })
        );
    }

    #[tokio::test]
    async fn a_hook_that_fails_answers_as_on_error_says_and_a_stream_may_opt_out() {
        let (url, _) = hook(503, "").await;
        let mut settings = settings(url);
        let streams = vec![("quiet".to_string(), StreamAuth::Off)];
        let deny = HttpAuthorizer::new(Some(settings.clone()), streams)
            .unwrap()
            .unwrap();
        assert_eq!(
            deny.authorize(&attempt("k", "a"), Some("main")).await,
            Some(Verdict::Refuse(Refusal::HookFailed))
        );
        assert_eq!(
            deny.authorize(&attempt("k", "a"), Some("quiet")).await,
            None
        );
        settings.on_error = OnError::Allow;
        let allow = HttpAuthorizer::new(Some(settings), Vec::new())
            .unwrap()
            .unwrap();
        assert_eq!(
            allow.authorize(&attempt("k", "a"), Some("main")).await,
            Some(Verdict::Admit { stream: None })
        );
        let (url, _) = hook(401, "").await;
        let unauthorized = HttpAuthorizer::new(Some(AuthSettings::for_url(url, None)), Vec::new())
            .unwrap()
            .unwrap();
        assert_eq!(
            unauthorized
                .authorize(&attempt("k", "a"), Some("main"))
                .await,
            Some(Verdict::Refuse(Refusal::Unauthorized))
        );
        assert!(HttpAuthorizer::new(None, Vec::new()).unwrap().is_none());
    }
}
