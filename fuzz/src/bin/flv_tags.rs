//! AFL++ entry point for `prism_fuzz::flv_tags`.
fn main() {
    afl::fuzz!(|data: &[u8]| prism_fuzz::flv_tags(data));
}
