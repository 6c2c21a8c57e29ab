//! AFL++ entry point for `prism_fuzz::srt_sender`.
fn main() {
    afl::fuzz!(|data: &[u8]| prism_fuzz::srt_sender(data));
}
