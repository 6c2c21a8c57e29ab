//! AFL++ entry point for `prism_fuzz::ts_mux`.
fn main() {
    afl::fuzz!(|data: &[u8]| prism_fuzz::ts_mux(data));
}
