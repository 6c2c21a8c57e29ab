//! HEVC helpers: NAL unit types, the SPS (picture size, profile) and the
//! HEVCDecoderConfigurationRecord, for remuxing and recording.

use crate::h264::{rbsp, BitReader};

pub const NAL_VPS: u8 = 32;
pub const NAL_SPS: u8 = 33;
pub const NAL_PPS: u8 = 34;
pub const NAL_AUD: u8 = 35;

/// The enhanced-RTMP FourCC for HEVC.
pub const FOURCC: &[u8; 4] = b"hvc1";

pub fn nal_type(unit: &[u8]) -> u8 {
    unit.first().map_or(0, |b| (b >> 1) & 0x3f)
}

/// IRAP pictures (BLA, IDR, CRA): a decoder can start there.
pub fn is_keyframe(nal_type: u8) -> bool {
    (16..=21).contains(&nal_type)
}

/// What the record needs from the SPS.
#[derive(Debug, PartialEq, Eq)]
pub struct SpsInfo {
    /// The 12 bytes of general profile, tier and level.
    pub general_ptl: [u8; 12],
    pub max_sub_layers: u8,
    pub temporal_id_nested: bool,
    pub chroma_format_idc: u32,
    pub bit_depth_luma_minus8: u32,
    pub bit_depth_chroma_minus8: u32,
    pub width: u32,
    pub height: u32,
}

/// Parses an SPS NAL unit (with its two-byte header).
pub fn parse_sps(sps: &[u8]) -> Option<SpsInfo> {
    let data = rbsp(sps.get(2..)?);
    let first = *data.first()?;
    let max_sub_layers_minus1 = ((first >> 1) & 0x07) as usize;
    let temporal_id_nested = first & 1 == 1;
    let general_ptl: [u8; 12] = data.get(1..13)?.try_into().ok()?;
    let mut r = BitReader::new(data.get(13..)?);
    let mut profile_present = [false; 8];
    let mut level_present = [false; 8];
    for i in 0..max_sub_layers_minus1 {
        profile_present[i] = r.bit()? == 1;
        level_present[i] = r.bit()? == 1;
    }
    if max_sub_layers_minus1 > 0 {
        for _ in max_sub_layers_minus1..8 {
            r.bits(2)?;
        }
    }
    for i in 0..max_sub_layers_minus1 {
        if profile_present[i] {
            r.bits(32)?;
            r.bits(32)?;
            r.bits(24)?;
        }
        if level_present[i] {
            r.bits(8)?;
        }
    }
    r.ue()?; // sps_seq_parameter_set_id
    let chroma_format_idc = r.ue()?;
    if chroma_format_idc == 3 {
        r.bit()?; // separate_colour_plane_flag
    }
    let mut width = r.ue()?;
    let mut height = r.ue()?;
    if r.bit()? == 1 {
        let (sub_w, sub_h) = match chroma_format_idc {
            1 => (2, 2),
            2 => (2, 1),
            _ => (1, 1),
        };
        let (left, right, top, bottom) = (r.ue()?, r.ue()?, r.ue()?, r.ue()?);
        // Peer-chosen Exp-Golomb values: overflow is a malformed SPS.
        let crop = |sub: u32, a: u32, b: u32| a.checked_add(b)?.checked_mul(sub);
        width = width.checked_sub(crop(sub_w, left, right)?)?;
        height = height.checked_sub(crop(sub_h, top, bottom)?)?;
    }
    Some(SpsInfo {
        general_ptl,
        max_sub_layers: max_sub_layers_minus1 as u8 + 1,
        temporal_id_nested,
        chroma_format_idc,
        bit_depth_luma_minus8: r.ue()?,
        bit_depth_chroma_minus8: r.ue()?,
        width,
        height,
    })
}

/// The first SPS of an HEVCDecoderConfigurationRecord (ISO/IEC 14496-15,
/// 8.3.3.1): its arrays follow a 22-byte header and their count.
pub fn record_sps(record: &[u8]) -> Option<&[u8]> {
    let arrays = *record.get(22)?;
    let mut at = 23;
    for _ in 0..arrays {
        let nal_type = record.get(at)? & 0x3f;
        let count = u16::from_be_bytes([*record.get(at + 1)?, *record.get(at + 2)?]);
        at += 3;
        for _ in 0..count {
            let len = usize::from(u16::from_be_bytes([*record.get(at)?, *record.get(at + 1)?]));
            let unit = record.get(at + 2..at + 2 + len)?;
            if nal_type == NAL_SPS {
                return Some(unit);
            }
            at += 2 + len;
        }
    }
    None
}

/// The HEVCDecoderConfigurationRecord (ISO/IEC 14496-15, 8.3.3.1) for one
/// VPS, SPS and PPS, with 4-byte NAL lengths.
pub fn decoder_configuration_record(vps: &[u8], sps: &[u8], pps: &[u8]) -> Option<Vec<u8>> {
    let info = parse_sps(sps)?;
    let mut record = Vec::with_capacity(23 + 15 + vps.len() + sps.len() + pps.len());
    record.push(1); // configurationVersion
    record.extend_from_slice(&info.general_ptl);
    record.extend_from_slice(&[0xf0, 0x00]); // min_spatial_segmentation_idc = 0
    record.push(0xfc); // parallelismType unknown
    record.push(0xfc | (info.chroma_format_idc as u8 & 3));
    record.push(0xf8 | (info.bit_depth_luma_minus8 as u8 & 7));
    record.push(0xf8 | (info.bit_depth_chroma_minus8 as u8 & 7));
    record.extend_from_slice(&[0, 0]); // avgFrameRate unknown
    record.push(((info.max_sub_layers & 7) << 3) | ((info.temporal_id_nested as u8) << 2) | 3);
    record.push(3); // numOfArrays
    for (nal_type, unit) in [(NAL_VPS, vps), (NAL_SPS, sps), (NAL_PPS, pps)] {
        if unit.len() > u16::MAX as usize {
            return None;
        }
        record.push(0x80 | nal_type); // array_completeness
        record.extend_from_slice(&1u16.to_be_bytes());
        record.extend_from_slice(&(unit.len() as u16).to_be_bytes());
        record.extend_from_slice(unit);
    }
    Some(record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::h264::tests::BitWriter;

    /// One sub-layer SPS with a conformance window whose offsets overflow
    /// u32 when scaled by the chroma subsampling.
    #[test]
    fn a_crop_window_past_u32_is_refused() {
        let mut sps = vec![0x42, 0x01, 0x01];
        sps.extend([0x01; 12]); // general profile, tier and level
        let mut bits = BitWriter::default();
        bits.ue(0).ue(1).ue(1920).ue(1080).bits(1, 1);
        bits.ue(u32::MAX - 1)
            .ue(u32::MAX - 1)
            .ue(0)
            .ue(0)
            .ue(0)
            .ue(0);
        sps.extend(bits.finish());
        assert_eq!(parse_sps(&sps), None);
    }

    #[test]
    fn a_crop_window_is_applied() {
        let mut sps = vec![0x42, 0x01, 0x01];
        sps.extend([0x01; 12]);
        let mut bits = BitWriter::default();
        bits.ue(0).ue(1).ue(1920).ue(1088).bits(1, 1);
        bits.ue(0).ue(0).ue(0).ue(4).ue(0).ue(0);
        sps.extend(bits.finish());
        let info = parse_sps(&sps).unwrap();
        assert_eq!((info.width, info.height), (1920, 1080));
        // Written into a record and found there again.
        let record = decoder_configuration_record(b"\x40\x01vps", &sps, b"\x44\x01pps").unwrap();
        assert_eq!(record_sps(&record), Some(&sps[..]));
        assert_eq!(record_sps(&record[..record.len() - 10]), Some(&sps[..]));
        assert_eq!(record_sps(&record[..30]), None);
    }
}
