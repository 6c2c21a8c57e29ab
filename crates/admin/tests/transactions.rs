//! API changes are transactions. hyper drops a handler's future when its
//! HTTP client disconnects; here 100 API calls (add, edit, enable, disable,
//! remove destinations) are each dropped after a random number of polls, as
//! a disconnecting client would have them dropped, with the next call sent
//! at once. Afterwards the file, `GET /v1/streams` and the destinations
//! actually running agree.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::http::Request;
use axum::Router;
use tower::ServiceExt;

use prism_admin::streams::Streams;
use prism_admin::{Config, Controller};

const TOKEN: &str = "test-token-0123456789";

/// Resolves to `None` once it has been polled `polls` times without
/// finishing, dropping the inner future there: a client gone mid-request.
struct DroppedAfter<F: Future> {
    inner: Option<Pin<Box<F>>>,
    polls: u32,
}

impl<F: Future> Future for DroppedAfter<F> {
    type Output = Option<F::Output>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.polls == 0 {
            self.inner = None;
            return Poll::Ready(None);
        }
        self.polls -= 1;
        let inner = self.inner.as_mut().expect("polled after completion");
        match inner.as_mut().poll(cx) {
            Poll::Ready(output) => Poll::Ready(Some(output)),
            Poll::Pending => Poll::Pending,
        }
    }
}

fn request(method: &str, path: &str, body: &str) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

/// (destination id, enabled), sorted.
type Destinations = Vec<(String, bool)>;

fn from_config(config: &Config) -> Destinations {
    let mut list: Destinations = config.streams[0]
        .destinations
        .iter()
        .map(|d| (d.id.clone(), d.enabled))
        .collect();
    list.sort();
    list
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_dropped_midway_leave_file_api_and_relay_in_agreement() {
    let dir = std::env::temp_dir().join(format!("prism-transactions-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("prism.toml");
    // Destinations point at a closed port: their tasks run and retry.
    let text = format!(
        "[rtmp]\nlisten = \"127.0.0.1:1\"\n\n[admin]\nlisten = \"127.0.0.1:2\"\ntoken = \"{TOKEN}\"\n\n\
         [[streams]]\nid = \"main\"\nkey = \"live_transactions_1234\"\n"
    );
    std::fs::write(&path, &text).unwrap();
    let config = Config::parse(&path, &text).unwrap();
    let admin = config.admin.clone().unwrap();
    let table = Arc::new(Streams::default());
    let controller = Controller::start(&path, &text, config, Arc::clone(&table)).unwrap();
    let app: Router = prism_admin::router(Arc::clone(&controller), &admin);

    let mut seed = 0x2545_f491u32;
    let mut random = move |below: u32| {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        seed % below
    };
    let (mut completed, mut dropped) = (0, 0);
    for n in 0..100 {
        let dest = format!("d{}", random(8));
        let (method, path, body) = match random(5) {
            0 | 1 => (
                "POST",
                "/v1/streams/main/destinations".to_string(),
                format!(
                    "{{\"id\":\"{dest}\",\"url\":\"rtmp://127.0.0.1:9/app\",\"key\":\"k{n}\"}}"
                ),
            ),
            2 => (
                "PATCH",
                format!("/v1/streams/main/destinations/{dest}"),
                format!("{{\"key\":\"changed{n}\"}}"),
            ),
            3 => (
                "PUT",
                format!(
                    "/v1/streams/main/destinations/{dest}/{}",
                    if random(2) == 0 { "enable" } else { "disable" }
                ),
                String::new(),
            ),
            _ => (
                "DELETE",
                format!("/v1/streams/main/destinations/{dest}"),
                String::new(),
            ),
        };
        let call = app.clone().oneshot(request(method, &path, &body));
        let outcome = DroppedAfter {
            inner: Some(Box::pin(call)),
            polls: 1 + random(3),
        }
        .await;
        match outcome {
            Some(_) => completed += 1,
            None => dropped += 1,
        }
    }
    println!("{completed} calls answered, {dropped} dropped midway");
    assert!(
        dropped > 10,
        "too few calls were dropped midway to test anything"
    );

    // A read takes the controller's lock: it waits for a change in flight.
    let running_config = controller.with_config(from_config).await;
    let file_text = std::fs::read_to_string(&path).unwrap();
    let in_file = from_config(&Config::parse(&path, &file_text).unwrap());
    let response = app
        .clone()
        .oneshot(request("GET", "/v1/streams", ""))
        .await
        .unwrap();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let streams: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let mut in_api: Destinations = streams[0]["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["id"].as_str().unwrap().to_string(),
                d["enabled"].as_bool().unwrap(),
            )
        })
        .collect();
    in_api.sort();
    let mut relaying: Destinations = table
        .get("main")
        .unwrap()
        .parts
        .destinations
        .all()
        .iter()
        .map(|d| (d.id.clone(), d.is_enabled()))
        .collect();
    relaying.sort();

    assert_eq!(
        in_file, running_config,
        "the file and the running config differ"
    );
    assert_eq!(in_api, in_file, "the API and the file differ");
    assert_eq!(
        relaying, in_file,
        "the running destinations and the file differ"
    );
    assert!(!in_file.is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}
