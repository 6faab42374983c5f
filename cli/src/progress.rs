//! A progress line on stderr for long transfers and hunts: drawn only when stderr is a
//! terminal (scripts and `--json` consumers get clean output), redrawn at most ten times a
//! second.

use std::{
    io::{IsTerminal, Write},
    time::{Duration, Instant},
};

const REDRAW_EVERY: Duration = Duration::from_millis(100);
const BAR_WIDTH: usize = 30;

pub struct Progress {
    label: String,
    total: Option<u64>,
    done: u64,
    started: Instant,
    last_draw: Option<Instant>,
    enabled: bool,
    bytes: bool,
}

impl Progress {
    /// Progress in bytes towards `total` (if known).
    pub fn bytes(label: &str, total: Option<u64>) -> Self {
        Self::new(label, total, true)
    }

    /// Progress in items (agents, tasks) towards `total`.
    pub fn items(label: &str, total: u64) -> Self {
        Self::new(label, Some(total), false)
    }

    fn new(label: &str, total: Option<u64>, bytes: bool) -> Self {
        Self {
            label: crate::output::escape(label).into_owned(),
            total,
            done: 0,
            started: Instant::now(),
            last_draw: None,
            enabled: std::io::stderr().is_terminal(),
            bytes,
        }
    }

    pub fn advance(&mut self, n: u64) {
        self.set(self.done.saturating_add(n));
    }

    pub fn set(&mut self, done: u64) {
        self.done = done;
        if self.last_draw.is_none_or(|t| t.elapsed() >= REDRAW_EVERY) {
            self.draw();
        }
    }

    /// Draws the final state and ends the line.
    pub fn finish(&mut self) {
        if self.enabled {
            self.draw();
            eprintln!();
            self.enabled = false;
        }
    }

    fn draw(&mut self) {
        if !self.enabled {
            return;
        }
        self.last_draw = Some(Instant::now());
        let _ = write!(std::io::stderr(), "\r{}\x1b[K", self.line());
        let _ = std::io::stderr().flush();
    }

    /// The text of the progress line.
    pub fn line(&self) -> String {
        let amount = |n: u64| {
            if self.bytes {
                human_bytes(n)
            } else {
                n.to_string()
            }
        };
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = if self.bytes {
            format!("  {}/s", human_bytes((self.done as f64 / secs) as u64))
        } else {
            format!("  {:.1}s", secs)
        };
        match self.total {
            Some(total) if total > 0 => {
                let fraction = (self.done as f64 / total as f64).clamp(0.0, 1.0);
                let filled = (fraction * BAR_WIDTH as f64).round() as usize;
                format!(
                    "{} [{}{}] {:>3.0}% {}/{}{rate}",
                    self.label,
                    "#".repeat(filled),
                    "-".repeat(BAR_WIDTH - filled),
                    fraction * 100.0,
                    amount(self.done),
                    amount(total)
                )
            }
            _ => format!("{} {}{rate}", self.label, amount(self.done)),
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

/// 1536 → "1.5 KiB".
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_shows_share_and_amounts() {
        let mut p = Progress::bytes("fetch", Some(4 * 1024 * 1024));
        p.enabled = false;
        p.set(1024 * 1024);
        let line = p.line();
        assert!(line.starts_with("fetch [#######"), "{line}");
        assert!(line.contains(" 25% 1.0 MiB/4.0 MiB"), "{line}");
        let mut hunt = Progress::items("hunt", 10);
        hunt.enabled = false;
        hunt.set(10);
        assert!(hunt.line().contains("100% 10/10"), "{}", hunt.line());
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
    }
}
