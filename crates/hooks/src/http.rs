//! One JSON POST to a hook: a fresh HTTP/1.1 connection (TLS verified with
//! the host's CA store, or a `ca_file`), the whole exchange bounded by a
//! timeout, the answer's body read up to 64 KiB. Hooks are called at the
//! rate of publishes and events, so a connection each costs little and
//! leaves nothing open to a hook that misbehaves.

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::Request;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tracing::warn;

use prism_media::remote_text::remote_text;
use prism_media::supervise::catch_panic;

use crate::target::HookUrl;

/// The most of an answer's body read.
const MAX_ANSWER: usize = 64 << 10;
/// The largest CA file read.
const MAX_CA_FILE: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("could not connect: {0}")]
    Connect(std::io::Error),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("HTTP: {0}")]
    Http(String),
}

/// What a hook answered.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Bytes,
}

/// Makes POSTs; cheap to clone.
#[derive(Clone)]
pub struct HttpClient {
    tls: Arc<rustls::ClientConfig>,
}

/// The CA certificates in a PEM file's text, as trust roots.
fn ca_roots(pem: &[u8]) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(pem) {
        let certificate = certificate.map_err(|e| e.to_string())?;
        roots.add(certificate).map_err(|e| e.to_string())?;
    }
    if roots.is_empty() {
        return Err("it holds no certificate".into());
    }
    Ok(roots)
}

/// A TLS client configuration trusting `roots`.
fn client_config(roots: rustls::RootCertStore) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(tls))
}

impl HttpClient {
    /// Trusts the host's CA store, or only the certificates in `ca_file`.
    pub fn new(ca_file: Option<&Path>) -> Result<Self, String> {
        let tls = match ca_file {
            Some(path) => {
                let (pem, _) = prism_media::config_file::read_config_file(path, MAX_CA_FILE, "")
                    .map_err(|e| e.to_string())?;
                let roots = ca_roots(&pem).map_err(|e| format!("{}: {e}", path.display()))?;
                client_config(roots)?
            }
            // The host's store is read once per process, not per hook.
            None => {
                static HOST_STORE: OnceLock<Result<Arc<rustls::ClientConfig>, String>> =
                    OnceLock::new();
                HOST_STORE
                    .get_or_init(|| {
                        // Certificates the host store holds that rustls
                        // cannot use are skipped, as browsers do.
                        let mut roots = rustls::RootCertStore::empty();
                        let found = rustls_native_certs::load_native_certs();
                        let _ = roots.add_parsable_certificates(found.certs);
                        client_config(roots)
                    })
                    .clone()?
            }
        };
        Ok(Self { tls })
    }

    /// POSTs `body` (JSON) with `headers`; the whole exchange within
    /// `timeout`.
    pub async fn post(
        &self,
        url: &HookUrl,
        headers: &[(&str, String)],
        body: Bytes,
        timeout: Duration,
    ) -> Result<Answer, HttpError> {
        tokio::time::timeout(timeout, self.exchange(url, headers, body))
            .await
            .map_err(|_| HttpError::Timeout(timeout))?
    }

    async fn exchange(
        &self,
        url: &HookUrl,
        headers: &[(&str, String)],
        body: Bytes,
    ) -> Result<Answer, HttpError> {
        let tcp = TcpStream::connect((url.host.as_str(), url.port))
            .await
            .map_err(HttpError::Connect)?;
        let _ = tcp.set_nodelay(true);
        let mut request = Request::post(url.path.as_str())
            .header("host", url.authority.as_str())
            .header("content-type", "application/json")
            .header("user-agent", concat!("Prism/", env!("CARGO_PKG_VERSION")));
        for (name, value) in headers {
            request = request.header(*name, value.as_str());
        }
        let request = request
            .body(Full::new(body))
            .map_err(|e| HttpError::Http(e.to_string()))?;
        if url.tls {
            let name = ServerName::try_from(url.host.clone())
                .map_err(|_| HttpError::Tls(format!("{:?} is not a TLS server name", url.host)))?;
            let stream = TlsConnector::from(Arc::clone(&self.tls))
                .connect(name, tcp)
                .await
                .map_err(|e| HttpError::Tls(e.to_string()))?;
            send(TokioIo::new(stream), request).await
        } else {
            send(TokioIo::new(tcp), request).await
        }
    }
}

async fn send<T>(io: T, request: Request<Full<Bytes>>) -> Result<Answer, HttpError>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let http = |e: hyper::Error| HttpError::Http(e.to_string());
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(http)?;
    // Drives the connection until the exchange is done (or dropped); a
    // panic in it is logged and counted, and the exchange fails.
    let driver = tokio::spawn(async move {
        if let Err(panic) = catch_panic("hook_connection", connection).await {
            warn!(panic = %remote_text(&panic.message), "a hook's HTTP connection panicked");
        }
    });
    let result = async {
        let response = sender.send_request(request).await.map_err(http)?;
        let status = response.status().as_u16();
        // A body over the limit reads as empty: no hook needs to say more.
        let body = Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        Ok(Answer { status, body })
    }
    .await;
    driver.abort();
    result
}
