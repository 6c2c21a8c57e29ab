//! The per-message fan-out path in isolation: hub → each destination's
//! writer (directly, as for a destination that keeps up; through its queue,
//! as for one that fell behind; or held eight messages at a time, as for a
//! latency budget) → chunk headers + payload slices → a vectored write to a
//! sink. Prints bytes allocated per message per
//! destination beside criterion's timings.
//!
//! Run: cargo bench -p prism-fanout --bench fanout

#[path = "support/counting_alloc.rs"]
mod counting_alloc;
#[path = "support/fanout_rig.rs"]
mod fanout_rig;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use counting_alloc::{allocated_bytes, CountingAllocator};
use fanout_rig::{FanoutRig, Path};

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

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
            let mut timestamp = 0u64;
            let mut next = move || {
                timestamp += 40;
                if len > 1000 {
                    FanoutRig::video(len, timestamp, timestamp.is_multiple_of(2000))
                } else {
                    FanoutRig::audio(len, timestamp)
                }
            };
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

criterion_group!(benches, fanout);
criterion_main!(benches);
