//! Writes the seed corpus to `corpus/TARGET/NAME` (run from `fuzz/`).
fn main() {
    for (target, _) in prism_fuzz::TARGETS {
        let dir = std::path::Path::new("corpus").join(target);
        std::fs::create_dir_all(&dir).expect("create the corpus directory");
        for (name, bytes) in prism_fuzz::seeds::seeds(target) {
            std::fs::write(dir.join(name), bytes).expect("write a seed");
        }
    }
}
