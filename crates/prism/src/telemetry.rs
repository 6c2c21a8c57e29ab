//! Metrics and health: `/metrics` (Prometheus text), `/healthz` (the process
//! answers) and `/readyz` (config loaded, every listener bound and serving).
//!
//! The media path keeps its counts in plain atomics (per stream, per
//! destination); a scrape copies them into the `metrics` recorder and renders.
//! So recording costs the hot path one relaxed atomic add, and a stream or
//! destination that is removed stops being refreshed: the recorder's idle
//! timeout then drops its series, so labels never pile up.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use metrics::{counter, gauge};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;

use prism_admin::streams::Streams;
use prism_fanout::DestinationState;
use prism_fanout::ErrorKind;
use prism_ingest::stats::Limit;
use prism_ingest::{IngestStats, RejectReason};
use prism_media::arbiter::{SourceRole, SwitchReason};
use prism_media::IngestProtocol;

use crate::listeners::Readiness;

const DESTINATION_STATES: [DestinationState; 6] = [
    DestinationState::Idle,
    DestinationState::Connecting,
    DestinationState::Live,
    DestinationState::Retrying,
    DestinationState::Disabled,
    DestinationState::Refused,
];

pub struct Telemetry {
    prometheus: PrometheusHandle,
    process: metrics_process::Collector,
    streams: Arc<Streams>,
    ingest: Arc<IngestStats>,
    readiness: Arc<Readiness>,
    /// Cluster mode: this node's link to Redis.
    cluster: std::sync::OnceLock<Arc<prism_cluster::Cluster>>,
}

impl Telemetry {
    /// Cluster mode: the Redis connection state and the running version
    /// are exported too.
    pub fn set_cluster(&self, cluster: Arc<prism_cluster::Cluster>) {
        let _ = self.cluster.set(cluster);
    }

    /// Installs the global metrics recorder. Series not refreshed for
    /// `series_idle` are dropped: every scrape refreshes the series of
    /// everything that exists, so only removed things (and histograms with no
    /// new observation) age out.
    pub fn install(
        streams: Arc<Streams>,
        ingest: Arc<IngestStats>,
        readiness: Arc<Readiness>,
        series_idle: Duration,
    ) -> Result<Arc<Self>, metrics_exporter_prometheus::BuildError> {
        let latency_buckets = [
            0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        ];
        let connect_buckets = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
        let prometheus = PrometheusBuilder::new()
            .idle_timeout(MetricKindMask::ALL, Some(series_idle))
            .set_buckets_for_metric(
                Matcher::Full("prism_relay_latency_seconds".into()),
                &latency_buckets,
            )
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full("prism_destination_connect_seconds".into()),
                    &connect_buckets,
                )
            })?
            .install_recorder()?;
        // The standard `process_*` names, as every Prometheus client library exports them.
        let process = metrics_process::Collector::default();
        process.describe();
        describe();
        Ok(Arc::new(Self {
            prometheus,
            process,
            streams,
            ingest,
            readiness,
            cluster: std::sync::OnceLock::new(),
        }))
    }

    /// Copies every count into the recorder and renders the exposition.
    pub fn render(&self) -> String {
        let ingest = &self.ingest;
        for protocol in IngestProtocol::ALL {
            gauge!("prism_ingest_sessions", "protocol" => protocol.as_str())
                .set(ingest.open_sessions(protocol) as f64);
        }
        for limit in Limit::ALL {
            counter!("prism_ingest_limit_hits_total", "limit" => limit.as_str())
                .absolute(ingest.limit_hits(limit));
        }
        for reason in RejectReason::ALL {
            counter!("prism_ingest_publish_rejected_total", "reason" => reason.as_str())
                .absolute(ingest.rejections(reason));
        }
        for stream in self.streams.all() {
            let hub = &stream.hub;
            let stats = hub.stats();
            let id = stream.id.clone();
            for protocol in IngestProtocol::ALL {
                counter!("prism_ingest_bytes_total", "stream" => id.clone(), "protocol" => protocol.as_str())
                    .absolute(stats.bytes(protocol));
            }
            for (kind, frames) in [
                ("video", &stats.video_frames),
                ("audio", &stats.audio_frames),
                ("data", &stats.data_messages),
            ] {
                counter!("prism_ingest_frames_total", "stream" => id.clone(), "kind" => kind)
                    .absolute(frames.load(Ordering::Relaxed));
            }
            gauge!("prism_stream_standby", "stream" => id.clone())
                .set(if hub.standby().is_some() { 1.0 } else { 0.0 });
            let active = hub.active_source();
            for role in [SourceRole::Primary, SourceRole::Backup] {
                gauge!("prism_stream_active_source", "stream" => id.clone(), "source" => role.as_str())
                    .set(if active == Some(role) { 1.0 } else { 0.0 });
            }
            for reason in SwitchReason::ALL {
                counter!("prism_stream_source_switches_total", "stream" => id.clone(), "reason" => reason.as_str())
                    .absolute(stats.source_switches[reason as usize].load(Ordering::Relaxed));
            }
            gauge!("prism_stream_live", "stream" => id.clone()).set(if hub.is_live() {
                1.0
            } else {
                0.0
            });
            gauge!("prism_stream_bitrate_bits_per_second", "stream" => id.clone())
                .set(stats.bitrate_bps.load(Ordering::Relaxed) as f64);

            if let Some(recorder) = stream.parts.recorder() {
                let status = &recorder.status;
                counter!("prism_recording_bytes_total", "stream" => id.clone())
                    .absolute(status.bytes_total.load(Ordering::Relaxed));
                for kind in prism_record::writer::ErrorKind::ALL {
                    let errors = status.errors(kind);
                    if errors > 0 {
                        counter!("prism_recording_errors_total", "stream" => id.clone(), "kind" => kind.as_str())
                            .absolute(errors);
                    }
                }
                counter!("prism_recording_frames_dropped_total", "stream" => id.clone())
                    .absolute(recorder.dropped_frames());
            }
            if let Some(delay) = stream.parts.delay() {
                gauge!("prism_delay_buffer_bytes", "stream" => id.clone())
                    .set(delay.buffered_bytes() as f64);
            }
            for destination in stream.parts.destinations.all() {
                let status = &destination.status;
                let labels = [
                    ("stream", id.clone()),
                    ("destination", destination.id.clone()),
                ];
                let current = status.state();
                for state in DESTINATION_STATES {
                    let mut with_state = labels.to_vec();
                    with_state.push(("state", state.as_str().to_string()));
                    gauge!("prism_destination_state", &with_state).set(if state == current {
                        1.0
                    } else {
                        0.0
                    });
                }
                // Only destinations held to rules (a platform's, a delay
                // buffer's) have warning series.
                if destination.has_rules() {
                    let warnings = status.warnings();
                    for code in prism_fanout::rules::WARNING_CODES {
                        let present = warnings.iter().any(|w| w.code == code);
                        let mut with_code = labels.to_vec();
                        with_code.push(("code", code.to_string()));
                        gauge!("prism_destination_warnings", &with_code).set(if present {
                            1.0
                        } else {
                            0.0
                        });
                    }
                }
                counter!("prism_destination_bytes_sent_total", &labels)
                    .absolute(status.bytes_sent.load(Ordering::Relaxed));
                counter!("prism_destination_frames_dropped_total", &labels)
                    .absolute(status.dropped_frames());
                counter!("prism_destination_reconnects_total", &labels)
                    .absolute(status.reconnects.load(Ordering::Relaxed));
                gauge!("prism_destination_queue_bytes", &labels)
                    .set(status.queue_stats().queued_bytes.load(Ordering::Relaxed) as f64);
                counter!("prism_destination_acked_bytes_total", &labels)
                    .absolute(status.acked_bytes.load(Ordering::Relaxed));
                gauge!("prism_destination_ack_lag_bytes", &labels)
                    .set(status.ack_lag_bytes.load(Ordering::Relaxed) as f64);
                counter!("prism_destination_ack_timeouts_total", &labels)
                    .absolute(status.ack_timeouts.load(Ordering::Relaxed));
                for kind in ErrorKind::ALL {
                    let failures = status.failures(kind);
                    if failures > 0 {
                        let mut with_kind = labels.to_vec();
                        with_kind.push(("kind", kind.as_str().to_string()));
                        counter!("prism_destination_failures_total", &with_kind).absolute(failures);
                    }
                }
            }
        }
        if let Some(cluster) = self.cluster.get() {
            let node = cluster.node_id().to_string();
            let health = cluster.health();
            gauge!("prism_cluster_redis_up", "node" => node.clone()).set(if health.is_up() {
                1.0
            } else {
                0.0
            });
            counter!("prism_cluster_redis_losses_total", "node" => node.clone())
                .absolute(health.losses());
            gauge!("prism_cluster_config_version", "node" => node.clone())
                .set(cluster.applied_version() as f64);
            gauge!("prism_cluster_leases_held", "node" => node)
                .set(cluster.gate().held_streams() as f64);
        }
        self.process.collect();
        self.prometheus.render()
    }
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_gauge!("prism_ingest_sessions", "Encoder connections open now.");
    describe_counter!(
        "prism_recording_bytes_total",
        Unit::Bytes,
        "Bytes written to a stream's recordings."
    );
    describe_counter!(
        "prism_recording_errors_total",
        "Writes of a stream's recording that failed, by kind (disk_full, read_only, permission, io); each stops one file, never the show."
    );
    describe_counter!(
        "prism_recording_frames_dropped_total",
        "Frames left out of a stream's recording: a disk too slow for its queue, or a failed write."
    );
    describe_gauge!(
        "prism_recording_disk_free_bytes",
        Unit::Bytes,
        "Free space on the file system that holds the recordings."
    );
    describe_gauge!(
        "prism_cluster_redis_up",
        "Cluster mode: 1 while this node reaches the cluster's Redis."
    );
    describe_counter!(
        "prism_cluster_redis_losses_total",
        "Cluster mode: times this node lost its Redis connection."
    );
    describe_gauge!(
        "prism_cluster_config_version",
        "Cluster mode: the version of the shared configuration this node runs."
    );
    describe_gauge!(
        "prism_cluster_leases_held",
        "Cluster mode: streams whose lease this node holds (live here)."
    );
    describe_counter!(
        "prism_ingest_bytes_total",
        Unit::Bytes,
        "Media payload bytes received from publishers."
    );
    describe_counter!(
        "prism_ingest_frames_total",
        "Media messages received from publishers, by kind."
    );
    describe_counter!(
        "prism_ingest_publish_rejected_total",
        "Publish attempts refused, by reason."
    );
    describe_counter!(
        "prism_ingest_limit_hits_total",
        "Times a connection ran into a configured bound, by limit."
    );
    describe_counter!(
        "prism_task_panics_total",
        "Panics caught in supervised tasks, by task kind; each ended one connection, retried one destination or restarted one listener."
    );
    describe_counter!(
        "prism_listener_restarts_total",
        "Listener tasks that panicked or ended while the daemon ran and were bound and started again."
    );
    describe_gauge!(
        "prism_http_connections",
        "HTTP connections open now, by listener."
    );
    describe_counter!(
        "prism_http_connections_refused_total",
        "HTTP connections (or admin event streams) refused at their cap, by listener and reason."
    );
    describe_counter!(
        "prism_accept_errors_total",
        "Failed accept calls (out of file descriptors, most often), by listener."
    );
    // The series exist from the start, so an alert on increase() sees the first event.
    for task in prism_media::supervise::SUPERVISED_TASKS {
        metrics::counter!("prism_task_panics_total", "task" => task).increment(0);
    }
    for listener in crate::listeners::LISTENERS {
        metrics::counter!("prism_listener_restarts_total", "listener" => listener).increment(0);
    }
    describe_gauge!(
        "prism_stream_standby",
        "1 while the stream's destinations are fed its standby clip."
    );
    describe_gauge!(
        "prism_stream_active_source",
        "1 for the source (primary or backup) whose media the destinations get, 0 for the other."
    );
    describe_counter!(
        "prism_stream_source_switches_total",
        "Times the destinations continued from another source, by reason (start, disconnect, silence, failback, forced)."
    );
    describe_gauge!(
        "prism_stream_live",
        "1 while a publisher is live on the stream."
    );
    describe_gauge!(
        "prism_stream_bitrate_bits_per_second",
        "Ingest payload bitrate over the last second."
    );
    describe_gauge!(
        "prism_destination_state",
        "1 for the destination's current state, 0 for the others."
    );
    describe_counter!(
        "prism_destination_bytes_sent_total",
        Unit::Bytes,
        "Bytes written to the destination's socket."
    );
    describe_counter!(
        "prism_destination_frames_dropped_total",
        "Frames dropped because the destination fell behind its queue budget."
    );
    describe_counter!(
        "prism_destination_reconnects_total",
        "Connection attempts after the first during a publish."
    );
    describe_counter!(
        "prism_destination_acked_bytes_total",
        Unit::Bytes,
        "Bytes the destination server acknowledged (RTMP Acknowledgement)."
    );
    describe_gauge!(
        "prism_destination_ack_lag_bytes",
        Unit::Bytes,
        "Bytes sent on the current connection that the server has not acknowledged."
    );
    describe_counter!(
        "prism_destination_failures_total",
        "Destination sessions that failed, by kind (dns, connect_refused, connect_timeout, connect, tls, rejected, protocol, write_stall, ack_timeout, closed_by_peer, io, internal)."
    );
    describe_counter!(
        "prism_destination_ack_timeouts_total",
        "Connections ended because the server stopped acknowledging for ack_timeout_s."
    );
    describe_gauge!(
        "prism_destination_queue_bytes",
        Unit::Bytes,
        "What the messages waiting in the destination's queue cost: payload plus 128 bytes each."
    );
    describe_histogram!(
        "prism_destination_connect_seconds",
        Unit::Seconds,
        "From TCP connect to an accepted publish."
    );
    describe_histogram!(
        "prism_relay_latency_seconds",
        Unit::Seconds,
        "From a message's arrival at ingest to its last byte written to a destination socket."
    );
}

/// The routes of the metrics listener: `/metrics`, `/healthz`, `/readyz`.
pub fn router(telemetry: Arc<Telemetry>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_page))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(telemetry)
}

async fn metrics_page(State(telemetry): State<Arc<Telemetry>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        telemetry.render(),
    )
}

async fn ready(State(telemetry): State<Arc<Telemetry>>) -> impl IntoResponse {
    match telemetry.readiness.check() {
        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    }
}
