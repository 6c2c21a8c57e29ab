//! AFL++ entry point for `prism_fuzz::record`.
fn main() {
    afl::fuzz!(|data: &[u8]| prism_fuzz::record(data));
}
