//! CPU time of the server's own threads, for benchmarks that run the server and its load
//! generator in one process.

/// The server's runtime threads are named this, so their CPU time can be read apart.
pub const SERVER_THREADS: &str = "wp-server";

/// SQLite runs each connection on a thread of its own (named `sqlx-sqlite-worker-N`,
/// shortened to 15 characters by the kernel): server work too.
const SQLITE_THREADS: &str = "sqlx-sqlite-wor";

/// CPU seconds used so far by this process's server threads: those named
/// `SERVER_THREADS` and SQLite's connection threads.
pub fn server_cpu_seconds() -> f64 {
    let mut ticks = 0u64;
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    for task in tasks.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        let comm = comm.trim_end();
        if !(comm.starts_with(SERVER_THREADS) || comm.starts_with(SQLITE_THREADS)) {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // Fields after the parenthesised name: state is 0, utime 11, stime 12.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let field = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        ticks += field(11) + field(12);
    }
    // USER_HZ is 100 on Linux.
    ticks as f64 / 100.0
}
