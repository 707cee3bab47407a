//! A process's own CPU time and memory, from /proc: what the benchmark charges to camportal and
//! to ffmpeg, whatever else runs on the machine.

use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};

/// CPU time (user + system) a process has used so far, all its threads together.
pub fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let ticks = parse_stat_ticks(&stat).ok_or_else(|| anyhow!("unexpected {path}: {stat}"))?;
    Ok(ticks_to_duration(ticks))
}

/// Resident memory of a process (VmRSS), in bytes.
pub fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_vm_rss(&status).ok_or_else(|| anyhow!("no VmRSS in {path}"))
}

/// Open file descriptors of a process.
pub fn fd_count(pid: u32) -> anyhow::Result<usize> {
    let path = format!("/proc/{pid}/fd");
    Ok(std::fs::read_dir(&path)
        .with_context(|| format!("reading {path}"))?
        .count())
}

/// Threads of a process.
pub fn thread_count(pid: u32) -> anyhow::Result<usize> {
    let path = format!("/proc/{pid}/task");
    Ok(std::fs::read_dir(&path)
        .with_context(|| format!("reading {path}"))?
        .count())
}

/// utime + stime (fields 14 and 15) of a /proc/<pid>/stat line, in clock ticks. The command
/// name (field 2) may hold spaces and parentheses, so fields are counted after its last `)`.
fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: field 3 (state) is fields[0], so field n is fields[n - 3].
    let utime: u64 = fields.get(14 - 3)?.parse().ok()?;
    let stime: u64 = fields.get(15 - 3)?.parse().ok()?;
    Some(utime + stime)
}

/// How busy the whole machine is, 0.0..=1.0 of all cores, over `sample`: the benchmark says in
/// its report whether it started on a quiet machine. (The load average would still count the
/// daemon's build that just finished.)
pub fn machine_busy(sample: Duration) -> Option<f64> {
    let read = || parse_cpu_line(&std::fs::read_to_string("/proc/stat").ok()?);
    let (busy0, total0) = read()?;
    std::thread::sleep(sample);
    let (busy1, total1) = read()?;
    let total = total1.checked_sub(total0).filter(|&t| t > 0)?;
    Some(busy1.saturating_sub(busy0) as f64 / total as f64)
}

/// (busy, total) ticks of the `cpu` line of /proc/stat; idle and iowait are not busy.
fn parse_cpu_line(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let total: u64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3)? + ticks.get(4).unwrap_or(&0);
    Some((total - idle, total))
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn ticks_to_duration(ticks: u64) -> Duration {
    // SAFETY: sysconf only reads a constant of the system.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let per_second = u64::try_from(per_second)
        .ok()
        .filter(|&t| t > 0)
        .unwrap_or(100);
    Duration::from_nanos(ticks * 1_000_000_000 / per_second)
}

/// CPU time of the calling thread (for timing one encoder call at a time).
pub fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &raw mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// CPU time (user + system) of all children waited for so far.
pub fn children_cpu_time() -> Duration {
    // SAFETY: getrusage writes into the struct we own.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &raw mut usage) };
    if rc != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// CPU use of one process over a window: start it, then read it.
pub struct CpuMeter {
    pid: u32,
    cpu: Duration,
    at: Instant,
}

/// What a window measured.
#[derive(Debug, Clone, Copy)]
pub struct CpuUse {
    pub cpu: Duration,
    pub wall: Duration,
}

impl CpuUse {
    /// In cores: 1.0 is one core busy all the time.
    pub fn cores(&self) -> f64 {
        self.cpu.as_secs_f64() / self.wall.as_secs_f64().max(1e-9)
    }
}

impl CpuMeter {
    pub fn start(pid: u32) -> anyhow::Result<CpuMeter> {
        Ok(CpuMeter {
            pid,
            cpu: cpu_time(pid)?,
            at: Instant::now(),
        })
    }

    pub fn read(&self) -> anyhow::Result<CpuUse> {
        let cpu = cpu_time(self.pid)?;
        Ok(CpuUse {
            cpu: cpu.saturating_sub(self.cpu),
            wall: self.at.elapsed(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_a_nasty_name() {
        let stat = "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 \
                    9 0 1000 123456789 4000 18446744073709551615";
        assert_eq!(parse_stat_ticks(stat), Some(325));
        assert_eq!(parse_stat_ticks("garbage"), None);
    }

    #[test]
    fn vm_rss() {
        let status = "Name:\tcamportal\nVmPeak:\t  100 kB\nVmRSS:\t   24576 kB\nThreads:\t9\n";
        assert_eq!(parse_vm_rss(status), Some(24576 * 1024));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
    }

    #[test]
    fn cpu_line() {
        let stat = "cpu  100 5 50 800 40 3 2 0 0 0\ncpu0 50 2 25 400 20 1 1 0 0 0\n";
        assert_eq!(parse_cpu_line(stat), Some((160, 1000)));
        assert_eq!(parse_cpu_line("cpu0 1 2 3\n"), None);
        assert_eq!(parse_cpu_line("cpu  1 x 3\n"), None);
    }

    #[test]
    fn this_process_has_used_some_cpu() {
        let pid = std::process::id();
        let spin = Instant::now();
        let mut x = 0u64;
        while spin.elapsed() < Duration::from_millis(30) {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        assert!(x != 1);
        assert!(cpu_time(pid).expect("own stat") > Duration::ZERO);
        assert!(rss_bytes(pid).expect("own status") > 0);
        assert!(thread_cpu_time() > Duration::ZERO);
    }
}
