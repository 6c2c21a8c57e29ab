//! AFL++ entry point for `prism_fuzz::rtmp_play`.
fn main() {
    afl::fuzz!(|data: &[u8]| prism_fuzz::rtmp_play(data));
}
