//! AAC framing: the AudioSpecificConfig that FLV/RTMP carries once, and the
//! ADTS header MPEG-TS carries on every frame. Read when SRT ingest remuxes
//! TS into FLV, written when SRT destinations get FLV muxed into TS.

const SAMPLE_RATES: [u32; 13] = [
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
];

/// What the AudioSpecificConfig carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AacConfig {
    /// Audio object type (2 = AAC LC).
    pub object_type: u8,
    pub sample_rate_index: u8,
    pub channels: u8,
}

impl AacConfig {
    pub fn sample_rate(&self) -> u32 {
        SAMPLE_RATES
            .get(self.sample_rate_index as usize)
            .copied()
            .unwrap_or(44100)
    }

    /// The two-byte AudioSpecificConfig (ISO/IEC 14496-3).
    pub fn audio_specific_config(&self) -> [u8; 2] {
        crate::flv::aac_audio_specific_config(
            self.object_type,
            self.sample_rate_index,
            self.channels,
        )
    }

    /// Reads a two-byte AudioSpecificConfig (the body of an FLV AAC
    /// sequence header after its 2-byte tag header); `None` for one with an
    /// explicit or unknown sample rate.
    pub fn from_audio_specific_config(config: &[u8]) -> Option<Self> {
        let [a, b] = *config.get(..2)? else {
            return None;
        };
        let sample_rate_index = ((a & 0x07) << 1) | (b >> 7);
        if sample_rate_index as usize >= SAMPLE_RATES.len() {
            return None;
        }
        Some(Self {
            object_type: a >> 3,
            sample_rate_index,
            channels: (b >> 3) & 0x0f,
        })
    }
}

impl AacConfig {
    /// The 7-byte ADTS header (no CRC) of a frame of `payload_len` bytes.
    /// `None` when the frame is too long for ADTS's 13-bit length or the
    /// object type has no ADTS profile (ADTS carries types 1 to 4).
    pub fn adts_header(&self, payload_len: usize) -> Option<[u8; 7]> {
        let frame_length = payload_len + 7;
        if frame_length >= 1 << 13 || !(1..=4).contains(&self.object_type) {
            return None;
        }
        let profile = self.object_type - 1;
        Some([
            0xff,
            0xf1, // MPEG-4, layer 0, no CRC
            (profile << 6) | (self.sample_rate_index << 2) | ((self.channels >> 2) & 1),
            ((self.channels & 3) << 6) | ((frame_length >> 11) as u8 & 3),
            (frame_length >> 3) as u8,
            (((frame_length & 7) as u8) << 5) | 0x1f, // buffer fullness 0x7ff: VBR
            0xfc,
        ])
    }
}

/// One ADTS frame: its configuration and its raw AAC payload.
#[derive(Debug, PartialEq, Eq)]
pub struct AdtsFrame<'a> {
    pub config: AacConfig,
    pub payload: &'a [u8],
}

/// Splits a buffer of ADTS frames; stops at the first thing that is not one.
pub fn adts_frames(mut data: &[u8]) -> impl Iterator<Item = AdtsFrame<'_>> {
    std::iter::from_fn(move || {
        if data.len() < 7 || data[0] != 0xff || data[1] & 0xf0 != 0xf0 {
            return None;
        }
        let protection_absent = data[1] & 1 == 1;
        let object_type = (data[2] >> 6) + 1;
        let sample_rate_index = (data[2] >> 2) & 0x0f;
        let channels = ((data[2] & 1) << 2) | (data[3] >> 6);
        let frame_length = (((data[3] & 3) as usize) << 11)
            | ((data[4] as usize) << 3)
            | ((data[5] as usize) >> 5);
        let header = if protection_absent { 7 } else { 9 };
        if frame_length <= header
            || frame_length > data.len()
            || sample_rate_index as usize >= SAMPLE_RATES.len()
        {
            return None;
        }
        let frame = AdtsFrame {
            config: AacConfig {
                object_type,
                sample_rate_index,
                channels,
            },
            payload: &data[header..frame_length],
        };
        data = &data[frame_length..];
        Some(frame)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_audio_specific_config_reads_back() {
        let config = AacConfig {
            object_type: 2,
            sample_rate_index: 3,
            channels: 2,
        };
        let bytes = config.audio_specific_config();
        assert_eq!(bytes, [0x11, 0x90]);
        assert_eq!(AacConfig::from_audio_specific_config(&bytes), Some(config));
        // An explicit sample rate (index 15) or a truncated config: none.
        assert_eq!(AacConfig::from_audio_specific_config(&[0x17, 0x80]), None);
        assert_eq!(AacConfig::from_audio_specific_config(&[0x11]), None);
    }

    fn adts(payload: &[u8]) -> Vec<u8> {
        // AAC LC, 44.1 kHz (index 4), stereo, no CRC.
        let len = payload.len() + 7;
        let mut frame = vec![
            0xff,
            0xf1,
            (1 << 6) | (4 << 2),
            (2 << 6) | ((len >> 11) as u8 & 3),
            (len >> 3) as u8,
            ((len & 7) << 5) as u8 | 0x1f,
            0xfc,
        ];
        frame.extend_from_slice(payload);
        frame
    }

    #[test]
    fn splits_adts_and_builds_the_audio_specific_config() {
        let mut data = adts(&[1, 2, 3]);
        data.extend(adts(&[4, 5]));
        let frames: Vec<AdtsFrame<'_>> = adts_frames(&data).collect();
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].payload, &[1, 2, 3]);
        assert_eq!(frames[1].payload, &[4, 5]);
        let config = frames[0].config;
        assert_eq!(
            (config.object_type, config.sample_rate(), config.channels),
            (2, 44100, 2)
        );
        assert_eq!(config.audio_specific_config(), [0x12, 0x10]);
    }

    #[test]
    fn an_adts_header_reads_back() {
        let config = AacConfig {
            object_type: 2,
            sample_rate_index: 4,
            channels: 2,
        };
        let mut frame = config.adts_header(3).unwrap().to_vec();
        assert_eq!(frame[..], adts(&[7, 8, 9])[..7]);
        frame.extend_from_slice(&[7, 8, 9]);
        let frames: Vec<AdtsFrame<'_>> = adts_frames(&frame).collect();
        assert_eq!(frames.len(), 1);
        assert_eq!(
            (frames[0].config, frames[0].payload),
            (config, &[7u8, 8, 9][..])
        );
        assert_eq!(config.adts_header(8192), None);
    }

    #[test]
    fn stops_at_garbage_and_truncation() {
        let data = adts(&[1, 2, 3]);
        assert_eq!(adts_frames(&data[..8]).count(), 0);
        assert_eq!(adts_frames(&[0xff, 0x00, 0, 0, 0, 0, 0, 0]).count(), 0);
    }
}
