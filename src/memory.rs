//! Giving memory back after a burst. glibc keeps what the daemon frees in its arenas for reuse:
//! after an offer flood or a hundred viewers leaving, the process would stay at its peak for
//! good. Every [`TRIM_INTERVAL`] free memory is handed back to the kernel (`malloc_trim`), which
//! costs well under a millisecond when there is little to give back.

use std::time::Duration;

use tokio::task::JoinHandle;

pub(crate) const TRIM_INTERVAL: Duration = Duration::from_secs(10);

/// Trims the heap every [`TRIM_INTERVAL`] until the returned task is aborted.
pub(crate) fn spawn_trimmer() -> JoinHandle<()> {
    tokio::spawn(async {
        let mut tick = tokio::time::interval(TRIM_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            // On a blocking thread: with a large heap the walk can take a few milliseconds.
            let _ = tokio::task::spawn_blocking(trim).await;
        }
    })
}

fn trim() {
    // SAFETY: malloc_trim only walks glibc's own heap structures, under its own locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Raises the soft limit on open files to the hard limit: each viewer and HTTP connection
/// holds a descriptor, and the usual soft limit (1024) is below what the HTTP connection cap
/// allows. Returns the limit now in force.
pub fn raise_fd_limit() -> std::io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write only the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    Ok(limit.rlim_cur)
}
