//! One 64-bit timeline inside Prism. Publishers stamp messages with RTMP's
//! 32-bit milliseconds, which wrap after 49.7 days, and ffmpeg's FLV muxer
//! keeps only 31 bits, so an ffmpeg publish wraps to 0 after 24.8 days. The
//! unwrapper turns either into a timeline that never wraps; outgoing
//! timestamps are that timeline's low 32 bits, which is RTMP's own wrap.
//! Sans-IO: fed raw timestamps, it keeps no clock.

/// A step between consecutive messages outside these bounds is not a step
/// of the publisher's clock: it is a wrap or a jump. Forward, a publisher
/// may pause (2^29 ms is over six days); backward, only one track's stamp
/// may trail another's, by far less than 30 s.
const MAX_STEP: i64 = 1 << 29;
const MAX_STEP_BACK: i64 = 30_000;

fn is_clock_step(step: i64) -> bool {
    (-MAX_STEP_BACK..=MAX_STEP).contains(&step)
}

/// What the last raw timestamp was, and where it landed.
#[derive(Clone, Copy, Debug)]
struct Last {
    raw: u32,
    unwrapped: i64,
}

/// Unwraps one publisher's 32-bit (or 31-bit) timestamps into 64 bits.
///
/// - A 32-bit wrap (…, 2^32 − 20, 3, …) continues: the step is taken modulo
///   2^32.
/// - ffmpeg's 31-bit wrap (…, 2^31 − 20, 3, …; both stamps under 2^31)
///   continues: the step is taken modulo 2^31.
/// - Any other jump (an encoder that reset its clock, or one that skipped
///   hours) continues one millisecond after the last message, so the
///   timeline stays monotonic and gapless; the publisher's clock is followed
///   from there on.
/// - Small steps back (audio stamped just before the video it is
///   interleaved with) are kept as they are.
#[derive(Clone, Debug, Default)]
pub struct Unwrapper {
    last: Option<Last>,
    jumps: u64,
}

impl Unwrapper {
    pub fn new() -> Self {
        Self::default()
    }

    /// The 64-bit timestamp of a message stamped `raw`.
    pub fn unwrap(&mut self, raw: u32) -> u64 {
        let unwrapped = match self.last {
            None => i64::from(raw),
            Some(last) => last.unwrapped + self.step(last.raw, raw),
        };
        self.last = Some(Last { raw, unwrapped });
        unwrapped.max(0) as u64
    }

    /// The 64-bit timestamp of a configuration message stamped `raw`: a
    /// sequence header or metadata. Encoders stamp those 0 whatever their
    /// clock says (ffmpeg with `-output_ts_offset` sends them at 0, then
    /// frames at 2^31 − 13 s), so they follow the clock when they are a step
    /// of it and otherwise take the clock's current position; either way
    /// they do not move it.
    pub fn unwrap_config(&mut self, raw: u32) -> u64 {
        let Some(last) = self.last else {
            return 0;
        };
        let step32 = i64::from(raw.wrapping_sub(last.raw) as i32);
        let unwrapped = if is_clock_step(step32) {
            last.unwrapped + step32
        } else {
            last.unwrapped
        };
        unwrapped.max(0) as u64
    }

    /// Jumps followed so far (neither a wrap nor a step of the clock).
    pub fn jumps(&self) -> u64 {
        self.jumps
    }

    fn step(&mut self, previous: u32, raw: u32) -> i64 {
        let step32 = i64::from(raw.wrapping_sub(previous) as i32);
        if is_clock_step(step32) {
            return step32;
        }
        const HALF: u32 = 1 << 31;
        if previous < HALF && raw < HALF {
            // In 31-bit arithmetic, as ffmpeg's muxer counts.
            let modular = i64::from(raw.wrapping_sub(previous) & (HALF - 1));
            let step31 = if modular >= 1 << 30 {
                modular - (1 << 31)
            } else {
                modular
            };
            if is_clock_step(step31) {
                return step31;
            }
        }
        self.jumps += 1;
        1
    }
}

/// RTMP's 32-bit timestamp for a point of the 64-bit timeline: its low 32
/// bits, so it wraps at 2^32 as the specification says.
pub fn rtmp_timestamp(timeline_ms: u64) -> u32 {
    timeline_ms as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Interleaved audio (every 23 ms) and video (every 40 ms), stamped as a
    /// publisher would from `start` ms, through `wrap_bits` bits of clock.
    fn publisher_stamps(start: u64, count: usize, wrap_bits: u32) -> Vec<(u64, u32)> {
        let modulus = 1u64 << wrap_bits;
        let mut stamps = Vec::with_capacity(count);
        let (mut audio, mut video) = (start, start);
        while stamps.len() < count {
            let true_ms = if audio <= video {
                let t = audio;
                audio += 23;
                t
            } else {
                let t = video;
                video += 40;
                t
            };
            stamps.push((true_ms, (true_ms % modulus) as u32));
        }
        stamps
    }

    #[test]
    fn sixty_days_of_frames_cross_every_wrap_on_one_timeline() {
        // 60 days at 25 fps + 43 audio frames/s is 352 million messages;
        // the wraps are where the work is, so each is crossed with an hour
        // of frames around it, and the stretches between are stepped in
        // large (legal) strides that keep the same arithmetic.
        const DAY: u64 = 24 * 3600 * 1000;
        for wrap_bits in [31, 32] {
            let mut unwrapper = Unwrapper::new();
            let mut last = 0u64;
            let mut true_ms = 0u64;
            while true_ms < 60 * DAY {
                let next_wrap = ((true_ms >> wrap_bits) + 1) << wrap_bits;
                let window_start = next_wrap.saturating_sub(1_800_000).max(true_ms);
                // Across the stretch before the wrap: one message a minute.
                while true_ms < window_start {
                    let raw = (true_ms % (1 << wrap_bits)) as u32;
                    let unwrapped = unwrapper.unwrap(raw);
                    assert_eq!(unwrapped, true_ms, "{wrap_bits}-bit clock at {true_ms} ms");
                    assert!(unwrapped >= last);
                    last = unwrapped;
                    true_ms += 60_000;
                }
                // An hour of interleaved frames around the wrap.
                for (expected, raw) in publisher_stamps(true_ms, 3600 * 66, wrap_bits) {
                    let unwrapped = unwrapper.unwrap(raw);
                    assert_eq!(
                        unwrapped, expected,
                        "{wrap_bits}-bit clock at {expected} ms"
                    );
                    last = unwrapped;
                    true_ms = expected;
                }
            }
            assert_eq!(unwrapper.jumps(), 0);
            assert!(last >= 60 * DAY);
            // What goes out wraps at 2^32 exactly.
            assert_eq!(rtmp_timestamp(last), (last % (1 << 32)) as u32);
        }
    }

    #[test]
    fn interleaved_steps_back_are_kept() {
        let mut unwrapper = Unwrapper::new();
        assert_eq!(unwrapper.unwrap(1000), 1000);
        assert_eq!(unwrapper.unwrap(1040), 1040);
        assert_eq!(unwrapper.unwrap(1023), 1023);
        assert_eq!(unwrapper.unwrap(1080), 1080);
        // Just across 2^32, audio before video.
        let mut unwrapper = Unwrapper::new();
        assert_eq!(unwrapper.unwrap(u32::MAX - 5), u64::from(u32::MAX - 5));
        assert_eq!(unwrapper.unwrap(10), (1 << 32) + 10);
        assert_eq!(unwrapper.unwrap(u32::MAX - 1), u64::from(u32::MAX - 1));
        assert_eq!(unwrapper.unwrap(30), (1 << 32) + 30);
    }

    #[test]
    fn a_real_jump_continues_one_millisecond_later() {
        let mut unwrapper = Unwrapper::new();
        assert_eq!(unwrapper.unwrap(5_000_000), 5_000_000);
        // The encoder restarted its clock: not a wrap (5,000,000 is far
        // from 2^31 and 2^32).
        assert_eq!(unwrapper.unwrap(0), 5_000_000 + 1);
        assert_eq!(unwrapper.unwrap(40), 5_000_000 + 41);
        // A clock that skips far ahead is followed the same way.
        assert_eq!(unwrapper.unwrap(1_500_000_000), 5_000_000 + 42);
        assert_eq!(unwrapper.unwrap(1_500_000_040), 5_000_000 + 82);
        assert_eq!(unwrapper.jumps(), 2);
    }

    #[test]
    fn configuration_stamped_zero_does_not_move_the_clock() {
        // ffmpeg with -output_ts_offset 2147470 (s): metadata and sequence
        // header at 0, frames from 2^31 - 13,648 ms, then across 2^31.
        let mut unwrapper = Unwrapper::new();
        assert_eq!(unwrapper.unwrap_config(0), 0);
        assert_eq!(unwrapper.unwrap_config(0), 0);
        let start = 2_147_470_000u32;
        assert_eq!(unwrapper.unwrap(start), u64::from(start));
        assert_eq!(unwrapper.unwrap(start + 40), u64::from(start) + 40);
        // A header sent again mid-stream at 0 takes the clock's place.
        assert_eq!(unwrapper.unwrap_config(0), u64::from(start) + 40);
        // One stamped on the clock keeps its stamp.
        assert_eq!(unwrapper.unwrap_config(start + 60), u64::from(start) + 60);
        let wrapped = (start + 13_700) & 0x7fff_ffff;
        assert_eq!(unwrapper.unwrap(start + 13_640), u64::from(start) + 13_640);
        assert_eq!(unwrapper.unwrap(wrapped), u64::from(start) + 13_700);
        assert_eq!(unwrapper.jumps(), 0);
    }

    #[test]
    fn the_first_step_back_below_zero_stays_at_zero() {
        let mut unwrapper = Unwrapper::new();
        assert_eq!(unwrapper.unwrap(0), 0);
        assert_eq!(unwrapper.unwrap(u32::MAX - 4), 0);
        assert_eq!(unwrapper.unwrap(40), 40);
    }
}
