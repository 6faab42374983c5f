//! Memory and CPU of a process from /proc, for the benchmark binaries.

use std::time::{Duration, Instant};

/// One reading of a process.
#[derive(Debug, Clone, Copy)]
pub struct ProcSample {
    pub at: Instant,
    /// Resident set size.
    pub rss_kib: u64,
    /// User + system CPU time, in clock ticks.
    pub cpu_ticks: u64,
}

/// USER_HZ: clock ticks per second in /proc, 100 on every Linux Cordon targets.
pub const TICKS_PER_SEC: f64 = 100.0;

/// Reads RSS and CPU ticks of `pid`.
pub fn sample(pid: u32) -> Option<ProcSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the parenthesised command name, utime and stime are the 12th and 13th fields.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(ProcSample {
        at: Instant::now(),
        rss_kib,
        cpu_ticks: utime + stime,
    })
}

/// CPU use between two samples, in percent of one core.
pub fn cpu_percent(before: &ProcSample, after: &ProcSample) -> f64 {
    let secs = after.at.duration_since(before.at).as_secs_f64().max(1e-9);
    (after.cpu_ticks.saturating_sub(before.cpu_ticks)) as f64 / TICKS_PER_SEC / secs * 100.0
}

/// Samples `pid` now and after `window`, returning (RSS MiB at the end, CPU % over the window).
pub fn measure(pid: u32, window: Duration) -> Option<(f64, f64)> {
    let before = sample(pid)?;
    std::thread::sleep(window);
    let after = sample(pid)?;
    Some((after.rss_kib as f64 / 1024.0, cpu_percent(&before, &after)))
}
