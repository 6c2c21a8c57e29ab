//! The MPEG-TS demuxer and remuxer on transport streams made by a real
//! ffmpeg: normal, truncated, corrupted, with continuity gaps, across the
//! 33-bit PTS wrap; the remuxed result is written as FLV and must decode
//! without a single error. Plus a property test: no input makes them panic.

use prism_testkit::clip::Clip;
use prism_testkit::probe;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use prism_ingest::remux::Remuxer;
use prism_ingest::ts::{packet_pid, EsCodec, EsFrame, TsDemuxer};
use prism_media::{MediaKind, MediaMessage};

fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("prism-ts-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A 4 s H.264 + AAC transport stream from ffmpeg; `extra` goes before the output.
fn make_ts(name: &str, extra: &[&str]) -> Vec<u8> {
    make_ts_with(name, "libx264", extra)
}

fn make_ts_with(name: &str, encoder: &str, extra: &[&str]) -> Vec<u8> {
    let path = scratch().join(name);
    Clip::new("testsrc=size=160x120:rate=25")
        .audio("sine=frequency=300:sample_rate=44100")
        .codec(encoder)
        .b_frames(2)
        .args_before_output(extra)
        .encode("mpegts", &path)
        .unwrap();
    std::fs::read(path).unwrap()
}

fn normal_ts() -> &'static [u8] {
    static TS: OnceLock<Vec<u8>> = OnceLock::new();
    TS.get_or_init(|| make_ts("normal.ts", &[]))
}

struct Remuxed {
    messages: Vec<MediaMessage>,
    stats: prism_ingest::remux::RemuxStats,
    /// For each relayed video frame: was it the first after a drop, and a keyframe?
    after_drop: Vec<bool>,
}

/// Demuxes and remuxes `ts`, fed in `chunk`-byte pieces (SRT delivers 1316).
fn remux(ts: &[u8], chunk: usize) -> Remuxed {
    let mut demuxer = TsDemuxer::new();
    let mut remuxer = Remuxer::new();
    let mut frames: Vec<EsFrame> = Vec::new();
    let mut messages = Vec::new();
    let mut after_drop = Vec::new();
    let mut dropping = false;
    for piece in ts.chunks(chunk) {
        demuxer.push(piece, &mut frames);
        for frame in frames.drain(..) {
            let dropped_before = remuxer.stats.video_frames_dropped;
            let start = messages.len();
            remuxer.push(frame, &mut messages);
            if remuxer.stats.video_frames_dropped > dropped_before {
                dropping = true;
            }
            for message in &messages[start..] {
                if message.kind == MediaKind::Video && !message.sequence_header && dropping {
                    after_drop.push(message.keyframe);
                    dropping = false;
                }
            }
        }
    }
    Remuxed {
        messages,
        stats: remuxer.stats,
        after_drop,
    }
}

/// Writes messages as an FLV file, as a receiver's recording would be.
fn write_flv(path: &Path, messages: &[MediaMessage]) {
    let mut out = prism_media::flv::FILE_HEADER.to_vec();
    for m in messages {
        let timestamp = prism_media::timeline::rtmp_timestamp(m.timestamp);
        prism_media::flv::write_tag(&mut out, m.kind.type_id(), timestamp, &m.payload);
    }
    std::fs::write(path, out).unwrap();
}

/// ffmpeg decodes the FLV with no error; returns the span ffprobe sees
/// (the remuxed timeline starts with 2 s of headroom, which every
/// destination rebases away).
fn assert_decodes(name: &str, messages: &[MediaMessage]) -> f64 {
    let path = scratch().join(name);
    write_flv(&path, messages);
    probe::assert_decodes(&path, &[]);
    let probe = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "format=start_time,duration:stream=codec_name,width,height",
            "-of",
            "csv=p=0",
        ])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&probe.stdout).to_string();
    assert!(
        text.contains("h264,160,120") && text.contains("aac"),
        "{name}: {text}"
    );
    let mut format = text.lines().last().unwrap().trim().split(',');
    let start: f64 = format.next().unwrap().parse().unwrap();
    let duration: f64 = format.next().unwrap().parse().unwrap();
    duration - start
}

fn assert_monotonic(messages: &[MediaMessage]) {
    for kind in [MediaKind::Video, MediaKind::Audio] {
        let stamps: Vec<u64> = messages
            .iter()
            .filter(|m| m.kind == kind && !m.sequence_header)
            .map(|m| m.timestamp)
            .collect();
        assert!(
            stamps
                .windows(2)
                .all(|w| w[1] > w[0] || kind == MediaKind::Video && w[1] >= w[0]),
            "{kind:?}: {stamps:?}"
        );
    }
}

#[test]
fn a_clean_stream_remuxes_into_decodable_flv() {
    let out = remux(normal_ts(), 1316);
    let video: Vec<&MediaMessage> = out
        .messages
        .iter()
        .filter(|m| m.kind == MediaKind::Video)
        .collect();
    assert!(
        video[0].sequence_header,
        "the AVC sequence header comes first"
    );
    assert!(video[1].keyframe);
    // 4 s at 25 fps, less the last frame: a PES ends when the next one
    // begins, which at the end of a stream never happens.
    assert_eq!(video.iter().filter(|m| !m.sequence_header).count(), 99);
    let audio = out
        .messages
        .iter()
        .filter(|m| m.kind == MediaKind::Audio && !m.sequence_header)
        .count();
    // 172 AAC frames in 4 s, less the last PES (ffmpeg packs several frames in one).
    assert!((160..=172).contains(&audio), "{audio} AAC frames in 4 s");
    assert!(out.messages[0].kind == MediaKind::Data, "metadata first");
    // B-frames: some frames carry a composition time offset.
    assert!(
        video.iter().any(|m| m.payload[2..5] != [0, 0, 0]),
        "no composition time"
    );
    assert_monotonic(&out.messages);
    let duration = assert_decodes("normal.flv", &out.messages);
    assert!((duration - 4.0).abs() < 0.2, "duration {duration}");
    // However the bytes are split, the result is the same.
    assert_eq!(remux(normal_ts(), 7).messages.len(), out.messages.len());
    assert_eq!(
        remux(normal_ts(), 188 * 100 + 5).messages.len(),
        out.messages.len()
    );
}

#[test]
fn a_truncated_stream_yields_what_it_holds() {
    let ts = normal_ts();
    let cut = &ts[..ts.len() / 2 + 77];
    let out = remux(cut, 1316);
    let video = out
        .messages
        .iter()
        .filter(|m| m.kind == MediaKind::Video && !m.sequence_header)
        .count();
    assert!((35..=55).contains(&video), "{video}");
    assert_decodes("truncated.flv", &out.messages);
}

#[test]
fn lost_packets_cost_only_the_broken_frames() {
    let ts = normal_ts();
    let video_pid = ts.chunks(188).filter_map(packet_pid).find(|&pid| {
        pid != 0 && pid != 0x1000 && pid != 0x11 && {
            // The first PID carrying H.264 start codes is the video.
            ts.chunks(188)
                .any(|p| packet_pid(p) == Some(pid) && p.windows(4).any(|w| w == [0, 0, 1, 0x65]))
        }
    });
    let video_pid = video_pid.expect("a video PID");
    // Drop every tenth video packet in the middle second: continuity gaps.
    let mut lossy = Vec::with_capacity(ts.len());
    let (from, to) = (ts.len() / 4, ts.len() / 2);
    for (i, packet) in ts.chunks(188).enumerate() {
        let offset = i * 188;
        if offset > from && offset < to && packet_pid(packet) == Some(video_pid) && i % 10 == 0 {
            continue;
        }
        lossy.extend_from_slice(packet);
    }
    let out = remux(&lossy, 1316);
    assert!(out.stats.video_frames_dropped > 0, "{:?}", out.stats);
    assert!(
        !out.after_drop.is_empty() && out.after_drop.iter().all(|&k| k),
        "video resumed on a non-keyframe: {:?}",
        out.after_drop
    );
    let video = out
        .messages
        .iter()
        .filter(|m| m.kind == MediaKind::Video && !m.sequence_header)
        .count();
    // The lossy second, plus the rest of the GOP it broke, at most.
    assert!(video >= 40, "too much lost: {video}");
    assert_monotonic(&out.messages);
    assert_decodes("lossy.flv", &out.messages);
}

#[test]
fn garbage_bytes_are_skipped_and_the_stream_resyncs() {
    let ts = normal_ts();
    let mut corrupted = ts.to_vec();
    let middle = corrupted.len() / 2;
    // A torn datagram: 1000 bytes of noise (no sync bytes), and an odd-sized hole.
    for (i, b) in corrupted[middle..middle + 1000].iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(31) | 1;
    }
    corrupted.drain(middle + 3000..middle + 3100);
    let out = remux(&corrupted, 1316);
    let video = out
        .messages
        .iter()
        .filter(|m| m.kind == MediaKind::Video && !m.sequence_header)
        .count();
    // Two damaged spots cost at most two GOPs (25 frames each).
    assert!(video >= 49, "{video}");
    assert!(
        !out.after_drop.is_empty() && out.after_drop.iter().all(|&k| k),
        "{:?}",
        out.after_drop
    );
    assert_monotonic(&out.messages);
    assert_decodes("corrupted.flv", &out.messages);
}

#[test]
fn timestamps_continue_across_the_33_bit_pts_wrap() {
    // 2^33 / 90 kHz = 95443.7 s: start 1.5 s before the wrap.
    let ts = make_ts("wrap.ts", &["-output_ts_offset", "95442.2"]);
    let frames = {
        let mut demuxer = TsDemuxer::new();
        let mut frames = Vec::new();
        demuxer.push(&ts, &mut frames);
        frames
    };
    let wrapped = frames
        .windows(2)
        .any(|w| w[0].codec == EsCodec::H264 && w[1].pts + (1 << 32) < w[0].pts);
    assert!(
        wrapped || frames.iter().any(|f| f.pts < 90_000 * 10),
        "the fixture does not cross the wrap"
    );
    let out = remux(&ts, 1316);
    assert_monotonic(&out.messages);
    let duration = assert_decodes("wrap.flv", &out.messages);
    assert!((duration - 4.0).abs() < 0.2, "duration {duration}");
}

#[test]
fn hevc_becomes_enhanced_rtmp_that_rebuilds_into_a_decodable_stream() {
    let ts = make_ts_with("hevc.ts", "libx265", &[]);
    let out = remux(&ts, 1316);
    let video: Vec<&MediaMessage> = out
        .messages
        .iter()
        .filter(|m| m.kind == MediaKind::Video)
        .collect();
    // SequenceStart with FourCC hvc1, then coded frames starting on a keyframe.
    let header = video[0];
    assert!(header.sequence_header);
    assert_eq!(&header.payload[..5], b"\x90hvc1");
    assert!(video[1].keyframe && &video[1].payload[1..5] == b"hvc1");
    assert_eq!(video.len() - 1, 99);
    // The HEVCDecoderConfigurationRecord: version 1, then VPS, SPS, PPS arrays.
    let record = &header.payload[5..];
    assert_eq!(record[0], 1);
    assert_eq!(record[21] & 3, 3, "4-byte NAL lengths");
    let mut annex_b = Vec::new();
    let mut at = 23;
    for expected_type in [32u8, 33, 34] {
        assert_eq!(record[at] & 0x3f, expected_type);
        let len = u16::from_be_bytes([record[at + 3], record[at + 4]]) as usize;
        annex_b.extend_from_slice(&[0, 0, 0, 1]);
        annex_b.extend_from_slice(&record[at + 5..at + 5 + len]);
        at += 5 + len;
    }
    assert_eq!(at, record.len());
    // Rebuild an Annex B stream from the length-prefixed frames: it must decode.
    for frame in &video[1..] {
        let mut nals = &frame.payload[8..];
        while nals.len() >= 4 {
            let len = u32::from_be_bytes([nals[0], nals[1], nals[2], nals[3]]) as usize;
            annex_b.extend_from_slice(&[0, 0, 0, 1]);
            annex_b.extend_from_slice(&nals[4..4 + len]);
            nals = &nals[4 + len..];
        }
        assert!(nals.is_empty());
    }
    let path = scratch().join("rebuilt.hevc");
    std::fs::write(&path, annex_b).unwrap();
    probe::assert_decodes(&path, &["-f", "hevc"]);
    let metadata = out
        .messages
        .iter()
        .find(|m| m.kind == MediaKind::Data)
        .unwrap();
    assert!(metadata.payload.windows(5).any(|w| w == b"width"));
}

mod no_panics {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..4096), chunk in 1usize..2000) {
            remux(&bytes, chunk);
        }

        #[test]
        fn random_packets_with_sync_bytes(packets in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 187), 0..40)) {
            let mut ts = Vec::new();
            for (i, packet) in packets.iter().enumerate() {
                ts.push(0x47);
                let mut packet = packet.clone();
                // Mostly the PIDs a real stream uses, so PAT/PMT/PES parsing is reached.
                packet[0] = [0x00, 0x10, 0x01][i % 3] & 0x1f;
                packet[1] = [0x00, 0x00, 0x00][i % 3];
                ts.extend_from_slice(&packet);
            }
            remux(&ts, 1316);
        }

        #[test]
        fn mutated_real_stream(flips in proptest::collection::vec((0usize..200_000, any::<u8>()), 1..50)) {
            let mut ts = normal_ts()[..normal_ts().len().min(200_000)].to_vec();
            for (at, value) in flips {
                if let Some(b) = ts.get_mut(at) {
                    *b = value;
                }
            }
            remux(&ts, 1316);
        }
    }
}
