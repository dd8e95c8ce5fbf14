//! CPU hogs for `plexus-bench matrix --load N`: busy processes that compete with the server
//! and client for the cores, so the matrix can show how each executor fares under contention.
//!
//! A hog is this binary's own `plexus-bench spin` subcommand rather than `yes > /dev/null`:
//! it needs nothing installed beyond the bench itself, its load is one pure user-space loop
//! (no syscalls, so it contends for cores and not for the kernel's write path), and it can
//! arrange its own death. Hogs must never outlive the run, on any exit path:
//! - a normal return, an error or a panic drops the [`Hogs`] guard, which kills and reaps them;
//! - Ctrl-C reaches them directly, since they stay in the bench's process group;
//! - if the bench dies any other way (SIGKILL, SIGTERM, abort), the kernel sends each hog
//!   SIGKILL (`PR_SET_PDEATHSIG`, Linux, armed both before the hog's exec and by the hog
//!   itself), and every hog also checks its parent between slices of work and leaves once it
//!   has changed.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::args::Args;
use crate::sys::die_with_parent;

/// Running hog processes; dropping the guard kills and reaps every one of them.
#[derive(Debug)]
pub struct Hogs {
    children: Vec<Child>,
}

impl Hogs {
    /// Starts `n` hogs (`plexus-bench spin`) from the current executable. Call it from a
    /// thread that outlives the hogs: Linux sends the parent-death signal when the thread
    /// that spawned a process exits, not only when the process does.
    pub fn start(n: usize) -> Result<Hogs, String> {
        let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        Hogs::start_from(&exe, n)
    }

    /// Starts `n` hogs from the `plexus-bench` binary at `program`.
    pub fn start_from(program: &Path, n: usize) -> Result<Hogs, String> {
        let parent = std::process::id().to_string();
        let mut hogs = Hogs {
            children: Vec::with_capacity(n),
        };
        for _ in 0..n {
            // On an error, `hogs` is dropped here and kills the ones already started.
            let child = die_with_parent(&mut Command::new(program))
                .args(["spin", "--parent", &parent])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .map_err(|e| format!("cannot start a CPU hog ({}): {e}", program.display()))?;
            hogs.children.push(child);
        }
        Ok(hogs)
    }

    /// Process ids of the hogs.
    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::id).collect()
    }

    /// An error if any hog has exited: the load was not there the whole time.
    pub fn check(&mut self) -> Result<(), String> {
        for child in &mut self.children {
            match child.try_wait() {
                Ok(None) => {}
                Ok(Some(status)) => return Err(format!("a CPU hog exited early ({status})")),
                Err(e) => return Err(format!("cannot check a CPU hog: {e}")),
            }
        }
        Ok(())
    }
}

impl Drop for Hogs {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
        }
        for child in &mut self.children {
            let _ = child.wait();
        }
    }
}

/// LCG steps between two looks at the parent: about a millisecond of work in a release build.
const SLICE: u32 = 1 << 20;

/// Entry point of `plexus-bench spin [--parent PID]`: burns one core until its parent (the
/// process `PID`, default the one that started it) is gone or it is killed.
pub fn spin_main(raw: &[String]) -> Result<(), String> {
    let args = Args::parse(raw, &["parent"], &[])?;
    let parent = match args.get("parent") {
        Some(_) => args.parsed("parent", 0u32)?,
        None => std::os::unix::process::parent_id(),
    };
    arm_parent_death();
    let mut x: u64 = 1;
    // Checked after arming the signal: a parent that died before it is caught here.
    while std::os::unix::process::parent_id() == parent {
        for _ in 0..SLICE {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
        }
        x = std::hint::black_box(x);
    }
    Ok(())
}

/// Asks the kernel to SIGKILL this process when its parent dies.
#[cfg(target_os = "linux")]
fn arm_parent_death() {
    // SAFETY: PR_SET_PDEATHSIG takes a signal number and touches no memory of ours.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
    }
}

/// Elsewhere the parent check in the loop is the only way out.
#[cfg(not(target_os = "linux"))]
fn arm_parent_death() {}
