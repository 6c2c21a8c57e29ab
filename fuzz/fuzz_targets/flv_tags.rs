//! FLV tag inspection, AMF0 depth scanning and the H.264/HEVC/AAC parsers.
#![no_main]
use libfuzzer_sys::fuzz_target;
use prism_media::{flv, rtmp};

fuzz_target!(|data: &[u8]| {
    let _ = flv::inspect_video(data);
    let _ = flv::is_audio_sequence_header(data);
    let _ = flv::is_metadata(data);
    let _ = flv::video_codec_name(data);
    let _ = flv::audio_codec_name(data);
    let _ = rtmp::amf0_depth_ok(data);
    let _ = prism_ingest::h264::sps_dimensions(data);
    let _ = prism_ingest::hevc::parse_sps(data);
    let _ = prism_ingest::aac::adts_frames(data).count();
    let _ = prism_ingest::h264::nal_units(data).count();
});
