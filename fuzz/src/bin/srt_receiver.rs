//! AFL++ entry point for `prism_fuzz::srt_receiver`.
fn main() {
    afl::fuzz!(|data: &[u8]| prism_fuzz::srt_receiver(data));
}
