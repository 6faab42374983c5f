//! Hunts (`TaskKind::Hunt`): one query evaluated on this host, answering only what matches.
//! What "match" means (per part: processes, sockets joined to their owners, a file; every part
//! the query has must find something) is written down once, in [`cordon_protocol::hunt`]; this
//! module applies it to what the collectors read, cheapest work first:
//!
//! - only the parts the query has are read: no socket tables for a process hunt, no process scan
//!   for a file hunt, and nothing else at all when the named file is absent;
//! - a network hunt filters the socket tables first and looks up owners for the survivors only;
//! - executables are hashed only when `exe_sha256` is asked, only for processes that passed the
//!   name and command-line filters, and each binary (device, inode) once.
//!
//! [`evaluate`] is the matching itself over data already collected, so that simulated agents
//! (the load generator) answer hunts by exactly these rules.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    net::IpAddr,
    path::Path,
};

use cordon_protocol::{
    collect::{FileKind, HuntFile, HuntMatches, ProcessInfo, SocketInfo},
    hunt::{self, IpPrefix, MAX_REPORTED},
    message::{HuntQuery, TaskError, TaskErrorCode},
};

use super::{
    cancel::Cancel,
    file,
    gate::{Index, Want},
    io_error, network,
    process::{read_process, required_boot_time_ms, ExeHashes},
    procfs::{self, ReadBuf},
    task_error, IdNames,
};

/// A checked query, ready to test processes and sockets against.
pub struct Filter<'q> {
    query: &'q HuntQuery,
    remote: Option<IpPrefix>,
}

impl<'q> Filter<'q> {
    /// Checks `query` (see [`hunt::validate`]); a bad one is `InvalidInput`.
    pub fn new(query: &'q HuntQuery) -> Result<Self, TaskError> {
        let invalid = |e: hunt::InvalidHuntQuery| task_error(TaskErrorCode::InvalidInput, e.0);
        hunt::validate(query).map_err(invalid)?;
        let remote = query
            .remote_address
            .as_deref()
            .map(IpPrefix::parse)
            .transpose()
            .map_err(invalid)?;
        Ok(Self { query, remote })
    }

    fn has_process_part(&self) -> bool {
        hunt::has_process_part(self.query)
    }

    fn has_network_part(&self) -> bool {
        hunt::has_network_part(self.query)
    }

    fn has_file_part(&self) -> bool {
        hunt::has_file_part(self.query)
    }

    /// The process filters that need nothing beyond the listing: name and command line.
    pub fn process_cheap(&self, p: &ProcessInfo) -> bool {
        if let Some(name) = &self.query.process_name {
            if !name_matches(p, name) {
                return false;
            }
        }
        if let Some(needle) = &self.query.cmdline_contains {
            // Most processes fail on a single argument; join only when that is not enough.
            let found = p.cmdline.iter().any(|a| a.contains(needle.as_str()))
                || (needle.contains(' ') && p.cmdline.join(" ").contains(needle.as_str()));
            if !found {
                return false;
            }
        }
        true
    }

    /// The network filters.
    pub fn socket(&self, s: &SocketInfo) -> bool {
        if self
            .query
            .remote_port
            .is_some_and(|port| s.remote_port != port)
        {
            return false;
        }
        match &self.remote {
            None => true,
            Some(prefix) => s
                .remote_address
                .parse::<IpAddr>()
                .is_ok_and(|a| prefix.contains(a)),
        }
    }

    /// Every process filter, the hash last and only if asked. The process is returned as
    /// reported: with its hash when one was computed.
    fn process(
        &self,
        p: &ProcessInfo,
        exe_sha256: &mut impl FnMut(&ProcessInfo) -> Option<String>,
    ) -> Option<ProcessInfo> {
        if !self.process_cheap(p) {
            return None;
        }
        let mut p = p.clone();
        if let Some(want) = &self.query.exe_sha256 {
            let got = exe_sha256(&p)?;
            if !got.eq_ignore_ascii_case(want) {
                return None;
            }
            p.exe_sha256 = Some(got);
        }
        Some(p)
    }
}

/// Whether `name` is the process's kernel name, or the file name of its executable or argv[0].
fn name_matches(p: &ProcessInfo, name: &str) -> bool {
    let exe = p
        .exe
        .as_deref()
        .map(|e| e.strip_suffix(" (deleted)").unwrap_or(e));
    p.name == name
        || exe.and_then(file_name) == Some(name)
        || p.cmdline.first().and_then(|a| file_name(a)) == Some(name)
}

fn file_name(path: &str) -> Option<&str> {
    path.rsplit('/').next().filter(|s| !s.is_empty())
}

/// Applies `filter` to what was collected: `processes` are the candidates (every process, or
/// for a network hunt the sockets' owners), `sockets` the candidate sockets with their owners'
/// pids, `file` the file part's finding (`None` when absent or not asked). `exe_sha256` gives a
/// process's executable hash; it is called only for processes that passed every other filter,
/// and only when the query has a hash.
pub fn evaluate(
    filter: &Filter<'_>,
    processes: &[ProcessInfo],
    sockets: &[SocketInfo],
    file: Option<HuntFile>,
    mut exe_sha256: impl FnMut(&ProcessInfo) -> Option<String>,
) -> HuntMatches {
    let mut out = HuntMatches {
        matched: true,
        collected_at_ms: crate::now_ms(),
        processes: Vec::new(),
        sockets: Vec::new(),
        file: None,
        truncated: false,
    };
    if filter.has_network_part() {
        let by_pid: HashMap<u32, &ProcessInfo> = processes.iter().map(|p| (p.pid, p)).collect();
        // pid → the process as reported, or None when it failed the process filters.
        let mut verdicts: HashMap<u32, Option<ProcessInfo>> = HashMap::new();
        let mut reported: HashSet<u32> = HashSet::new();
        for socket in sockets.iter().filter(|s| filter.socket(s)) {
            let owner = socket.pid.and_then(|pid| by_pid.get(&pid).copied());
            let owner = match owner {
                Some(p) if filter.has_process_part() => {
                    let verdict = verdicts
                        .entry(p.pid)
                        .or_insert_with(|| filter.process(p, &mut exe_sha256));
                    match verdict {
                        Some(p) => Some(p.clone()),
                        None => continue,
                    }
                }
                // "A connection made by Y": without a known owner it cannot be Y's.
                None if filter.has_process_part() => continue,
                other => other.cloned(),
            };
            push(&mut out.sockets, socket.clone(), &mut out.truncated);
            if let Some(owner) = owner {
                if reported.insert(owner.pid) {
                    push(&mut out.processes, owner, &mut out.truncated);
                }
            }
        }
        out.matched &= !out.sockets.is_empty();
    } else if filter.has_process_part() {
        for p in processes {
            if let Some(p) = filter.process(p, &mut exe_sha256) {
                push(&mut out.processes, p, &mut out.truncated);
            }
        }
        out.matched &= !out.processes.is_empty();
    }
    if filter.has_file_part() {
        out.matched &= file.is_some();
        out.file = file;
    }
    if !out.matched {
        out.processes.clear();
        out.sockets.clear();
        out.file = None;
        out.truncated = false;
    }
    out
}

/// Keeps at most [`MAX_REPORTED`] items, flagging the rest.
fn push<T>(list: &mut Vec<T>, item: T, truncated: &mut bool) {
    if list.len() < MAX_REPORTED {
        list.push(item);
    } else {
        *truncated = true;
    }
}

/// Runs a hunt on this host.
pub fn hunt(query: &HuntQuery, index: &Index, cancel: &Cancel) -> Result<HuntMatches, TaskError> {
    let filter = Filter::new(query)?;
    let file = if filter.has_file_part() {
        match find_file(query, index, cancel)? {
            Some(file) => Some(file),
            // The file part failed, so the host does not match: read nothing else.
            None => return Ok(evaluate(&filter, &[], &[], None, |_| None)),
        }
    } else {
        None
    };
    let (processes, sockets) = if filter.has_network_part() {
        let sockets = network::sockets_where(|s| filter.socket(s))?;
        let owners: BTreeSet<u32> = sockets.iter().filter_map(|s| s.pid).collect();
        let boot_ms = required_boot_time_ms()?;
        let mut buf = ReadBuf::new();
        let processes = owners
            .into_iter()
            .filter_map(|pid| read_process(pid, boot_ms, &mut buf).map(|raw| raw.info))
            .collect();
        (processes, sockets)
    } else if filter.has_process_part() {
        let pids = procfs::pids().map_err(|e| io_error(Path::new("/proc"), &e))?;
        let boot_ms = required_boot_time_ms()?;
        let processes = procfs::parallel_map(&pids, ReadBuf::new, |&pid, buf| {
            read_process(pid, boot_ms, buf)
                .map(|raw| raw.info)
                .filter(|p| filter.process_cheap(p))
        });
        (processes, Vec::new())
    } else {
        (Vec::new(), Vec::new())
    };
    let mut hashes = ExeHashes::new(index, cancel);
    let mut found = evaluate(&filter, &processes, &sockets, file, |p| hashes.hash(p.pid));
    if cancel.is_cancelled() {
        return Err(Cancel::error("hunt"));
    }
    if !found.processes.is_empty() {
        let names = IdNames::load();
        for p in &mut found.processes {
            p.user = p.uid.and_then(|uid| names.user(uid));
        }
    }
    Ok(found)
}

/// The file part: `None` when the path is absent (or, with a hash, is not a regular file with
/// that hash). A file the agent cannot read is an error: it cannot tell whether it matches.
fn find_file(
    query: &HuntQuery,
    index: &Index,
    cancel: &Cancel,
) -> Result<Option<HuntFile>, TaskError> {
    let Some(path) = &query.file_path else {
        return Ok(None);
    };
    let Some(want) = &query.file_sha256 else {
        // A denied path is an error, not "absent": the hunt must not reveal whether it exists.
        return match index.open(path, Want::Entry) {
            Ok(opened) => Ok(Some(HuntFile {
                path: path.clone(),
                kind: file::kind_of(&opened.meta),
                size: opened.meta.len(),
                sha256: None,
            })),
            Err(e) if e.code == TaskErrorCode::NotFound => Ok(None),
            Err(e) => Err(e),
        };
    };
    match file::hash(index, path, cancel) {
        Ok(h) if h.sha256.eq_ignore_ascii_case(want) => Ok(Some(HuntFile {
            path: path.clone(),
            kind: FileKind::File,
            size: h.size,
            sha256: Some(h.sha256),
        })),
        Ok(_) => Ok(None),
        // `InvalidInput` from a valid path means a directory, device or FIFO: not a file with
        // that hash. A bad path was refused by the query's own validation first.
        Err(e)
            if matches!(
                e.code,
                TaskErrorCode::NotFound | TaskErrorCode::InvalidInput
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use std::{
        cell::Cell,
        net::{TcpListener, TcpStream},
    };

    use sha2::{Digest, Sha256};

    use super::*;
    use crate::collect::{effective_uid, process::testing::Sleeper};

    fn proc(pid: u32, name: &str, exe: &str, cmdline: &[&str]) -> ProcessInfo {
        ProcessInfo {
            pid,
            ppid: Some(1),
            name: name.into(),
            exe: Some(exe.into()),
            cmdline: cmdline.iter().map(|s| s.to_string()).collect(),
            uid: Some(0),
            user: None,
            start_time_ms: 0,
            memory_bytes: 0,
            cpu_percent: 0.0,
            exe_sha256: None,
        }
    }

    fn sock(pid: Option<u32>, remote: &str, port: u16) -> SocketInfo {
        SocketInfo {
            protocol: "tcp".into(),
            family: 4,
            local_address: "10.0.0.5".into(),
            local_port: 40000,
            remote_address: remote.into(),
            remote_port: port,
            state: "ESTABLISHED".into(),
            uid: 0,
            inode: 1,
            pid,
            process_name: None,
        }
    }

    fn host() -> (Vec<ProcessInfo>, Vec<SocketInfo>) {
        let processes = vec![
            proc(1, "systemd", "/usr/lib/systemd/systemd", &["/sbin/init"]),
            proc(
                100,
                "kworker-evil-na",
                "/tmp/.x/kworker-evil-name (deleted)",
                &["[kworker/0:1]", "--c2", "198.51.100.7"],
            ),
            proc(
                200,
                "python3",
                "/usr/bin/python3.12",
                &["python3", "-m", "http.server"],
            ),
            proc(
                300,
                "curl",
                "/usr/bin/curl",
                &["curl", "http://example.org"],
            ),
        ];
        let sockets = vec![
            sock(Some(100), "198.51.100.7", 443),
            sock(Some(300), "::ffff:198.51.100.7", 80),
            sock(None, "198.51.100.9", 443),
            sock(Some(200), "0.0.0.0", 0),
        ];
        (processes, sockets)
    }

    fn run(query: HuntQuery, file: Option<HuntFile>) -> HuntMatches {
        let (processes, sockets) = host();
        let filter = Filter::new(&query).unwrap();
        evaluate(&filter, &processes, &sockets, file, |p| {
            Some(format!("{:064x}", p.pid))
        })
    }

    fn pids(m: &HuntMatches) -> Vec<u32> {
        m.processes.iter().map(|p| p.pid).collect()
    }

    #[test]
    fn process_names_match_comm_executable_or_argv0() {
        let by = |name: &str| HuntQuery {
            process_name: Some(name.into()),
            ..Default::default()
        };
        assert_eq!(pids(&run(by("python3"), None)), vec![200], "comm");
        assert_eq!(pids(&run(by("python3.12"), None)), vec![200], "exe");
        assert_eq!(
            pids(&run(by("kworker-evil-name"), None)),
            vec![100],
            "a deleted exe's file name, past comm's 15 bytes"
        );
        assert_eq!(pids(&run(by("init"), None)), vec![1], "argv[0]");
        let none = run(by("sshd"), None);
        assert!(!none.matched);
        assert!(none.processes.is_empty());
    }

    #[test]
    fn every_process_filter_must_hold_and_hashing_comes_last() {
        let query = HuntQuery {
            cmdline_contains: Some("-m http".into()),
            ..Default::default()
        };
        assert_eq!(pids(&run(query, None)), vec![200], "across arguments");

        let hashed = Cell::new(0);
        let (processes, sockets) = host();
        let query = HuntQuery {
            cmdline_contains: Some("http".into()),
            exe_sha256: Some(format!("{:064X}", 300)),
            ..Default::default()
        };
        let filter = Filter::new(&query).unwrap();
        let found = evaluate(&filter, &processes, &sockets, None, |p| {
            hashed.set(hashed.get() + 1);
            Some(format!("{:064x}", p.pid))
        });
        assert_eq!(pids(&found), vec![300], "hash compared in any case");
        assert_eq!(
            found.processes[0].exe_sha256.as_deref(),
            Some(format!("{:064x}", 300).as_str())
        );
        assert_eq!(hashed.get(), 2, "only the two `http` processes were hashed");
    }

    #[test]
    fn network_filters_match_sockets_joined_to_their_owners() {
        let to = |addr: Option<&str>, port: Option<u16>, name: Option<&str>| HuntQuery {
            remote_address: addr.map(Into::into),
            remote_port: port,
            process_name: name.map(Into::into),
            ..Default::default()
        };
        let found = run(to(Some("198.51.100.7"), None, None), None);
        assert!(found.matched);
        assert_eq!(found.sockets.len(), 2, "v4 and v4-mapped v6");
        assert_eq!(pids(&found), vec![100, 300], "with their owners");

        let found = run(to(Some("198.51.100.0/24"), Some(443), None), None);
        assert_eq!(found.sockets.len(), 2, "the ownerless socket counts too");
        assert_eq!(pids(&found), vec![100]);

        let found = run(to(None, Some(443), Some("curl")), None);
        assert!(!found.matched, "curl talks to port 80, not 443");
        let found = run(to(None, Some(443), Some("kworker-evil-name")), None);
        assert_eq!(found.sockets.len(), 1, "the ownerless one cannot be its");
        assert_eq!(found.sockets[0].pid, Some(100));
    }

    #[test]
    fn the_file_part_is_one_more_condition() {
        let file = HuntFile {
            path: "/etc/evil".into(),
            kind: FileKind::File,
            size: 1,
            sha256: None,
        };
        let query = HuntQuery {
            process_name: Some("curl".into()),
            file_path: Some("/etc/evil".into()),
            ..Default::default()
        };
        let found = run(query.clone(), Some(file.clone()));
        assert!(found.matched);
        assert_eq!(found.file, Some(file));
        assert_eq!(pids(&found), vec![300]);
        let absent = run(query, None);
        assert!(!absent.matched);
        assert!(
            absent.processes.is_empty(),
            "nothing reported without a match"
        );
    }

    #[test]
    fn answers_are_bounded() {
        let processes: Vec<ProcessInfo> = (0..MAX_REPORTED as u32 + 5)
            .map(|pid| proc(pid, "worker", "/usr/bin/worker", &["worker"]))
            .collect();
        let query = HuntQuery {
            process_name: Some("worker".into()),
            ..Default::default()
        };
        let filter = Filter::new(&query).unwrap();
        let found = evaluate(&filter, &processes, &[], None, |_| None);
        assert!(found.matched && found.truncated);
        assert_eq!(found.processes.len(), MAX_REPORTED);
    }

    #[test]
    fn a_bad_query_is_invalid_input() {
        let err = hunt(&HuntQuery::default(), &Index::none(), &Cancel::never()).unwrap_err();
        assert_eq!(err.code, TaskErrorCode::InvalidInput);
        let err = hunt(
            &HuntQuery {
                file_sha256: Some("00".repeat(32)),
                ..Default::default()
            },
            &Index::none(),
            &Cancel::never(),
        )
        .unwrap_err();
        assert!(err.message.contains("file_path"), "{}", err.message);
    }

    #[test]
    fn a_spawned_process_is_found_by_cmdline_and_executable_hash() {
        let dir = tempfile::tempdir().unwrap();
        let marker = format!("cordon-hunt-marker-{}", std::process::id());
        let child = Sleeper::spawn(&marker, dir.path());
        let query = HuntQuery {
            cmdline_contains: Some(marker.clone()),
            ..Default::default()
        };
        let found = hunt(&query, &Index::none(), &Cancel::never()).unwrap();
        assert!(found.matched);
        assert_eq!(pids(&found), vec![child.pid()]);
        assert_eq!(found.processes[0].exe_sha256, None, "not hashed unasked");
        assert!(found.processes[0].user.is_some());

        let exe = found.processes[0].exe.clone().unwrap();
        let sha = hex::encode(Sha256::digest(std::fs::read(&exe).unwrap()));
        let with_hash = hunt(
            &HuntQuery {
                exe_sha256: Some(sha.to_uppercase()),
                ..query.clone()
            },
            &Index::none(),
            &Cancel::never(),
        )
        .unwrap();
        assert_eq!(pids(&with_hash), vec![child.pid()]);
        assert_eq!(
            with_hash.processes[0].exe_sha256.as_deref(),
            Some(sha.as_str())
        );
        let wrong = hunt(
            &HuntQuery {
                exe_sha256: Some("0".repeat(64)),
                ..query
            },
            &Index::none(),
            &Cancel::never(),
        )
        .unwrap();
        assert!(!wrong.matched);
    }

    #[test]
    fn a_connection_is_found_with_its_owner() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let _client = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let query = HuntQuery {
            remote_address: Some("127.0.0.1".into()),
            remote_port: Some(port),
            ..Default::default()
        };
        let found = hunt(&query, &Index::none(), &Cancel::never()).unwrap();
        assert!(found.matched);
        assert_eq!(found.sockets.len(), 1, "{:?}", found.sockets);
        assert_eq!(found.sockets[0].pid, Some(std::process::id()));
        assert_eq!(pids(&found), vec![std::process::id()]);
        let by_other = hunt(
            &HuntQuery {
                process_name: Some("no-such-process-name".into()),
                ..query
            },
            &Index::none(),
            &Cancel::never(),
        )
        .unwrap();
        assert!(!by_other.matched);
    }

    #[test]
    fn files_match_by_path_and_hash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dropper.sh");
        std::fs::write(&path, b"#!/bin/sh\n").unwrap();
        let sha = hex::encode(Sha256::digest(b"#!/bin/sh\n"));
        let at = |path: &Path, sha256: Option<&str>| HuntQuery {
            file_path: Some(path.to_str().unwrap().into()),
            file_sha256: sha256.map(Into::into),
            ..Default::default()
        };
        let found = hunt(&at(&path, None), &Index::none(), &Cancel::never()).unwrap();
        assert!(found.matched);
        assert_eq!(
            found.file.as_ref().map(|f| (f.kind, f.size)),
            Some((FileKind::File, 10))
        );
        let found = hunt(&at(&path, Some(&sha)), &Index::none(), &Cancel::never()).unwrap();
        assert_eq!(found.file.unwrap().sha256, Some(sha.clone()));
        assert!(
            !hunt(
                &at(&path, Some(&"1".repeat(64))),
                &Index::none(),
                &Cancel::never()
            )
            .unwrap()
            .matched
        );
        assert!(
            !hunt(
                &at(&dir.path().join("absent"), None),
                &Index::none(),
                &Cancel::never()
            )
            .unwrap()
            .matched
        );
        assert!(
            !hunt(
                &at(dir.path(), Some(&sha)),
                &Index::none(),
                &Cancel::never()
            )
            .unwrap()
            .matched,
            "a directory"
        );
        assert!(
            hunt(&at(dir.path(), None), &Index::none(), &Cancel::never())
                .unwrap()
                .matched,
            "exists"
        );

        if effective_uid() != Some(0) {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o000)).unwrap();
            let err = hunt(&at(&path, Some(&sha)), &Index::none(), &Cancel::never()).unwrap_err();
            assert_eq!(err.code, TaskErrorCode::PermissionDenied);
        }
    }
}
