//! AFL++ entry point for `prism_fuzz::rtmp_chunks`.
fn main() {
    afl::fuzz!(|data: &[u8]| prism_fuzz::rtmp_chunks(data));
}
