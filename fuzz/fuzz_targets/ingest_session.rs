//! The RTMP server session (after the handshake) on arbitrary bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use prism_ingest::session::IngestSession;
use prism_media::chunk::ChunkWriter;

fuzz_target!(|data: &[u8]| {
    let mut session = IngestSession::new();
    let mut out = ChunkWriter::new(128);
    let mut events = Vec::new();
    for piece in data.chunks(97) {
        if session.handle_input(piece, &mut out, &mut events).is_err() {
            break;
        }
        events.clear();
        out.clear();
    }
});
