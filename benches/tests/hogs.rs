//! The CPU hogs of `plexus-bench matrix --load N` never outlive the process that started them:
//! not when its guard drops, and not when it is killed outright.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use plexus_benches::hogs::Hogs;

const BIN: &str = env!("CARGO_BIN_EXE_plexus-bench");

/// Whether `pid` is a process that can still run: it exists and is not a zombie.
fn running(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state letter follows the parenthesised command name.
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next());
    !matches!(state, Some("Z" | "X"))
}

/// Waits for `pid` to stop running; false if it still runs after a minute (generous, for a
/// loaded machine: the kernel kills a hog at once, the parent check within one work slice).
fn stops(pid: u32) -> bool {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        if !running(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Kills a process this test started indirectly, should the test fail with it still running.
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if running(self.0) {
            // SAFETY: kill takes a pid and a signal number and touches no memory.
            unsafe {
                libc::kill(self.0 as libc::pid_t, libc::SIGKILL);
            }
        }
    }
}

#[test]
fn dropping_the_guard_kills_every_hog() {
    let mut hogs = Hogs::start_from(Path::new(BIN), 2).expect("start hogs");
    let pids = hogs.pids();
    let _cleanup: Vec<KillOnDrop> = pids.iter().map(|&p| KillOnDrop(p)).collect();
    assert_eq!(pids.len(), 2);
    hogs.check().expect("both hogs run");
    assert!(pids.iter().all(|&p| running(p)));
    drop(hogs);
    for pid in pids {
        assert!(!running(pid), "hog {pid} outlived its guard");
    }
}

#[test]
fn a_hog_dies_when_its_parent_is_killed() {
    // A shell starts a hog that names the shell as its parent, prints the hog's pid, then
    // becomes `sleep` (same pid) so that it stays the hog's parent until the test kills it.
    let mut parent = Command::new("sh")
        .arg("-c")
        .arg(r#""$0" spin --parent $$ & echo $!; exec sleep 600"#)
        .arg(BIN)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start sh");
    let mut line = String::new();
    BufReader::new(parent.stdout.take().unwrap())
        .read_line(&mut line)
        .expect("read the hog's pid");
    let hog: u32 = line.trim().parse().expect("a pid");
    let _cleanup = KillOnDrop(hog);
    assert!(running(hog));
    parent.kill().expect("kill the parent");
    parent.wait().expect("reap the parent");
    assert!(
        stops(hog),
        "hog {hog} kept running after its parent was killed"
    );
}

#[test]
fn a_hog_whose_parent_is_already_gone_leaves_at_once() {
    // Our parent is not the process named, as after a parent died before the hog started.
    let mut hog = Command::new(BIN)
        .args(["spin", "--parent", &u32::MAX.to_string()])
        .spawn()
        .expect("run spin");
    let _cleanup = KillOnDrop(hog.id());
    assert!(stops(hog.id()), "a hog with a dead parent kept running");
    assert!(hog.wait().expect("reap spin").success());
    let bad = Command::new(BIN)
        .args(["spin", "--parent", "x"])
        .stderr(Stdio::null())
        .status()
        .expect("run spin");
    assert!(!bad.success(), "a malformed --parent is an error");
}
