//! SRT stream-id parsing and destination URL parsing on arbitrary text.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = prism_ingest::streamid::publish_key(text);
        let _ = prism_fanout::DestinationUrl::parse(text, None);
        let _ = prism_fanout::DestinationUrl::parse(text, Some("key"));
    }
});
