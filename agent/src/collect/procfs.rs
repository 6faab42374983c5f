//! Reading `/proc` fast: the process and socket collectors touch four or five files for each of
//! a thousand processes, so this is where their time goes (see `benches/collect.rs`). Files are
//! read with plain `read(2)` into a reused buffer (`fs::read` would add an `fstat` and an
//! `lseek` per file), and per-process work is spread over a few threads.

use std::{fs::File, io, io::Read};

/// Clock ticks per second in `/proc/PID/stat` (the kernel's USER_HZ: 100 on every architecture
/// Cordon targets, whatever the kernel's internal HZ).
pub(crate) const USER_HZ: u64 = 100;

/// Largest `/proc` file read whole (a command line or environment can reach a few MiB).
const MAX_PROC_FILE: usize = 4 << 20;

/// Most threads one collection uses.
const MAX_THREADS: usize = 4;

/// `PF_KTHREAD` in the flags of `/proc/PID/stat`: a kernel thread (no command line, no exe).
const PF_KTHREAD: u64 = 0x0020_0000;

/// The pids in `/proc`, ascending. Threads are not listed there, only processes.
pub(crate) fn pids() -> io::Result<Vec<u32>> {
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    Ok(pids)
}

/// A reusable read buffer: one per thread, so reading a thousand small files allocates (and
/// zeroes) once.
pub(crate) struct ReadBuf {
    buf: Vec<u8>,
}

impl ReadBuf {
    pub fn new() -> Self {
        Self { buf: vec![0; 4096] }
    }

    /// Reads a whole file, at most [`MAX_PROC_FILE`] bytes (the rest is cut off).
    pub fn read(&mut self, path: &str) -> io::Result<&[u8]> {
        let mut file = File::open(path)?;
        let mut len = 0;
        loop {
            if len == self.buf.len() {
                if len >= MAX_PROC_FILE {
                    break;
                }
                self.buf.resize(len * 2, 0);
            }
            match file.read(&mut self.buf[len..]) {
                Ok(0) => break,
                Ok(n) => len += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(&self.buf[..len])
    }
}

/// The fields of `/proc/PID/stat` the collectors use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stat {
    /// Field 2, without its parentheses (at most 15 bytes, as the kernel keeps it).
    pub comm: String,
    /// Field 4; 0 for the init process and kernel threads' roots.
    pub ppid: u32,
    /// Field 9.
    pub flags: u64,
    /// Fields 14 + 15: user + system time, in clock ticks.
    pub cpu_ticks: u64,
    /// Field 22: ticks after boot when the process started.
    pub start_ticks: u64,
}

impl Stat {
    /// Whether this is a kernel thread.
    pub fn is_kernel_thread(&self) -> bool {
        self.flags & PF_KTHREAD != 0
    }

    /// CPU time used so far, in ms.
    pub fn cpu_ms(&self) -> u64 {
        self.cpu_ticks.saturating_mul(1000) / USER_HZ
    }

    /// Start time in ms since the epoch, given the boot time.
    pub fn start_time_ms(&self, boot_ms: i64) -> i64 {
        let since_boot = i64::try_from(self.start_ticks.saturating_mul(1000 / USER_HZ));
        boot_ms.saturating_add(since_boot.unwrap_or(i64::MAX))
    }
}

/// Parses `/proc/PID/stat`. The command name may hold spaces and parentheses, so it runs to the
/// *last* `)`.
pub(crate) fn parse_stat(bytes: &[u8]) -> Option<Stat> {
    let open = bytes.iter().position(|&b| b == b'(')?;
    let close = bytes.iter().rposition(|&b| b == b')')?;
    let comm = String::from_utf8_lossy(bytes.get(open + 1..close)?).into_owned();
    let rest = std::str::from_utf8(bytes.get(close + 1..)?).ok()?;
    // Field 3 (state) comes first after ")", so field N is at index N - 3.
    let fields: Vec<&str> = rest.split_ascii_whitespace().take(20).collect();
    let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
    Some(Stat {
        comm,
        ppid: u32::try_from(field(4)?).ok()?,
        flags: field(9)?,
        cpu_ticks: field(14)?.saturating_add(field(15)?),
        start_ticks: field(22)?,
    })
}

/// Applies `f` to every item on up to [`MAX_THREADS`] threads (no more than the CPUs), keeping
/// the order of `items`. Each thread gets its own `S` (a read buffer) from `state`. Falls back
/// to the calling thread when no thread can be started.
pub(crate) fn parallel_map<T, R, S>(
    items: &[T],
    state: impl Fn() -> S + Sync,
    f: impl Fn(&T, &mut S) -> Option<R> + Sync,
) -> Vec<R>
where
    T: Sync,
    R: Send,
{
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = cpus.min(MAX_THREADS).min(items.len().div_ceil(64)).max(1);
    let run = |chunk: &[T]| -> Vec<R> {
        let mut s = state();
        chunk.iter().filter_map(|item| f(item, &mut s)).collect()
    };
    if threads == 1 {
        return run(items);
    }
    let chunk_len = items.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let run = &run;
        let handles: Vec<_> = items
            .chunks(chunk_len)
            .map(|chunk| {
                let handle = std::thread::Builder::new()
                    .name("cordon-collect".into())
                    .spawn_scoped(scope, move || run(chunk));
                (chunk, handle)
            })
            .collect();
        let mut out = Vec::with_capacity(items.len());
        for (chunk, handle) in handles {
            match handle.map(|h| h.join()) {
                Ok(Ok(part)) => out.extend(part),
                // No thread (resource limits) or a panic in it: do that chunk here instead.
                _ => out.extend(run(chunk)),
            }
        }
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_awkward_names_parse() {
        let stat = b"4242 (evil) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 123456 1000 50 18446744073709551615";
        let s = parse_stat(stat).unwrap();
        assert_eq!(s.comm, "evil) name");
        assert_eq!(s.ppid, 1);
        assert_eq!(s.cpu_ticks, 10);
        assert_eq!(s.cpu_ms(), 100);
        assert_eq!(s.start_ticks, 123_456);
        assert_eq!(s.start_time_ms(1_000_000), 1_000_000 + 1_234_560);
        assert!(!s.is_kernel_thread());
        let kthread = b"2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 0 0 0 20 0 1 0 2 0 0 18446744073709551615";
        assert!(parse_stat(kthread).unwrap().is_kernel_thread());
        assert_eq!(parse_stat(b"4242 (x) S 1"), None, "truncated");
        assert_eq!(parse_stat(b""), None);
    }

    #[test]
    fn files_are_read_whole() {
        let mut buf = ReadBuf::new();
        let s = parse_stat(buf.read("/proc/self/stat").unwrap()).unwrap();
        assert!(s.start_ticks > 0);
        assert_eq!(
            buf.read("/proc/self/no-such-file").unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        // Larger than the buffer: it grows and the whole file arrives.
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big");
        let content: Vec<u8> = (0..20_000u32).map(|i| (i % 256) as u8).collect();
        std::fs::write(&big, &content).unwrap();
        assert_eq!(buf.read(big.to_str().unwrap()).unwrap(), &content[..]);
        assert_eq!(buf.read("/proc/self/stat").unwrap().last(), Some(&b'\n'));
    }

    #[test]
    fn parallel_map_keeps_order_and_skips_nones() {
        let items: Vec<u32> = (0..1000).collect();
        let out = parallel_map(
            &items,
            || 0u32,
            |&i, calls| {
                *calls += 1;
                (i % 3 != 0).then_some(i * 2)
            },
        );
        let expected: Vec<u32> = items
            .iter()
            .filter(|&&i| i % 3 != 0)
            .map(|i| i * 2)
            .collect();
        assert_eq!(out, expected);
        assert!(parallel_map(&[] as &[u32], || (), |_, _| Some(1)).is_empty());
    }
}
