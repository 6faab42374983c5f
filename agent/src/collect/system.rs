//! System (`TaskKind::System`): hostname, OS, kernel, architecture, boot time (sysinfo), and the
//! users logged in now, parsed from the binary utmp file.

use std::{io, path::Path};

use cordon_protocol::{
    collect::{LoggedInUser, SystemInfo},
    message::TaskError,
};
use sysinfo::System;

use super::io_error;

/// Where glibc keeps the current sessions (`/run/utmp` behind a symlink on most systems).
const UTMP_PATH: &str = "/var/run/utmp";

/// Size of glibc's `struct utmp` on x86_64 and aarch64 Linux.
pub const UTMP_RECORD_LEN: usize = 384;

/// `ut_type` of a session with a user logged in.
const USER_PROCESS: i32 = 7;

/// Most records read from utmp: a file claiming more is not a real utmp.
const MAX_UTMP_RECORDS: usize = 100_000;

/// Collects host facts and logged-in users. No utmp (containers, minimal hosts) means nobody
/// is logged in, not an error.
pub fn collect() -> Result<SystemInfo, TaskError> {
    let users = match read_utmp(Path::new(UTMP_PATH)) {
        Ok(bytes) => parse_utmp(&bytes),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io_error(Path::new(UTMP_PATH), &e)),
    };
    let boot_time_ms = super::process::boot_time_ms().unwrap_or_else(|| {
        i64::try_from(System::boot_time())
            .unwrap_or(0)
            .saturating_mul(1000)
    });
    Ok(SystemInfo {
        hostname: crate::inventory::hostname(),
        os: System::long_os_version().unwrap_or_default(),
        kernel: System::kernel_version().unwrap_or_default(),
        arch: System::cpu_arch(),
        boot_time_ms,
        users,
    })
}

/// Reads at most [`MAX_UTMP_RECORDS`] records.
fn read_utmp(path: &Path) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take((UTMP_RECORD_LEN * MAX_UTMP_RECORDS) as u64)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Parses utmp records, keeping `USER_PROCESS` ones. A trailing partial record (the file being
/// written) is ignored.
///
/// Layout (glibc, 64-bit Linux, 384 bytes): `ut_type` i32 @0, `ut_pid` i32 @4, `ut_line` [32]
/// @8, `ut_id` [4] @40, `ut_user` [32] @44, `ut_host` [256] @76, `ut_exit` @332, `ut_session`
/// i32 @336, `ut_tv` (i32 sec @340, i32 usec @344), `ut_addr_v6` [16] @348, unused [20] @364.
pub fn parse_utmp(bytes: &[u8]) -> Vec<LoggedInUser> {
    bytes
        .chunks_exact(UTMP_RECORD_LEN)
        .filter(|r| i32_at(r, 0) == USER_PROCESS)
        .map(|r| {
            let sec = i64::from(i32_at(r, 340));
            let usec = i64::from(i32_at(r, 344));
            LoggedInUser {
                name: c_string(&r[44..76]),
                terminal: c_string(&r[8..40]),
                host: c_string(&r[76..332]),
                login_time_ms: sec.saturating_mul(1000).saturating_add(usec / 1000),
                pid: u32::try_from(i32_at(r, 4)).unwrap_or(0),
            }
        })
        .collect()
}

/// A native-endian i32 at `offset` of a record (utmp is written by this host's libc).
fn i32_at(record: &[u8], offset: usize) -> i32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&record[offset..offset + 4]);
    i32::from_ne_bytes(word)
}

/// A fixed-size field, NUL-padded (and not NUL-terminated when full).
fn c_string(field: &[u8]) -> String {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(
        ut_type: i32,
        pid: i32,
        line: &str,
        user: &str,
        host: &str,
        sec: i32,
        usec: i32,
    ) -> Vec<u8> {
        let mut r = vec![0u8; UTMP_RECORD_LEN];
        r[0..4].copy_from_slice(&ut_type.to_ne_bytes());
        r[4..8].copy_from_slice(&pid.to_ne_bytes());
        r[8..8 + line.len()].copy_from_slice(line.as_bytes());
        r[40..44].copy_from_slice(b"ts/0");
        r[44..44 + user.len()].copy_from_slice(user.as_bytes());
        r[76..76 + host.len()].copy_from_slice(host.as_bytes());
        r[336..340].copy_from_slice(&77i32.to_ne_bytes());
        r[340..344].copy_from_slice(&sec.to_ne_bytes());
        r[344..348].copy_from_slice(&usec.to_ne_bytes());
        r
    }

    #[test]
    fn a_synthetic_utmp_record_parses_to_the_logged_in_user() {
        let mut bytes = record(
            7,
            4242,
            "pts/3",
            "alice",
            "10.1.2.3",
            1_700_000_000,
            123_456,
        );
        // A boot record and a dead session are not logged-in users.
        bytes.extend(record(2, 0, "~", "reboot", "6.1.0", 1_600_000_000, 0));
        bytes.extend(record(8, 99, "pts/4", "bob", "", 1_600_000_000, 0));
        // A full 32-byte user name has no NUL terminator.
        let long = "u".repeat(32);
        bytes.extend(record(7, 7, "tty1", &long, "h.example", 1, 0));
        // Half a record: the file is being written.
        bytes.extend(vec![7u8; 100]);

        let users = parse_utmp(&bytes);
        assert_eq!(users.len(), 2, "{users:?}");
        assert_eq!(
            users[0],
            LoggedInUser {
                name: "alice".into(),
                terminal: "pts/3".into(),
                host: "10.1.2.3".into(),
                login_time_ms: 1_700_000_000_123,
                pid: 4242,
            }
        );
        assert_eq!(
            users[1].name, long,
            "ut_user stops at 32 bytes, not at ut_host"
        );
        assert_eq!(users[1].host, "h.example");
    }

    #[test]
    fn an_empty_or_short_utmp_means_nobody() {
        assert!(parse_utmp(&[]).is_empty());
        assert!(parse_utmp(&[7u8; UTMP_RECORD_LEN - 1]).is_empty());
    }

    #[test]
    fn this_host_is_described() {
        let info = collect().unwrap();
        assert_eq!(info.hostname, crate::inventory::hostname());
        assert!(!info.kernel.is_empty());
        assert!(!info.arch.is_empty());
        let now = crate::now_ms();
        assert!(
            info.boot_time_ms > 0 && info.boot_time_ms < now,
            "{}",
            info.boot_time_ms
        );
    }
}
