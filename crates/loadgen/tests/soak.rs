//! The soak, two minutes of it: Prism (the debug build beside this
//! package's binary, built by `cargo test --workspace`) under publishers
//! dropping and returning, destinations hanging up and admin changes every
//! 3 s. Nothing may grow without bound: after the churn settles, open file
//! descriptors stay where they were after the first connections, and memory
//! does not climb from the first minute to the second.

use std::process::Command;

fn figure(output: &str, line_start: &str, name: &str) -> Vec<f64> {
    output
        .lines()
        .filter(|l| l.starts_with(line_start))
        .filter_map(|l| {
            let at = l.find(name)? + name.len();
            l[at..].split_whitespace().next()?.parse().ok()
        })
        .collect()
}

#[test]
fn two_minutes_of_churn_grow_nothing_without_bound() {
    let loadgen = env!("CARGO_BIN_EXE_prism-loadgen");
    let prism = std::path::Path::new(loadgen).with_file_name("prism");
    assert!(
        prism.exists(),
        "{} is missing: run the suite with cargo test --workspace, or cargo build -p prism",
        prism.display()
    );
    let run = Command::new(loadgen)
        .args(["--streams", "2", "--destinations", "3", "--bitrate", "1000"])
        .arg("--prism-bin")
        .arg(&prism)
        .args(["soak", "--minutes", "2", "--interval-s", "5"])
        .output()
        .expect("run prism-loadgen soak");
    let output = String::from_utf8_lossy(&run.stdout);
    println!("{output}{}", String::from_utf8_lossy(&run.stderr));
    assert!(run.status.success());

    let rss = figure(&output, "soak: t=", "rss=");
    let fds = figure(&output, "soak: t=", "fds=");
    assert!(rss.len() >= 20, "too few samples: {output}");
    let half = rss.len() / 2;
    let max = |values: &[f64]| values.iter().copied().fold(f64::MIN, f64::max);
    // Memory: the second minute peaks no higher than the first, give or
    // take what allocator pages and a reconnect's buffers move.
    assert!(
        max(&rss[half..]) <= max(&rss[2..half]) * 1.25 + 4.0,
        "RSS climbed from {:.1} to {:.1} MiB",
        max(&rss[2..half]),
        max(&rss[half..])
    );
    // Descriptors: a handful per connection, and connections come and go;
    // the second minute never holds more than the first one's peak plus a
    // few in flight.
    assert!(
        max(&fds[half..]) <= max(&fds[2..half]) + 8.0,
        "open fds climbed from {} to {}",
        max(&fds[2..half]),
        max(&fds[half..])
    );
    // The churn happened: publishes came and went, sinks hung up, the API
    // changed destinations and refused none of it.
    let summary = output
        .lines()
        .find(|l| l.contains("admin changes"))
        .expect("a summary line");
    let numbers: Vec<u64> = summary
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    let [publishes, hangups, changes, failed] = numbers[..] else {
        panic!("unexpected summary: {summary}");
    };
    assert!(publishes >= 4, "{summary}");
    assert!(hangups >= 2, "{summary}");
    assert!(changes >= 30 && failed == 0, "{summary}");
}
