//! AFL++ entry point for `prism_fuzz::srt_handshake`.
fn main() {
    afl::fuzz!(|data: &[u8]| prism_fuzz::srt_handshake(data));
}
