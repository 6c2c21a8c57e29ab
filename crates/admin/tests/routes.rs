//! The OpenAPI document, the `ROUTES` table and the router agree: every
//! documented route is served, every served route is documented.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use tower::ServiceExt;

use prism_admin::api::{OPENAPI, ROUTES};
use prism_admin::streams::Streams;
use prism_admin::{Config, Controller};

const TOKEN: &str = "test-token-0123456789";

fn app(name: &str) -> Router {
    let dir = std::env::temp_dir().join(format!("prism-routes-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("prism.toml");
    let text = format!(
        "[rtmp]\nlisten = \"127.0.0.1:1\"\n\n[admin]\nlisten = \"127.0.0.1:2\"\ntoken = \"{TOKEN}\"\nmax_event_streams = 4\n\n\
         [[streams]]\nid = \"main\"\nkey = \"live_abcdefgh12345\"\n\n  [[streams.destinations]]\n  id = \"d1\"\n  url = \"rtmp://127.0.0.1:9/app/k\"\n  enabled = false\n"
    );
    std::fs::write(&path, &text).unwrap();
    let config = Config::parse(&path, &text).unwrap();
    let admin = config.admin.clone().unwrap();
    let controller = Controller::start(&path, &text, config, Arc::new(Streams::default())).unwrap();
    prism_admin::router(controller, &admin)
}

async fn send(
    app: &Router,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (StatusCode, String, String) {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::from(body.to_string())).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if content_type.starts_with("text/event-stream") {
        return (status, content_type, String::new());
    }
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        content_type,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

#[test]
fn the_openapi_document_lists_exactly_the_routes() {
    let document: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
    let mut documented = BTreeSet::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in ["get", "post", "put", "patch", "delete"] {
            if item.get(method).is_some() {
                documented.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    let served: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(documented, served);
}

#[tokio::test]
async fn every_listed_route_is_served_by_the_router() {
    let app = app("served");
    for (method, path) in ROUTES {
        let concrete = path.replace("{id}", "main").replace("{dest}", "d1");
        // A body that parses for the routes that take one; nothing is changed
        // for real except on this scratch config.
        let body = match (*method, *path) {
            ("POST", "/v1/streams") => r#"{"id": "extra"}"#,
            ("POST", "/v1/streams/{id}/destinations") => {
                r#"{"id": "d2", "url": "rtmp://127.0.0.1:9/app", "key": "k2", "enabled": false}"#
            }
            ("PATCH", _) => r#"{"enabled": false}"#,
            ("PUT", "/v1/streams/{id}/restreams") => "[]",
            _ => "",
        };
        let (status, content_type, text) = send(&app, method, &concrete, Some(TOKEN), body).await;
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert!(
            status.is_success() || content_type.starts_with("application/json"),
            "{method} {path}: {status} {content_type:?} {text}"
        );
    }
    // The check above can fail: what the router does not serve looks like this.
    let (status, _, text) = send(&app, "GET", "/v1/nothing", Some(TOKEN), "").await;
    assert_eq!((status, text.as_str()), (StatusCode::NOT_FOUND, ""));
    let (status, _, _) = send(&app, "PATCH", "/v1/streams", Some(TOKEN), "").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn every_route_but_healthz_needs_the_token() {
    let app = app("auth");
    for (method, path) in ROUTES {
        let concrete = path.replace("{id}", "main").replace("{dest}", "d1");
        for token in [None, Some("wrong-token-0123456789")] {
            let (status, _, text) = send(&app, method, &concrete, token, "").await;
            if *path == "/healthz" {
                assert_eq!(status, StatusCode::OK);
            } else {
                assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}");
                assert!(text.contains("\"code\":\"unauthorized\""), "{text}");
            }
        }
    }
}

#[tokio::test]
async fn event_streams_past_the_cap_get_a_503_that_says_which_limit() {
    let app = app("event-cap");
    let open = |app: Router| async move {
        let request = Request::builder()
            .uri("/v1/events")
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(Body::empty())
            .unwrap();
        app.oneshot(request).await.unwrap()
    };
    // The router in `app` allows four; their bodies stay open.
    let mut streams = Vec::new();
    for _ in 0..4 {
        let response = open(app.clone()).await;
        assert_eq!(response.status(), StatusCode::OK);
        streams.push(response.into_body());
    }
    let refused = open(app.clone()).await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = axum::body::to_bytes(refused.into_body(), 1 << 16)
        .await
        .unwrap();
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"]["code"], "unavailable");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("admin.max_event_streams = 4"),
        "{body}"
    );
    // A client that goes away gives its slot back.
    streams.pop();
    assert_eq!(open(app.clone()).await.status(), StatusCode::OK);
}
