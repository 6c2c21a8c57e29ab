//! H.264 helpers: Annex B and length-prefixed NAL units, the SPS (picture
//! size) and the AVCDecoderConfigurationRecord, for remuxing and recording.

/// NAL unit types that matter here.
pub const NAL_IDR: u8 = 5;
pub const NAL_SPS: u8 = 7;
pub const NAL_PPS: u8 = 8;
pub const NAL_AUD: u8 = 9;

/// The NAL units of an Annex B buffer (start codes `00 00 01` or
/// `00 00 00 01` removed), skipping empty ones.
pub fn nal_units(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = data;
    // Skip whatever precedes the first start code.
    match find_start_code(rest) {
        Some(at) => rest = &rest[at + START_CODE.len()..],
        None => rest = &[],
    }
    std::iter::from_fn(move || {
        while !rest.is_empty() {
            let (unit, next) = match find_start_code(rest) {
                Some(at) => (&rest[..at], &rest[at + START_CODE.len()..]),
                None => (rest, &[][..]),
            };
            rest = next;
            // A trailing zero byte belongs to the next 4-byte start code.
            let unit = match unit.iter().rposition(|&b| b != 0) {
                Some(last) => &unit[..=last],
                None => &[][..],
            };
            if !unit.is_empty() {
                return Some(unit);
            }
        }
        None
    })
}

/// The 3-byte start code; a 4-byte one is a zero byte before it.
const START_CODE: [u8; 3] = [0, 0, 1];

/// Where the next start code begins. A vectorised search: this scan runs
/// over every byte of every SRT-ingested frame, twice.
fn find_start_code(data: &[u8]) -> Option<usize> {
    memchr::memmem::find(data, &START_CODE)
}

pub fn nal_type(unit: &[u8]) -> u8 {
    unit.first().map_or(0, |b| b & 0x1f)
}

/// The AVCDecoderConfigurationRecord (ISO/IEC 14496-15) for one SPS and PPS.
pub use crate::flv::avc_decoder_configuration_record as decoder_configuration_record;

/// Removes emulation-prevention bytes (`00 00 03` → `00 00`).
pub fn rbsp(unit: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(unit.len());
    let mut zeros = 0;
    for &b in unit {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

/// Reads bits MSB first, with Exp-Golomb codes.
pub struct BitReader<'a> {
    data: &'a [u8],
    bit: usize,
}

impl<'a> BitReader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self { data, bit: 0 }
    }

    pub fn bit(&mut self) -> Option<u32> {
        let byte = *self.data.get(self.bit / 8)?;
        let value = (byte >> (7 - self.bit % 8)) & 1;
        self.bit += 1;
        Some(value as u32)
    }

    pub fn bits(&mut self, n: u32) -> Option<u32> {
        let mut value = 0;
        for _ in 0..n {
            value = (value << 1) | self.bit()?;
        }
        Some(value)
    }

    /// ue(v)
    pub fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        Some(((1u64 << zeros) - 1 + self.bits(zeros)? as u64) as u32)
    }

    /// se(v)
    pub fn se(&mut self) -> Option<i32> {
        let k = self.ue()? as i64;
        Some(if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) } as i32)
    }
}

/// The first SPS of an AVCDecoderConfigurationRecord (ISO/IEC 14496-15,
/// 5.3.3.1).
pub fn record_sps(record: &[u8]) -> Option<&[u8]> {
    if record.get(5)? & 0x1f == 0 {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([*record.get(6)?, *record.get(7)?]));
    record.get(8..8 + len)
}

/// Picture size from an SPS NAL unit (with its header byte).
pub fn sps_dimensions(sps: &[u8]) -> Option<(u32, u32)> {
    let data = rbsp(sps.get(1..)?);
    let mut r = BitReader::new(&data);
    let profile = r.bits(8)?;
    r.bits(16)?; // constraint flags, level
    r.ue()?; // seq_parameter_set_id
    let mut chroma_format = 1;
    if matches!(
        profile,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    ) {
        chroma_format = r.ue()?;
        if chroma_format == 3 {
            r.bit()?; // separate_colour_plane_flag
        }
        r.ue()?; // bit_depth_luma_minus8
        r.ue()?; // bit_depth_chroma_minus8
        r.bit()?; // qpprime_y_zero_transform_bypass_flag
        if r.bit()? == 1 {
            let lists = if chroma_format == 3 { 12 } else { 8 };
            for i in 0..lists {
                if r.bit()? == 1 {
                    let size = if i < 6 { 16 } else { 64 };
                    let (mut last, mut next) = (8i32, 8i32);
                    for _ in 0..size {
                        if next != 0 {
                            // delta_scale is -128..=127 in a valid SPS; a
                            // hostile one must not overflow.
                            next = (i64::from(last) + i64::from(r.se()?)).rem_euclid(256) as i32;
                        }
                        last = if next == 0 { last } else { next };
                    }
                }
            }
        }
    }
    r.ue()?; // log2_max_frame_num_minus4
    match r.ue()? {
        0 => {
            r.ue()?; // log2_max_pic_order_cnt_lsb_minus4
        }
        1 => {
            r.bit()?;
            r.se()?;
            r.se()?;
            for _ in 0..r.ue()?.min(255) {
                r.se()?;
            }
        }
        _ => {}
    }
    r.ue()?; // max_num_ref_frames
    r.bit()?; // gaps_in_frame_num_value_allowed_flag
    let width_mbs = r.ue()?.checked_add(1)?;
    let height_units = r.ue()?.checked_add(1)?;
    let frame_mbs_only = r.bit()?;
    if frame_mbs_only == 0 {
        r.bit()?; // mb_adaptive_frame_field_flag
    }
    r.bit()?; // direct_8x8_inference_flag
    let (mut left, mut right, mut top, mut bottom) = (0, 0, 0, 0);
    if r.bit()? == 1 {
        left = r.ue()?;
        right = r.ue()?;
        top = r.ue()?;
        bottom = r.ue()?;
    }
    let field_factor = u64::from(2 - frame_mbs_only);
    let (crop_x, crop_y) = match chroma_format {
        0 | 3 => (1, field_factor),
        2 => (2, field_factor),
        _ => (2, 2 * field_factor),
    };
    // The sizes are Exp-Golomb codes a peer chooses: up to 2^32 - 2 each, so
    // the arithmetic is done in u64 and a result past u32 is no picture.
    let coded_width = u64::from(width_mbs) * 16;
    let coded_height = field_factor * u64::from(height_units) * 16;
    let width = coded_width.checked_sub((u64::from(left) + u64::from(right)) * crop_x)?;
    let height = coded_height.checked_sub((u64::from(top) + u64::from(bottom)) * crop_y)?;
    Some((u32::try_from(width).ok()?, u32::try_from(height).ok()?))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    // SPSs written by ffmpeg's libx264: baseline 320x240, and high 1920x1080
    // (which needs cropping: 1088 coded lines, 1080 shown).
    const SPS_320X240: &[u8] = &[
        0x67, 0x42, 0xc0, 0x0d, 0xd9, 0x01, 0x41, 0xfb, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10,
        0x00, 0x00, 0x03, 0x03, 0x20, 0xf1, 0x42, 0xa4, 0x80,
    ];
    const SPS_1920X1080: &[u8] = &[
        0x67, 0x64, 0x00, 0x28, 0xac, 0xd9, 0x40, 0x78, 0x02, 0x27, 0xe5, 0xc0, 0x44, 0x00, 0x00,
        0x03, 0x00, 0x04, 0x00, 0x00, 0x03, 0x00, 0xc8, 0x3c, 0x60, 0xc6, 0x58,
    ];

    #[test]
    fn splits_annex_b_with_both_start_code_lengths() {
        let data = [
            0, 0, 0, 1, 0x09, 0xf0, 0, 0, 1, 0x67, 1, 2, 0, 0, 0, 1, 0x65, 7, 0,
        ];
        let units: Vec<&[u8]> = nal_units(&data).collect();
        assert_eq!(
            units,
            vec![&[0x09, 0xf0][..], &[0x67, 1, 2][..], &[0x65, 7][..]]
        );
        assert_eq!(nal_units(&[1, 2, 3]).count(), 0);
        assert_eq!(nal_units(&[]).count(), 0);
    }

    proptest::proptest! {
        /// Units as an encoder writes them (emulation prevention keeps
        /// `00 00 0x`, x ≤ 3, out of a unit, and a unit ends in a non-zero
        /// byte), each behind a 3- or 4-byte start code, come back whole.
        #[test]
        fn finds_every_unit_an_encoder_wrote(
            units in proptest::collection::vec(
                (proptest::collection::vec(proptest::num::u8::ANY, 1..300), proptest::bool::ANY),
                0..12,
            )
        ) {
            let units: Vec<Vec<u8>> = units
                .into_iter()
                .map(|(mut unit, _)| {
                    let mut escaped = Vec::with_capacity(unit.len());
                    for byte in unit.drain(..) {
                        let n = escaped.len();
                        if n >= 2 && escaped[n - 2] == 0 && escaped[n - 1] == 0 && byte <= 3 {
                            escaped.push(3);
                        }
                        escaped.push(byte);
                    }
                    if escaped.last() == Some(&0) {
                        escaped.push(0x80);
                    }
                    escaped
                })
                .collect();
            let mut data = Vec::new();
            for (i, unit) in units.iter().enumerate() {
                data.extend_from_slice(if i % 2 == 0 { &[0, 0, 1][..] } else { &[0, 0, 0, 1][..] });
                data.extend_from_slice(unit);
            }
            let found: Vec<&[u8]> = nal_units(&data).collect();
            let expected: Vec<&[u8]> = units.iter().map(Vec::as_slice).collect();
            proptest::prop_assert_eq!(found, expected);
        }
    }

    #[test]
    fn reads_the_picture_size_from_an_sps() {
        assert_eq!(sps_dimensions(SPS_320X240), Some((320, 240)));
        assert_eq!(sps_dimensions(SPS_1920X1080), Some((1920, 1080)));
        assert_eq!(sps_dimensions(&[0x67]), None);
    }

    #[test]
    fn builds_the_decoder_configuration_record() {
        let record = decoder_configuration_record(SPS_320X240, &[0x68, 0xce, 0x3c, 0x80]).unwrap();
        assert_eq!(&record[..6], &[1, 0x42, 0xc0, 0x0d, 0xff, 0xe1]);
        assert_eq!(
            u16::from_be_bytes([record[6], record[7]]) as usize,
            SPS_320X240.len()
        );
        assert_eq!(
            &record[record.len() - 7..],
            &[1, 0, 4, 0x68, 0xce, 0x3c, 0x80]
        );
    }

    #[test]
    fn removes_emulation_prevention() {
        assert_eq!(rbsp(&[0, 0, 3, 1, 0, 0, 3, 0]), vec![0, 0, 1, 0, 0, 0]);
    }

    /// An SPS whose sizes are the largest Exp-Golomb values (2^32 - 2): the
    /// products overflow u32, which must be "no picture", not a panic.
    #[test]
    fn sps_sizes_past_u32_are_refused() {
        let mut bits = BitWriter::default();
        bits.bits(66, 8)
            .bits(0, 16)
            .ue(0)
            .ue(0)
            .ue(2)
            .ue(1)
            .bits(0, 1);
        bits.ue(u32::MAX - 1).ue(u32::MAX - 1).bits(1, 1).bits(1, 1);
        bits.bits(1, 1)
            .ue(u32::MAX - 1)
            .ue(u32::MAX - 1)
            .ue(0)
            .ue(0);
        let mut sps = vec![0x67];
        sps.extend(bits.finish());
        assert_eq!(sps_dimensions(&sps), None);
    }

    /// A scaling list delta of 2^31 - 1 (valid ones are -128..=127).
    #[test]
    fn a_huge_scaling_delta_is_not_an_overflow() {
        let mut bits = BitWriter::default();
        bits.bits(100, 8)
            .bits(0, 16)
            .ue(0)
            .ue(1)
            .ue(0)
            .ue(0)
            .bits(0, 1);
        bits.bits(1, 1).bits(1, 1); // scaling matrix present, list 0 present
        bits.ue(u32::MAX - 1); // se = 2^31 - 1
        let mut sps = vec![0x67];
        sps.extend(bits.finish());
        assert_eq!(sps_dimensions(&sps), None); // runs out of bits, no panic
    }

    /// Writes what `BitReader` reads, for hand-built parameter sets.
    #[derive(Default)]
    pub(crate) struct BitWriter {
        bytes: Vec<u8>,
        used: u32,
    }

    impl BitWriter {
        pub(crate) fn bits(&mut self, value: u64, count: u32) -> &mut Self {
            for i in (0..count).rev() {
                if self.used.is_multiple_of(8) {
                    self.bytes.push(0);
                }
                let bit = ((value >> i) & 1) as u8;
                *self.bytes.last_mut().unwrap() |= bit << (7 - self.used % 8);
                self.used += 1;
            }
            self
        }

        pub(crate) fn ue(&mut self, value: u32) -> &mut Self {
            let code = u64::from(value) + 1;
            let width = 64 - code.leading_zeros();
            self.bits(0, width - 1).bits(code, width)
        }

        /// The bytes with emulation prevention inserted, as an encoder
        /// writes them (`00 00 0x` with x <= 3 becomes `00 00 03 0x`).
        pub(crate) fn finish(&mut self) -> Vec<u8> {
            let raw = std::mem::take(&mut self.bytes);
            let mut out = Vec::with_capacity(raw.len() + raw.len() / 2);
            let mut zeros = 0;
            for &b in &raw {
                if zeros >= 2 && b <= 3 {
                    out.push(3);
                    zeros = 0;
                }
                zeros = if b == 0 { zeros + 1 } else { 0 };
                out.push(b);
            }
            assert_eq!(rbsp(&out), raw);
            out
        }
    }

    #[test]
    fn exp_golomb() {
        // 1 | 010 | 011 | 00100 → ue 0, 1, 2, 3
        let data = [0b1010_0110, 0b0100_0000];
        let mut r = BitReader::new(&data);
        assert_eq!(
            (r.ue(), r.ue(), r.ue(), r.ue()),
            (Some(0), Some(1), Some(2), Some(3))
        );
    }
}
