//! Budget check (DESIGN.md, "Budgets"): a process + socket snapshot with 1,000 processes takes
//! ≤ 50 ms and is no slower than `ps` + `ss` doing the same job.
//!
//! Run with `cargo bench -p cordon-agent --bench collect`. Spawns `sleep 120` children until
//! `/proc` lists 1,000 processes, times Cordon's process list + network snapshot and then
//! `ps -eo pid,ppid,user,lstart,rss,args` + `ss -tanup`, 20 iterations each, and kills the
//! children at the end (also on panic).

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use cordon_agent::collect::{network, process};

const TARGET_PROCESSES: usize = 1_000;
const ITERATIONS: usize = 20;
/// Never spawn more than this, whatever /proc says.
const MAX_CHILDREN: usize = 2_000;

/// Kills and reaps the children when dropped.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
        }
        for child in &mut self.0 {
            let _ = child.wait();
        }
    }
}

fn process_count() -> usize {
    std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| {
                    e.file_name()
                        .to_str()
                        .is_some_and(|n| n.parse::<u32>().is_ok())
                })
                .count()
        })
        .unwrap_or(0)
}

fn spawn_until(target: usize) -> Children {
    let mut children = Children(Vec::new());
    while process_count() < target && children.0.len() < MAX_CHILDREN {
        match Command::new("sleep")
            .arg("120")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(child) => children.0.push(child),
            Err(e) => {
                eprintln!("cannot spawn more sleepers: {e}");
                break;
            }
        }
    }
    children
}

/// Runs `f` `ITERATIONS` times after one warm-up; returns sorted durations.
fn time(mut f: impl FnMut()) -> Vec<Duration> {
    f();
    let mut runs: Vec<Duration> = (0..ITERATIONS)
        .map(|_| {
            let started = Instant::now();
            f();
            started.elapsed()
        })
        .collect();
    runs.sort();
    runs
}

fn report(label: &str, runs: &[Duration]) -> f64 {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let p95 = runs[((runs.len() * 95).div_ceil(100)).saturating_sub(1)];
    let median = ms(runs[runs.len() / 2]);
    println!(
        "{label:<44} min {:>7.2} ms  median {:>7.2} ms  p95 {:>7.2} ms",
        ms(runs[0]),
        median,
        ms(p95)
    );
    median
}

fn run_discarding(program: &str, args: &[&str]) -> std::io::Result<()> {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|_| ())
}

fn main() {
    let children = spawn_until(TARGET_PROCESSES);
    let processes = process::list(
        false,
        &cordon_agent::collect::gate::Index::none(),
        &cordon_agent::collect::cancel::Cancel::never(),
    )
    .expect("process list");
    let network = network::snapshot().expect("network snapshot");
    println!(
        "{} processes ({} spawned sleepers), {} sockets, {} interfaces",
        processes.processes.len(),
        children.0.len(),
        network.sockets.len(),
        network.interfaces.len()
    );
    let owned = network.sockets.iter().filter(|s| s.pid.is_some()).count();
    println!("{owned} sockets with an owning process");

    report(
        "cordon process list",
        &time(|| {
            process::list(
                false,
                &cordon_agent::collect::gate::Index::none(),
                &cordon_agent::collect::cancel::Cancel::never(),
            )
            .expect("process list");
        }),
    );
    report(
        "cordon network snapshot",
        &time(|| {
            network::snapshot().expect("network snapshot");
        }),
    );
    let cordon = report(
        "cordon process list + network snapshot",
        &time(|| {
            process::list(
                false,
                &cordon_agent::collect::gate::Index::none(),
                &cordon_agent::collect::cancel::Cancel::never(),
            )
            .expect("process list");
            network::snapshot().expect("network snapshot");
        }),
    );

    let ps_args = ["-eo", "pid,ppid,user,lstart,rss,args"];
    let ss_available = run_discarding("ss", &["-V"]).is_ok();
    let baseline = if ss_available {
        report(
            "ps -eo pid,ppid,user,lstart,rss,args + ss -tanup",
            &time(|| {
                run_discarding("ps", &ps_args).expect("ps");
                run_discarding("ss", &["-tanup"]).expect("ss");
            }),
        )
    } else {
        println!("ss is not installed: timing ps alone");
        report(
            "ps -eo pid,ppid,user,lstart,rss,args",
            &time(|| run_discarding("ps", &ps_args).expect("ps")),
        )
    };
    println!(
        "budget: median {cordon:.2} ms (≤ 50 ms: {}), ps+ss median {baseline:.2} ms (no slower: {})",
        if cordon <= 50.0 { "met" } else { "MISSED" },
        if cordon <= baseline { "met" } else { "MISSED" },
    );
    drop(children);
}
