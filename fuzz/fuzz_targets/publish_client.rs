//! The RTMP publishing client on arbitrary server replies.
#![no_main]
use libfuzzer_sys::fuzz_target;
use prism_fanout::client::PublishClient;
use prism_fanout::DestinationUrl;
use prism_media::chunk::ChunkWriter;

fuzz_target!(|data: &[u8]| {
    let mut client = PublishClient::new(
        DestinationUrl::parse("rtmp://h/app", Some("key")).unwrap(),
        prism_media::rtmp::DEFAULT_PUBLISH_CHUNK_SIZE,
    );
    let mut out = ChunkWriter::new(128);
    let _ = client.start(&mut out);
    for piece in data.chunks(61) {
        if client.handle_input(piece, &mut out).is_err() {
            break;
        }
        out.clear();
    }
});
