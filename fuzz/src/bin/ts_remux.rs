//! AFL++ entry point for `prism_fuzz::ts_remux`.
fn main() {
    afl::fuzz!(|data: &[u8]| prism_fuzz::ts_remux(data));
}
