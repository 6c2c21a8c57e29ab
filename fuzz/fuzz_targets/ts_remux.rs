//! MPEG-TS demux and remux to FLV messages on arbitrary bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use prism_ingest::remux::Remuxer;
use prism_ingest::ts::TsDemuxer;

fuzz_target!(|data: &[u8]| {
    let (mut demuxer, mut remuxer) = (TsDemuxer::new(), Remuxer::new());
    let (mut frames, mut messages) = (Vec::new(), Vec::new());
    for piece in data.chunks(1316) {
        demuxer.push(piece, &mut frames);
        for frame in frames.drain(..) {
            remuxer.push(frame, &mut messages);
        }
        messages.clear();
    }
});
