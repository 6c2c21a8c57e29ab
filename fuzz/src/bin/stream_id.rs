//! AFL++ entry point for `prism_fuzz::stream_id`.
fn main() {
    afl::fuzz!(|data: &[u8]| prism_fuzz::stream_id(data));
}
