//! AFL++ entry point for `prism_fuzz::config`.
fn main() {
    afl::fuzz!(|data: &[u8]| prism_fuzz::config(data));
}
