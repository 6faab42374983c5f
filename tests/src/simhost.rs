//! A simulated host for load tests: a small canned process and socket list, and answers to hunt
//! tasks over it by the agent's own matching rules ([`cordon_agent::collect::hunt::evaluate`]),
//! so a hunt benchmark measures the controller's path, not `/proc`.
//!
//! Host 0 is the compromised one: it alone runs [`MARKER_PROCESS`], which beacons to
//! [`MARKER_REMOTE`]:443.

use cordon_agent::collect::hunt::{evaluate, Filter};
use cordon_protocol::{
    collect::{ProcessInfo, SocketInfo},
    message::{HuntQuery, TaskError, TaskErrorCode, TaskOutput},
};
use sha2::{Digest, Sha256};

/// The process name only host 0 runs.
pub const MARKER_PROCESS: &str = "cordon-marker";
/// Where host 0's marker process connects.
pub const MARKER_REMOTE: &str = "198.51.100.7";

fn process(pid: u32, name: &str, exe: &str, cmdline: &[&str]) -> ProcessInfo {
    ProcessInfo {
        pid,
        ppid: Some(1),
        name: name.chars().take(15).collect(),
        exe: Some(exe.into()),
        cmdline: cmdline.iter().map(|s| s.to_string()).collect(),
        uid: Some(0),
        user: Some("root".into()),
        start_time_ms: 1_700_000_000_000,
        memory_bytes: 4 << 20,
        cpu_percent: 0.0,
        // A stand-in for the binary's hash: the same on every host, different per binary.
        exe_sha256: Some(hex::encode(Sha256::digest(exe.as_bytes()))),
    }
}

fn socket(pid: u32, local_port: u16, remote: &str, remote_port: u16, state: &str) -> SocketInfo {
    SocketInfo {
        protocol: "tcp".into(),
        family: 4,
        local_address: "10.0.0.5".into(),
        local_port,
        remote_address: remote.into(),
        remote_port,
        state: state.into(),
        uid: 0,
        inode: u64::from(pid) * 10 + u64::from(local_port),
        pid: Some(pid),
        process_name: None,
    }
}

/// Host `index`'s processes and sockets.
pub fn host(index: usize) -> (Vec<ProcessInfo>, Vec<SocketInfo>) {
    let mut processes = vec![
        process(1, "systemd", "/usr/lib/systemd/systemd", &["/sbin/init"]),
        process(512, "sshd", "/usr/sbin/sshd", &["sshd: /usr/sbin/sshd -D"]),
        process(800, "nginx", "/usr/sbin/nginx", &["nginx: master process"]),
        process(900, "bash", "/usr/bin/bash", &["-bash"]),
    ];
    let mut sockets = vec![
        socket(512, 22, "0.0.0.0", 0, "LISTEN"),
        socket(800, 443, "0.0.0.0", 0, "LISTEN"),
        socket(800, 41000, "10.0.0.9", 5432, "ESTABLISHED"),
    ];
    if index == 0 {
        processes.push(process(
            4242,
            MARKER_PROCESS,
            "/tmp/.cache/cordon-marker",
            &["/tmp/.cache/cordon-marker", "--beacon", MARKER_REMOTE],
        ));
        sockets.push(socket(4242, 45000, MARKER_REMOTE, 443, "ESTABLISHED"));
    }
    (processes, sockets)
}

/// Host `index`'s answer to a hunt (no file part: a simulated host has no files).
pub fn answer_hunt(index: usize, query: &HuntQuery) -> Result<TaskOutput, TaskError> {
    let filter = Filter::new(query)?;
    let (processes, sockets) = host(index);
    let found = evaluate(&filter, &processes, &sockets, None, |p| {
        p.exe_sha256.clone()
    });
    serde_json::to_string(&found)
        .map(TaskOutput::Json)
        .map_err(|e| TaskError {
            code: TaskErrorCode::Internal,
            message: format!("cannot encode the hunt result: {e}"),
        })
}

#[cfg(test)]
mod tests {
    use cordon_protocol::collect::HuntMatches;

    use super::*;

    fn matches(index: usize, query: &HuntQuery) -> HuntMatches {
        match answer_hunt(index, query) {
            Ok(TaskOutput::Json(json)) => serde_json::from_str(&json).unwrap(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn only_host_zero_has_the_marker() {
        let by_name = HuntQuery {
            process_name: Some(MARKER_PROCESS.into()),
            ..Default::default()
        };
        assert!(matches(0, &by_name).matched);
        assert!(!matches(1, &by_name).matched);
        let by_remote = HuntQuery {
            remote_address: Some(MARKER_REMOTE.into()),
            remote_port: Some(443),
            ..Default::default()
        };
        let found = matches(0, &by_remote);
        assert_eq!(found.processes[0].name, "cordon-marker");
        assert!(!matches(7, &by_remote).matched);
        assert!(
            matches(
                7,
                &HuntQuery {
                    process_name: Some("sshd".into()),
                    ..Default::default()
                }
            )
            .matched
        );
    }
}
