//! Zero copy, measured: relaying a message to N destinations allocates no
//! payload copy per destination. A counting allocator sees every byte.

use prism_testkit::alloc::{allocated_bytes, CountingAllocator};
use prism_testkit::fanout_rig::{FanoutRig, Path};

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// The bound from the performance issue: headers only.
const MAX_BYTES_PER_MESSAGE_PER_DESTINATION: u64 = 64;

#[test]
fn relaying_allocates_no_payload_copy_per_destination() {
    for (destinations, path) in [1, 10, 100]
        .into_iter()
        .flat_map(|n| [(n, Path::Direct), (n, Path::Queued), (n, Path::Held(8))])
    {
        let mut rig = FanoutRig::new(destinations, path);
        // Messages are built before measuring: ingest allocates each payload once.
        let mut messages = Vec::new();
        for i in 0..400u64 {
            messages.push(FanoutRig::video(100 * 1024, i * 40, i.is_multiple_of(50)));
            messages.push(FanoutRig::audio(400, i * 40 + 20));
        }
        let (warm_up, measured) = messages.split_at(200);
        for message in warm_up {
            rig.relay(message.clone());
        }
        let before = allocated_bytes();
        for message in measured {
            rig.relay(message.clone());
        }
        let allocated = allocated_bytes() - before;
        let per = allocated as f64 / (measured.len() * destinations) as f64;
        println!(
            "{destinations} destinations, {path:?}: {per:.2} bytes allocated per message per destination"
        );
        assert!(
            per <= MAX_BYTES_PER_MESSAGE_PER_DESTINATION as f64,
            "{destinations} destinations, {path:?}: {per:.1} bytes/message/destination (payloads are 100 KiB)"
        );
        assert!(rig.bytes_written() > (messages.len() * destinations * 400) as u64);
    }
}
