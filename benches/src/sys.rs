//! What the harness reads from the operating system: CPU time (getrusage, /proc/PID/stat),
//! resident memory (/proc/PID/status VmRSS) and the open-file limit.

use std::time::Duration;

/// CPU time a process has used.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuTime {
    /// Time in user mode.
    pub user: Duration,
    /// Time in the kernel on the process's behalf.
    pub system: Duration,
}

impl CpuTime {
    /// User plus system time.
    pub fn total(&self) -> Duration {
        self.user + self.system
    }

    /// The time used since `earlier`.
    pub fn since(&self, earlier: &CpuTime) -> CpuTime {
        CpuTime {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
        }
    }
}

fn timeval(tv: libc::timeval) -> Duration {
    Duration::from_secs(tv.tv_sec.max(0) as u64) + Duration::from_micros(tv.tv_usec.max(0) as u64)
}

/// CPU time of this process, all threads (getrusage(RUSAGE_SELF), microsecond resolution).
pub fn cpu_time() -> CpuTime {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes one rusage into the pointer, which points at enough zeroed,
    // writable memory for it; RUSAGE_SELF is always a valid `who`.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    if rc != 0 {
        return CpuTime::default();
    }
    // SAFETY: zeroed is a valid rusage (plain integers), and getrusage succeeded.
    let usage = unsafe { usage.assume_init() };
    CpuTime {
        user: timeval(usage.ru_utime),
        system: timeval(usage.ru_stime),
    }
}

/// CPU time of another process from /proc/PID/stat (clock-tick resolution, usually 10 ms).
pub fn process_cpu_time(pid: u32) -> Option<CpuTime> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: fields count from after it.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name, field 14 (utime) and 15 (stime) of proc(5) are at index 11 and 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks = u64::try_from(ticks).ok().filter(|&t| t > 0)?;
    let to_duration = |t: u64| Duration::from_nanos(t.saturating_mul(1_000_000_000) / ticks);
    Some(CpuTime {
        user: to_duration(utime),
        system: to_duration(stime),
    })
}

/// Makes the process `command` starts receive SIGKILL when this one dies (Linux
/// `PR_SET_PDEATHSIG`), so a bench that is killed leaves no server or client behind. Spawn
/// from a thread that outlives the child: the signal follows the spawning thread's exit.
pub fn die_with_parent(command: &mut std::process::Command) -> &mut std::process::Command {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt as _;
        // SAFETY: the hook runs in the forked child before exec, where only async-signal-safe
        // calls are allowed; prctl is a plain system call and allocates nothing.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
    }
    command
}

/// Resident set size of this process in bytes (VmRSS of /proc/self/status).
pub fn rss_bytes() -> Option<u64> {
    rss_of("self")
}

/// Resident set size of process `pid` in bytes.
pub fn process_rss_bytes(pid: u32) -> Option<u64> {
    rss_of(&pid.to_string())
}

fn rss_of(who: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{who}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Raises the soft open-file limit to `want` (or the hard limit if lower); returns the limit
/// now in force.
pub fn raise_fd_limit(want: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into a valid, writable struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 0;
    }
    // rlim_t is u64 on Linux.
    let want: libc::rlim_t = want;
    if lim.rlim_cur >= want {
        return lim.rlim_cur;
    }
    let raised = libc::rlimit {
        rlim_cur: want.min(lim.rlim_max),
        rlim_max: lim.rlim_max,
    };
    // SAFETY: setrlimit reads one valid rlimit; a refusal leaves the old limit in force.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
        raised.rlim_cur
    } else {
        lim.rlim_cur
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_cpu_time_and_memory() {
        let before = cpu_time();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_add(i ^ (x >> 3));
        }
        std::hint::black_box(x);
        assert!(cpu_time().total() > before.total());
        assert!(rss_bytes().unwrap() > 0);
        let pid = std::process::id();
        assert!(process_rss_bytes(pid).unwrap() > 0);
        assert!(process_cpu_time(pid).is_some());
    }
}
