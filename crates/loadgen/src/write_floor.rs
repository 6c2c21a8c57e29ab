//! The floor of recording: what the kernel charges a process that writes
//! the same bytes to the same disk the way a recorder does (each stream's
//! second of media as one write, then `fdatasync`), with no media work at
//! all. Measured on one thread of this process, from its own /proc entry.

use std::io::Write;
use std::time::{Duration, Instant};

/// CPU (percent of one core) of writing `streams` files at `kbps` each for
/// `seconds`, one write and one `fdatasync` per file per second.
pub fn measure(streams: usize, kbps: u32, seconds: u64) -> Result<f64, String> {
    let dir = std::env::temp_dir().join(format!("prism-loadgen-floor-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let result = std::thread::spawn({
        let dir = dir.clone();
        move || write(&dir, streams, kbps, seconds)
    })
    .join()
    .map_err(|_| "the writer thread panicked".to_string())?;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn write(dir: &std::path::Path, streams: usize, kbps: u32, seconds: u64) -> Result<f64, String> {
    let mut files = (0..streams)
        .map(|s| std::fs::File::create(dir.join(format!("s{s}.mp4"))))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    // Not zeros: some file systems treat those specially.
    let second: Vec<u8> = (0..kbps as usize * 1000 / 8)
        .map(|i| (i * 7) as u8)
        .collect();
    let thread = format!("/proc/self/task/{}/stat", thread_id());
    let before = crate::relay::stat_ticks(&thread)?;
    let started = Instant::now();
    for n in 1..=seconds {
        for file in &mut files {
            file.write_all(&second).map_err(|e| e.to_string())?;
            file.sync_data().map_err(|e| e.to_string())?;
        }
        let next = started + Duration::from_secs(n);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    let window = started.elapsed();
    let used = crate::relay::stat_ticks(&thread)? - before;
    Ok(crate::relay::cpu_percent(used, window))
}

fn thread_id() -> i64 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::syscall(libc::SYS_gettid) }
}
