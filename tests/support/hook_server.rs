//! An HTTP endpoint standing in for the systems Prism calls: an
//! authorisation service or a webhook receiver. It keeps every request it
//! got and answers each as the test's `answer` says (status, body, and how
//! long to take first), one thread per connection, as a small web service
//! would.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// One request as it arrived.
#[derive(Clone, Debug)]
pub struct HookRequest {
    pub path: String,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub at: Instant,
}

impl HookRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// What to answer: status, body, and a delay before answering.
pub struct HookAnswer {
    pub status: u16,
    pub body: String,
    pub delay: Duration,
}

impl HookAnswer {
    pub fn status(status: u16) -> Self {
        Self {
            status,
            body: String::new(),
            delay: Duration::ZERO,
        }
    }
}

type Answerer = dyn Fn(&HookRequest) -> HookAnswer + Send + Sync;

pub struct HookServer {
    pub port: u16,
    requests: Arc<Mutex<Vec<HookRequest>>>,
    in_flight: Arc<AtomicUsize>,
    most_in_flight: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl HookServer {
    pub fn start(answer: impl Fn(&HookRequest) -> HookAnswer + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = Self {
            port,
            requests: Arc::default(),
            in_flight: Arc::default(),
            most_in_flight: Arc::default(),
            stop: Arc::default(),
        };
        let answer: Arc<Answerer> = Arc::new(answer);
        let (requests, in_flight, most, stop) = (
            Arc::clone(&server.requests),
            Arc::clone(&server.in_flight),
            Arc::clone(&server.most_in_flight),
            Arc::clone(&server.stop),
        );
        thread::spawn(move || {
            for socket in listener.incoming() {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(socket) = socket else { continue };
                let (answer, requests, in_flight, most) = (
                    Arc::clone(&answer),
                    Arc::clone(&requests),
                    Arc::clone(&in_flight),
                    Arc::clone(&most),
                );
                thread::spawn(move || {
                    let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    serve(socket, &*answer, &requests);
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        server
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn requests(&self) -> Vec<HookRequest> {
        self.requests.lock().unwrap().clone()
    }

    /// The most requests it was answering at once.
    pub fn most_in_flight(&self) -> usize {
        self.most_in_flight.load(Ordering::SeqCst)
    }
}

impl Drop for HookServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve(socket: TcpStream, answer: &Answerer, requests: &Mutex<Vec<HookRequest>>) {
    let _ = socket.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(&socket);
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() || line.is_empty() {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut headers = Vec::new();
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).is_err() || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    let length = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let request = HookRequest {
        path,
        headers,
        body,
        at: Instant::now(),
    };
    requests.lock().unwrap().push(request.clone());
    let answer = answer(&request);
    thread::sleep(answer.delay);
    let reply = format!(
        "HTTP/1.1 {} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{}",
        answer.status,
        answer.body.len(),
        answer.body
    );
    let _ = (&socket).write_all(reply.as_bytes());
}
