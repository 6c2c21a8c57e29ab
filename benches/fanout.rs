//! The per-message fan-out path in isolation: hub → each destination's
//! writer (directly, as for a destination that keeps up; through its queue,
//! as for one that fell behind; or held eight messages at a time, as for a
//! latency budget) → chunk headers + payload slices → a vectored write to a
//! sink. Prints bytes allocated per message per
//! destination beside criterion's timings.
//!
//! The `cold/` cases write through a large buffer before each message and
//! time only the fan-out: a relay's per-destination state is cold again by
//! the next message (the kernel's payload copies in between evict it),
//! which the warm cases never see.
//!
//! Run: cargo bench -p prism-fanout --bench fanout

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use prism_media::MediaMessage;
use prism_testkit::alloc::{allocated_bytes, CountingAllocator};
use prism_testkit::fanout_rig::{FanoutRig, Path};

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Messages of `len` bytes 40 ms apart: video (a keyframe every 2 s) when
/// longer than 1000 bytes, audio otherwise.
fn messages(len: usize) -> impl FnMut() -> MediaMessage {
    let mut timestamp = 0u64;
    move || {
        timestamp += 40;
        if len > 1000 {
            FanoutRig::video(len, timestamp, timestamp.is_multiple_of(2000))
        } else {
            FanoutRig::audio(len, timestamp)
        }
    }
}

fn fanout(c: &mut Criterion) {
    let cases = [
        ("video_100KiB", 100 * 1024, Path::Direct),
        ("audio_400B", 400, Path::Direct),
        ("queued/video_100KiB", 100 * 1024, Path::Queued),
        ("queued/audio_400B", 400, Path::Queued),
        // About 100 ms of a 6 Mbit/s, 30 fps stream with its audio.
        ("held8/video_100KiB", 100 * 1024, Path::Held(8)),
        ("held8/audio_400B", 400, Path::Held(8)),
    ];
    for (name, len, path) in cases {
        let mut group = c.benchmark_group(format!("fanout/{name}"));
        for destinations in [1usize, 10, 100] {
            let mut rig = FanoutRig::new(destinations, path);
            let mut next = messages(len);
            // A multiple of 8, so the held path has written all of them.
            for _ in 0..104 {
                rig.relay(next());
            }
            assert!(
                rig.bytes_written() >= (100 * len * destinations) as u64,
                "every destination wrote every message"
            );
            let before = allocated_bytes();
            let messages = 1000;
            for _ in 0..messages {
                rig.relay(next());
            }
            // The message itself (built by `next`) is ingest's one allocation; report it apart.
            let payload_alloc = (len + 64) as u64 * messages;
            let per = (allocated_bytes() - before).saturating_sub(payload_alloc) as f64
                / (messages as f64 * destinations as f64);
            println!("fanout/{name}/{destinations}: {per:.2} bytes allocated per message per destination (beyond the payload itself)");

            group.throughput(Throughput::Elements(destinations as u64));
            group.bench_function(format!("{destinations}_destinations"), |b| {
                b.iter_batched(
                    &mut next,
                    |m| rig.relay(m),
                    criterion::BatchSize::SmallInput,
                )
            });
        }
        group.finish();
    }
}

/// The `cold/` cases: evicted from the core's own caches (4 MiB, past a
/// 1 MiB L2, as the kernel's payload copies between two messages do on
/// loopback at 100 destinations) or from every cache (64 MiB, past a 16 MiB
/// L3).
const EVICTIONS: [(&str, usize); 2] = [("past_l2", 4 << 20), ("past_l3", 64 << 20)];

fn fanout_cold(c: &mut Criterion) {
    for (evicted, evict_bytes) in EVICTIONS {
        let mut evict = vec![0u8; evict_bytes];
        let mut sweep = 0u8;
        let mut evict_caches = move || {
            sweep = sweep.wrapping_add(1);
            for line in evict.chunks_mut(64) {
                line[0] = sweep;
            }
            std::hint::black_box(&evict);
        };
        let destinations = 100;
        let mut group = c.benchmark_group(format!("fanout/cold/{evicted}/video_25KiB"));
        group.sample_size(20);
        let mut rig = FanoutRig::new(destinations, Path::Direct);
        let mut next = messages(25 * 1024);
        for _ in 0..8 {
            rig.relay(next());
        }
        group.throughput(Throughput::Elements(destinations as u64));
        group.bench_function(format!("{destinations}_destinations"), |b| {
            b.iter_custom(|iters| {
                let mut fanning_out = Duration::ZERO;
                for _ in 0..iters {
                    let message = next();
                    evict_caches();
                    let start = Instant::now();
                    rig.relay(message);
                    fanning_out += start.elapsed();
                }
                fanning_out
            })
        });
        group.finish();
    }
}

criterion_group!(benches, fanout, fanout_cold);
criterion_main!(benches);
