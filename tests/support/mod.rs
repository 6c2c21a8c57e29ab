//! Helpers for the end-to-end suite: the real `prism` binary, real ffmpeg
//! publishers and receivers, ffprobe/ffmpeg checks of what arrived, and two
//! misbehaving destinations written here (one that never reads, one that
//! accepts the publish and then stalls).

#![allow(dead_code)]

pub mod browser;
pub mod hook_server;
pub mod tls;

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// Fails loudly (never skips) when the media tools are missing.
pub fn require_ffmpeg() {
    for tool in ["ffmpeg", "ffprobe"] {
        let ok = Command::new(tool)
            .arg("-version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "{tool} is required by the end-to-end tests: run scripts/test.sh (installs it) or apt-get install -y ffmpeg"
        );
    }
}

// Each test binary uses some of these.
#[allow(unused_imports)]
pub use prism_testkit::clip::Clip;
#[allow(unused_imports)]
pub use prism_testkit::probe::*;
#[allow(unused_imports)]
pub use prism_testkit::rtmp::{Answer, Next, Progress, Script, Served};
#[allow(unused_imports)]
pub use prism_testkit::{free_port, Nginx, RedisServer};

/// A scratch directory removed on drop (kept when the test panicked, for a look).
pub struct Scratch {
    pub path: PathBuf,
}

impl Scratch {
    pub fn new(name: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "prism-e2e-{name}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        Self { path }
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !thread::panicking() && std::env::var_os("PRISM_KEEP_SCRATCH").is_none() {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// Waits until something accepts TCP connections on `port`.
pub fn wait_for_port(port: u16, within: Duration) {
    assert!(
        prism_testkit::wait_for_port(port, within),
        "nothing listens on port {port} after {within:?}"
    );
}

/// Reads `probe` every 100 ms until what it reads is `done`, and returns
/// that; fails, naming `what` and the last reading, after `within`.
pub fn poll_until<T: std::fmt::Debug>(
    what: &str,
    within: Duration,
    mut probe: impl FnMut() -> T,
    done: impl Fn(&T) -> bool,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        let reading = probe();
        if done(&reading) {
            return reading;
        }
        assert!(
            Instant::now() < deadline,
            "{what} never happened within {within:?}: {reading:?}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// The `prism` daemon under test.
pub struct Prism {
    child: Option<Child>,
    pub log_path: PathBuf,
    pub rtmp_port: u16,
}

impl Prism {
    /// Writes `config` to the scratch dir and starts the daemon on it; returns
    /// once the RTMP listener accepts connections.
    pub fn start(scratch: &Scratch, config: &str, rtmp_port: u16) -> Self {
        fs::write(scratch.file("prism.toml"), config).unwrap();
        Self::start_on_file(scratch, rtmp_port)
    }

    /// Starts the daemon on the scratch dir's existing `prism.toml` (a
    /// restart); the log is appended to.
    pub fn start_on_file(scratch: &Scratch, rtmp_port: u16) -> Self {
        Self::start_on_file_with_env(scratch, rtmp_port, &[])
    }

    /// As `start`, with more environment variables for the daemon.
    pub fn start_with_env(
        scratch: &Scratch,
        config: &str,
        rtmp_port: u16,
        env: &[(&str, &str)],
    ) -> Self {
        fs::write(scratch.file("prism.toml"), config).unwrap();
        Self::start_on_file_with_env(scratch, rtmp_port, env)
    }

    /// As `start`, under an open-files limit of `soft` (and `hard`), as a
    /// shell with `ulimit -n` or an old unit file would start it.
    pub fn start_with_fd_limit(
        scratch: &Scratch,
        config: &str,
        rtmp_port: u16,
        soft: u64,
        hard: u64,
    ) -> Self {
        fs::write(scratch.file("prism.toml"), config).unwrap();
        Self::launch(scratch, rtmp_port, &[], Some((soft, hard)))
    }

    fn start_on_file_with_env(scratch: &Scratch, rtmp_port: u16, env: &[(&str, &str)]) -> Self {
        Self::launch(scratch, rtmp_port, env, None)
    }

    fn launch(
        scratch: &Scratch,
        rtmp_port: u16,
        env: &[(&str, &str)],
        fd_limit: Option<(u64, u64)>,
    ) -> Self {
        let config_path = scratch.file("prism.toml");
        let log_path = scratch.file("prism.log");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_prism"));
        command
            .arg("--config")
            .arg(&config_path)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log);
        if let Some((soft, hard)) = fd_limit {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is async-signal-safe; nothing else runs
            // between fork and exec.
            unsafe {
                command.pre_exec(move || rlimit::setrlimit(rlimit::Resource::NOFILE, soft, hard));
            }
        }
        let child = command.spawn().expect("start prism");
        let prism = Self {
            child: Some(child),
            log_path,
            rtmp_port,
        };
        // Probing the ingest port costs one refused-handshake log line; fine.
        wait_for_port(rtmp_port, Duration::from_secs(10));
        prism
    }

    pub fn publish_url(&self, key: &str) -> String {
        format!("rtmp://127.0.0.1:{}/live/{key}", self.rtmp_port)
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Waits until the log contains `needle` (lines are written as they happen).
    pub fn wait_for_log(&self, needle: &str, within: Duration) {
        self.wait_for_log_count(needle, 1, within);
    }

    /// Waits until the log has said `needle` `times` times; returns how long
    /// that took.
    pub fn wait_for_log_count(&self, needle: &str, times: usize, within: Duration) -> Duration {
        let started = Instant::now();
        while started.elapsed() < within {
            if self.log().matches(needle).count() >= times {
                return started.elapsed();
            }
            thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "prism log never said {needle:?} {times} times:\n{}",
            self.log()
        );
    }

    /// Sends SIGTERM and waits for the exit; returns the status and how long it took.
    pub fn terminate(&mut self) -> (ExitStatus, Duration) {
        let mut child = self.child.take().expect("prism already stopped");
        let started = Instant::now();
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = started + Duration::from_secs(15);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return (status, started.elapsed());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("prism did not exit within 15 s of SIGTERM:\n{}", self.log());
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// File descriptors the daemon has open now.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("prism is running").id()
    }

    pub fn open_fds(&self) -> usize {
        let child = self.child.as_ref().expect("prism is running");
        fs::read_dir(format!("/proc/{}/fd", child.id()))
            .unwrap()
            .count()
    }

    /// Resident memory of the daemon now, in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.proc_status_kib("VmRSS:")
    }

    /// The most resident memory the daemon has had, in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        self.proc_status_kib("VmHWM:")
    }

    fn proc_status_kib(&self, field: &str) -> u64 {
        let child = self.child.as_ref().expect("prism is running");
        let status = fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap()
    }

    /// Sends a signal by name (`HUP`, `KILL`, ...).
    pub fn signal(&self, name: &str) {
        signal(self.child.as_ref().expect("prism is running"), name);
    }

    /// Asserts that no secret appears anywhere in the log.
    pub fn assert_log_free_of(&self, secrets: &[&str]) {
        let log = self.log();
        for secret in secrets {
            assert!(
                !log.contains(secret),
                "secret {secret:?} leaked into the log:\n{log}"
            );
        }
    }
}

impl Drop for Prism {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A running ffmpeg process (publisher or receiver), killed on drop.
pub struct Ffmpeg {
    child: Option<Child>,
    pub log_path: PathBuf,
}

impl Ffmpeg {
    fn spawn(args: &[String], log_path: PathBuf) -> Self {
        let log = fs::File::create(&log_path).unwrap();
        let child = Command::new("ffmpeg")
            .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-y"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start ffmpeg");
        Self {
            child: Some(child),
            log_path,
        }
    }

    /// An RTMP server (ffmpeg in listen mode) recording what it receives to `out`.
    pub fn receiver(port: u16, app: &str, name: &str, out: &Path) -> Self {
        let args = vec![
            "-listen".into(),
            "1".into(),
            "-f".into(),
            "flv".into(),
            "-i".into(),
            format!("rtmp://127.0.0.1:{port}/{app}/{name}"),
            "-c".into(),
            "copy".into(),
            "-f".into(),
            "flv".into(),
            out.display().to_string(),
        ];
        let mut receiver = Self::spawn(&args, out.with_extension("log"));
        // ffmpeg accepts exactly one connection, so it cannot be probed;
        // give it a moment to bind. Prism retries anyway if it is late.
        thread::sleep(Duration::from_millis(300));
        receiver.assert_still_running(&format!("the RTMP receiver on port {port}"));
        receiver
    }

    /// Panics, with the log, when the process has already exited: a
    /// receiver that could not listen would otherwise show up only later,
    /// as a recording that was never written.
    fn assert_still_running(&mut self, what: &str) {
        let child = self.child.as_mut().expect("already waited");
        if let Some(status) = child.try_wait().unwrap() {
            self.child = None;
            panic!("{what} exited at once ({status}): {}", self.log());
        }
    }

    /// An SRT listener (ffmpeg, its defaults) recording the MPEG-TS it
    /// receives to `out`, as a user receiving from an SRT caller runs it.
    pub fn srt_receiver(port: u16, passphrase: Option<&str>, out: &Path) -> Self {
        let mut url = format!("srt://127.0.0.1:{port}?mode=listener");
        if let Some(passphrase) = passphrase {
            url += &format!("&passphrase={passphrase}");
        }
        let args: Vec<String> = ["-i", &url, "-c", "copy", "-f", "mpegts"]
            .iter()
            .map(|a| a.to_string())
            .chain([out.display().to_string()])
            .collect();
        let mut receiver = Self::spawn(&args, out.with_extension("log"));
        thread::sleep(Duration::from_millis(300));
        receiver.assert_still_running(&format!("the SRT receiver on port {port}"));
        receiver
    }

    /// libsrt's own listener, `srt-live-transmit` with its defaults, writing
    /// what it receives to `out`.
    pub fn srt_live_transmit_receiver(port: u16, passphrase: Option<&str>, out: &Path) -> Self {
        let mut url = format!("srt://:{port}?mode=listener");
        if let Some(passphrase) = passphrase {
            url += &format!("&passphrase={passphrase}");
        }
        let log_path = out.with_extension("log");
        let child = Command::new("srt-live-transmit")
            .args(["-a", "no", &url, "file://con"])
            .stdout(fs::File::create(out).unwrap())
            .stderr(fs::File::create(&log_path).unwrap())
            .spawn()
            .expect("start srt-live-transmit (Debian's srt-tools)");
        thread::sleep(Duration::from_millis(300));
        let mut receiver = Self {
            child: Some(child),
            log_path,
        };
        receiver.assert_still_running(&format!("srt-live-transmit listening on port {port}"));
        receiver
    }

    /// A publisher of a synthetic H.264 + AAC stream, paced in real time.
    /// `-metadata prism_probe=...` travels in onMetaData, so a receiver's
    /// copy shows whether metadata was relayed whole.
    pub fn publisher(url: &str, seconds: u32, log_path: PathBuf) -> Self {
        Self::publisher_at(url, seconds, None, log_path)
    }

    /// A publisher at a constant video bitrate (x264 pads with filler data),
    /// for tests that need real volume on the wire.
    pub fn publisher_at(
        url: &str,
        seconds: u32,
        video_kbps: Option<u32>,
        log_path: PathBuf,
    ) -> Self {
        Self::publish(url, "flv", seconds, video_kbps, log_path)
    }

    /// A 1280x720 publisher (`testsrc2`, which compresses poorly: about
    /// 2 to 4 Mbit/s, the volume of a real encoder).
    pub fn hd_publisher(url: &str, seconds: u32, log_path: PathBuf) -> Self {
        let clip = Clip::new("testsrc2=size=1280x720:rate=25")
            .audio("sine=frequency=440:sample_rate=44100")
            .seconds(seconds)
            .realtime();
        Self::spawn(&publish_args(clip, url, "flv"), log_path)
    }

    /// Publishes `clip` to `url` in `format` (`flv` for RTMP, `mpegts` for
    /// SRT), as a live encoder does.
    pub fn clip_publisher(clip: Clip, url: &str, format: &str, log_path: PathBuf) -> Self {
        Self::spawn(&publish_args(clip, url, format), log_path)
    }

    /// As `publisher`, with more output options (placed before the URL),
    /// e.g. `-output_ts_offset`.
    pub fn publisher_with_output_options(
        url: &str,
        seconds: u32,
        options: &[&str],
        log_path: PathBuf,
    ) -> Self {
        Self::publish_with_output_options(url, "flv", seconds, options, log_path)
    }

    /// As `srt_publisher`, with more output options (placed before the URL).
    pub fn srt_publisher_with_output_options(
        url: &str,
        seconds: u32,
        options: &[&str],
        log_path: PathBuf,
    ) -> Self {
        Self::publish_with_output_options(url, "mpegts", seconds, options, log_path)
    }

    fn publish_with_output_options(
        url: &str,
        format: &str,
        seconds: u32,
        options: &[&str],
        log_path: PathBuf,
    ) -> Self {
        let clip = live_clip(seconds).args_before_output(options);
        Self::spawn(&publish_args(clip, url, format), log_path)
    }

    /// The same synthetic stream as MPEG-TS over SRT (`srt://…?streamid=…`).
    pub fn srt_publisher(url: &str, seconds: u32, log_path: PathBuf) -> Self {
        Self::publish(url, "mpegts", seconds, None, log_path)
    }

    fn publish(
        url: &str,
        format: &str,
        seconds: u32,
        video_kbps: Option<u32>,
        log_path: PathBuf,
    ) -> Self {
        let mut clip = live_clip(seconds);
        if let Some(kbps) = video_kbps {
            clip = clip.cbr(kbps, kbps / 2);
        }
        Self::spawn(&publish_args(clip, url, format), log_path)
    }

    /// The same synthetic stream as MPEG-TS, piped into libsrt's own caller,
    /// `srt-live-transmit` (Debian's srt-tools), with its default options.
    pub fn srt_live_transmit_publisher(url: &str, seconds: u32, log_path: PathBuf) -> Self {
        let args = publish_args(live_clip(seconds), "-", "mpegts");
        let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
        let script = format!(
            "ffmpeg -hide_banner -nostdin -loglevel error {} | srt-live-transmit -a no file://con '{url}'",
            quoted.join(" ")
        );
        let log = fs::File::create(&log_path).unwrap();
        let child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start ffmpeg | srt-live-transmit");
        Self {
            child: Some(child),
            log_path,
        }
    }

    /// Waits for the process to exit.
    /// Whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    pub fn wait(&mut self, within: Duration) -> ExitStatus {
        let child = self.child.as_mut().expect("already waited");
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                self.child = None;
                panic!(
                    "ffmpeg did not finish within {within:?}: {}",
                    fs::read_to_string(&self.log_path).unwrap_or_default()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for Ffmpeg {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The synthetic H.264 + AAC stream every publisher sends: 320x240 at
/// 25 fps with a sine tone, a keyframe a second, read in real time.
pub fn live_clip(seconds: u32) -> Clip {
    Clip::new("testsrc=size=320x240:rate=25")
        .audio("sine=frequency=440:sample_rate=44100")
        .seconds(seconds)
        .realtime()
}

/// ffmpeg's arguments for `clip`, published to `url` as `format` (after the
/// common `-hide_banner -nostdin -loglevel error -y`).
fn publish_args(clip: Clip, url: &str, format: &str) -> Vec<String> {
    let mut args = clip
        .args_before_output(&[
            "-tune",
            "zerolatency",
            "-metadata",
            "prism_probe=relayed-whole",
        ])
        .args();
    args.extend(["-f", format, url].map(String::from));
    args
}

/// A loopback server for misbehaving destinations: accepts connections on
/// its own thread, hands each to `serve`, counts the ones `serve` accepts,
/// and holds every socket open (never closing, never reading more) until dropped.
pub struct FakeDestination {
    pub port: u16,
    /// Connections `serve` returned true for.
    pub accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl FakeDestination {
    pub fn start(serve: impl Fn(&TcpStream) -> bool + Send + Sync + 'static) -> Self {
        let serve = Arc::new(serve);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, stopped) = (Arc::clone(&accepted), Arc::clone(&stop));
        thread::spawn(move || {
            let mut held = Vec::new();
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((socket, _)) => {
                        socket.set_nonblocking(false).unwrap();
                        let count = Arc::clone(&count);
                        let serve = Arc::clone(&serve);
                        held.push(thread::spawn(move || {
                            if serve(&socket) {
                                count.fetch_add(1, Ordering::Relaxed);
                            }
                            socket
                        }));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Self {
            port,
            accepted,
            stop,
        }
    }

    /// Accepts TCP connections and never reads a byte.
    pub fn black_hole() -> Self {
        Self::start(|_| true)
    }

    /// Completes the RTMP handshake and accepts the publish, then never reads
    /// again: a destination whose link or process froze mid-show.
    pub fn stalling_rtmp() -> Self {
        Self::start(|socket| {
            let accepted = serve_script(socket, &mut HoldOnceAccepted);
            accepted.is_some_and(|(_, progress)| progress.publishing)
        })
    }
}

impl Drop for FakeDestination {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Payloads a `recording_rtmp` sink received, in order.
pub type Recorded = Arc<std::sync::Mutex<Vec<prism_media::MediaMessage>>>;

impl FakeDestination {
    /// Accepts the publish and records every media message it receives,
    /// byte for byte, until the connection closes.
    /// Refuses every publish with `NetStream.Publish.BadName` and
    /// `description`, as a platform does for a wrong stream key. Counts the
    /// attempts.
    pub fn refusing_rtmp(description: &'static str) -> Self {
        Self::start(move |socket| serve_script(socket, &mut Refuse(description)).is_some())
    }

    /// An RTMP origin that refuses every `play` with `NetStream.Play.Failed`
    /// and `description`, as a server does for a stream it does not have.
    pub fn refusing_rtmp_play(description: &'static str) -> Self {
        Self::start(move |socket| refuse_play(socket, description).is_some())
    }

    pub fn recording_rtmp(recorded: Recorded) -> Self {
        Self::start(move |socket| {
            let mut script = Record(Arc::clone(&recorded));
            serve_script(socket, &mut script).is_some()
        })
    }
}

/// Serves `socket` with the test kit's fake destination running `script`,
/// on the connection's own thread; `None` if the peer broke the exchange.
pub fn serve_script(
    socket: &TcpStream,
    script: &mut (impl Script + ?Sized),
) -> Option<(Served, Progress)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    // A second descriptor of the same connection: the caller keeps the
    // first, so a held connection stays open after this returns.
    let socket = socket.try_clone().ok()?;
    socket.set_nonblocking(true).ok()?;
    runtime.block_on(async {
        let mut socket = tokio::net::TcpStream::from_std(socket).ok()?;
        prism_testkit::rtmp::serve(&mut socket, script).await.ok()
    })
}

/// Accepts the publish, then never reads again: a destination whose link
/// or process froze mid-show.
struct HoldOnceAccepted;

impl Script for HoldOnceAccepted {
    fn next(&mut self, progress: Progress) -> Next {
        if progress.publishing {
            Next::Hold
        } else {
            Next::Read
        }
    }
}

/// Refuses every publish with this description.
struct Refuse(&'static str);

impl Script for Refuse {
    fn publish(&mut self, _stream_name: &str) -> Answer {
        Answer::Refuse(self.0.to_string())
    }
}

/// Accepts the publish and records every media message, byte for byte.
struct Record(Recorded);

impl Script for Record {
    fn media(&mut self, message: prism_rtmp::Message) {
        use prism_media::{MediaKind, MediaMessage};
        if let Some(kind) = MediaKind::from_type_id(message.type_id) {
            self.0.lock().unwrap().push(MediaMessage::new(
                kind,
                u64::from(message.timestamp),
                message.payload,
            ));
        }
    }
}

/// Answers a play request with a refusal that carries `description`.
fn refuse_play(mut socket: &TcpStream, description: &str) -> Option<()> {
    use prism_rtmp::{ChunkWriter, Command, ServerSession, Value};

    let mut input = server_handshake(socket)?;
    let mut session = ServerSession::new(Default::default());
    let mut out = ChunkWriter::new(128);
    let mut events = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        session.handle_input(&input, &mut out, &mut events).ok()?;
        events.clear();
        // Prism's session refuses a play in its own words: those are
        // replaced with `description`.
        let play_refused = out
            .to_vec()
            .windows(b"NetStream.Play.Failed".len())
            .any(|w| w == b"NetStream.Play.Failed");
        if play_refused {
            out.clear();
            let status = Value::object([
                ("level", Value::string("error")),
                ("code", Value::string("NetStream.Play.Failed")),
                ("description", Value::string(description)),
            ]);
            let command = Command::new("onStatus", 0.0, Value::Null, vec![status]);
            prism_rtmp::queue_command(&mut out, 1, &command);
        }
        socket.write_all(&out.to_vec()).ok()?;
        out.clear();
        if play_refused {
            return Some(());
        }
        let n = socket.read(&mut buf).ok().filter(|&n| n > 0)?;
        input = buf[..n].to_vec();
    }
}

/// Completes the client side of an RTMP handshake (rml_rtmp's, not
/// Prism's); `None` if the server hung up.
pub fn client_handshake(stream: &mut TcpStream) -> Option<()> {
    use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};

    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut handshake = Handshake::new(PeerType::Client);
    stream
        .write_all(&handshake.generate_outbound_p0_and_p1().ok()?)
        .ok()?;
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).ok().filter(|&n| n > 0)?;
        match handshake.process_bytes(&buf[..n]).ok()? {
            HandshakeProcessResult::InProgress { response_bytes } => {
                stream.write_all(&response_bytes).ok()?
            }
            HandshakeProcessResult::Completed { response_bytes, .. } => {
                stream.write_all(&response_bytes).ok()?;
                return Some(());
            }
        }
    }
}

/// The server side of the RTMP handshake; returns bytes read past it.
pub fn server_handshake(mut socket: &TcpStream) -> Option<Vec<u8>> {
    use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};

    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let mut handshake = Handshake::new(PeerType::Server);
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = socket.read(&mut buf).ok().filter(|&n| n > 0)?;
        match handshake.process_bytes(&buf[..n]).ok()? {
            HandshakeProcessResult::InProgress { response_bytes } => {
                socket.write_all(&response_bytes).ok()?
            }
            HandshakeProcessResult::Completed {
                response_bytes,
                remaining_bytes,
            } => {
                socket.write_all(&response_bytes).ok()?;
                return Some(remaining_bytes);
            }
        }
    }
}

impl Ffmpeg {
    /// Sends a signal by name (`STOP` freezes an encoder with its
    /// connection open, `CONT` wakes it).
    pub fn signal(&self, name: &str) {
        signal(self.child.as_ref().expect("ffmpeg is running"), name);
    }

    /// Kills the process now (a receiver that dies mid-show).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A plain HTTP/1.0 GET on loopback; returns the status code and body.
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    http(port, "GET", path, None, "")
}

/// Sends `child` a signal by name, as `kill -NAME` does.
fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// `GET path` on the admin API, which must answer 200, as JSON.
pub fn api_json(port: u16, path: &str, token: Option<&str>) -> serde_json::Value {
    let (status, body) = http(port, "GET", path, token, "");
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

/// A plain HTTP/1.0 request on loopback, with an optional bearer token and
/// JSON body; returns the status code and body.
pub fn http(port: u16, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the HTTP listener");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

/// The value of the sample `name{labels...}` in a Prometheus exposition,
/// matching every given label (others may be present).
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        let (label_text, value) = if let Some(rest) = rest.strip_prefix('{') {
            let (labels, value) = rest.split_once('}')?;
            (labels, value)
        } else if rest.starts_with(' ') {
            ("", rest)
        } else {
            return None;
        };
        let all = labels.iter().all(|(k, v)| {
            label_text
                .split(',')
                .any(|pair| pair == format!("{k}=\"{v}\""))
        });
        if !all {
            return None;
        }
        value.trim().parse().ok()
    })
}

/// Runs `promtool check metrics` on an exposition; returns its complaints.
pub fn promtool_problems(exposition: &str) -> Vec<String> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is required: run scripts/test.sh (installs it) or apt-get install -y prometheus");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

/// A publisher replaced within the grace period continued the show: Prism
/// says so, the destination was connected once, and its one recording holds
/// at least `min_secs` (both parts), monotonic and decodable.
pub fn assert_one_continuous_show(prism: &Prism, out: &Path, min_secs: f64) {
    assert_one_continuous_show_at(prism, &[out], min_secs);
}

/// As `assert_one_continuous_show`, for every destination of the stream
/// (each recorded to one of `outs`).
pub fn assert_one_continuous_show_at(prism: &Prism, outs: &[&Path], min_secs: f64) {
    let log = prism.log();
    assert!(
        log.contains("publisher resumed the session within the grace period"),
        "{log}"
    );
    assert_eq!(
        log.matches("destination live").count(),
        outs.len(),
        "a destination reconnected:\n{log}"
    );
    for out in outs {
        let duration = probe_duration(out);
        assert!(
            duration > min_secs,
            "{}: only {duration} s arrived of more than {min_secs} s: a publisher's part is missing",
            out.display()
        );
        assert_good_recording(out, duration);
    }
}

/// Publishes `messages` over RTMP (Prism's own publishing client) in real
/// time by their timestamps, each stamped `clock_offset` ms later on RTMP's
/// 32-bit clock: extended timestamps past 2^24 ms, a wrap at 2^32.
pub async fn publish_paced(url: &str, messages: &[prism_media::MediaMessage], clock_offset: u64) {
    let url = prism_fanout::DestinationUrl::parse(url, None).unwrap();
    let mut stream = tokio::net::TcpStream::connect((url.host.as_str(), url.port))
        .await
        .unwrap();
    let mut out = prism_rtmp::ChunkWriter::new(128);
    let (_client, stream_id) = prism_fanout::start_publish(&mut stream, &url, 4096, &mut out, None)
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let first = messages.first().map_or(0, |m| m.timestamp);
    for message in messages {
        tokio::time::sleep_until(started + Duration::from_millis(message.timestamp - first)).await;
        prism_rtmp::queue_media(
            &mut out,
            message.kind.type_id(),
            stream_id,
            prism_media::timeline::rtmp_timestamp(message.timestamp + clock_offset),
            &message.payload,
        );
        out.write_to(&mut stream, None).await.unwrap();
    }
}

/// Reads the event stream in the background, for checking afterwards.
pub fn listen_to_events(port: u16, token: &str) -> Arc<std::sync::Mutex<String>> {
    let seen = Arc::new(std::sync::Mutex::new(String::new()));
    let sink = Arc::clone(&seen);
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "GET /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\r\n"
    )
    .unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stream.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    seen
}

/// `prism --config PATH --check`, as an operator runs it.
pub fn check_config(path: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_prism"))
        .arg("--config")
        .arg(path)
        .arg("--check")
        .output()
        .unwrap()
}
