//! Config parsing and validation on arbitrary text.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = prism_admin::Config::parse(std::path::Path::new("fuzz.toml"), text);
    }
});
