//! A process's CPU time and resident memory from /proc, for benchmarks that measure a
//! server running as a process of its own.

/// User + system CPU seconds used so far by every thread of `pid` ("self" for this one).
pub fn cpu_seconds(pid: &str) -> f64 {
    let (user, system) = user_system_seconds(pid);
    user + system
}

/// User and system CPU seconds used so far by every thread of `pid`, apart.
pub fn user_system_seconds(pid: &str) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised name: state is 0, utime 11, stime 12 (in USER_HZ,
    // which is 100 on Linux).
    let fields: Vec<u64> = stat
        .rsplit_once(')')
        .map(|(_, rest)| {
            rest.split_whitespace()
                .map(|f| f.parse().unwrap_or(0))
                .collect()
        })
        .unwrap_or_default();
    let field = |i: usize| fields.get(i).copied().unwrap_or(0);
    (field(11) as f64 / 100.0, field(12) as f64 / 100.0)
}

/// Resident memory of `pid` in bytes (VmRSS).
pub fn rss_bytes(pid: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}
