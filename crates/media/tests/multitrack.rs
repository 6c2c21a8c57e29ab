//! Multitrack as FFmpeg 8's FLV muxer writes it (fixtures/, made with PyAV by
//! fixtures/make-two-video-tracks.py): track 0 as plain packets, track 1 as
//! OneTrack multitrack packets. Every video tag reads; the default track is
//! the plain one alone, at its own resolution.

use bytes::Bytes;
use prism_media::multitrack::{read, Layout};
use prism_media::single_track::{default_track, DefaultTrack};
use prism_media::{MediaKind, MediaMessage};

fn tags() -> Vec<MediaMessage> {
    let file = Bytes::from_static(include_bytes!("fixtures/ffmpeg8-two-video-tracks.flv"));
    prism_media::flv::file_tags(&file).collect()
}

#[test]
fn ffmpeg_8_multitrack_reads_and_its_default_track_is_the_plain_one() {
    let video: Vec<MediaMessage> = tags()
        .into_iter()
        .filter(|m| m.kind == MediaKind::Video)
        .collect();
    let (mut plain, mut second) = (0, 0);
    let mut default_headers = Vec::new();
    for message in &video {
        match read(MediaKind::Video, &message.payload).expect("every tag reads") {
            // Pictures (AVCPacketType 1) of track 0.
            None if message.payload.get(1) == Some(&1) => plain += 1,
            None => {}
            Some(multitrack) => {
                second += 1;
                assert_eq!(multitrack.layout, Layout::OneTrack);
                assert_eq!(multitrack.tracks.len(), 1);
                assert_eq!(multitrack.tracks[0].id, 1);
                assert_eq!(multitrack.tracks[0].fourcc, *b"avc1");
            }
        }
        match default_track(message) {
            DefaultTrack::Unchanged if message.sequence_header => {
                default_headers.push(message.payload.clone())
            }
            DefaultTrack::Unchanged => {}
            DefaultTrack::Nothing => {}
            DefaultTrack::Track(_) => panic!("FFmpeg writes track 0 plain"),
        }
    }
    // 50 pictures of each track (track 1's sequence header is multitrack too).
    assert_eq!(
        (plain, second),
        (50, 51),
        "{plain} plain, {second} multitrack"
    );
    // The default track's one sequence header is the 640x360 one.
    assert_eq!(default_headers.len(), 1);
    let record = &default_headers[0][5..];
    let sps_len = usize::from(u16::from_be_bytes([record[6], record[7]]));
    let sps = &record[8..8 + sps_len];
    assert_eq!(prism_media::h264::sps_dimensions(sps), Some((640, 360)));
}
