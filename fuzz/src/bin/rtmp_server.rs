//! AFL++ entry point for `prism_fuzz::rtmp_server`.
fn main() {
    afl::fuzz!(|data: &[u8]| prism_fuzz::rtmp_server(data));
}
