//! AFL++ entry point for `prism_fuzz::amf0`.
fn main() {
    afl::fuzz!(|data: &[u8]| prism_fuzz::amf0(data));
}
