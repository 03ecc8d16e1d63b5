//! Watchpost as a process of its own.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) struct ServerProcess {
    pub(crate) child: Child,
    pub(crate) pid: String,
    pub(crate) base: String,
    pub(crate) _dir: tempfile::TempDir,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

pub(crate) async fn start_server(http: &reqwest::Client, cpu: Option<usize>) -> ServerProcess {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // BENCH_SERVER_BIN runs another build (e.g. an older commit's) against this generator.
    let binary = std::env::var("BENCH_SERVER_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_watchpost").into());
    let mut command = match cpu {
        // taskset execs the server, so the child's pid is the server's.
        Some(cpu) => {
            let mut c = Command::new("taskset");
            c.args(["-c", &cpu.to_string(), binary.as_str()]);
            c
        }
        None => Command::new(&binary),
    };
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOST", "127.0.0.1")
        .env("PORT", port.to_string())
        .env("BETTER_AUTH_SECRET", "bench-secret-0123456789-abcdefghij")
        .env("AUTH_RATE_LIMIT_MAX", "1000000")
        .env("MEDIA_UDP_PORT", "0")
        .env("MEDIA_PUBLIC_IP", "127.0.0.1")
        .env("MEDIA_MAX_SUBSCRIBERS_PER_ROOM", "1000")
        // Every viewer here belongs to one account: lift the fair-share cap too.
        .env("MEDIA_MAX_SUBSCRIBERS_PER_USER", "1000")
        // Forwarding is what is measured; recording has its own benchmark.
        .env("RECORDING_MODE", "off")
        .env("RUST_LOG", "warn")
        .env("WATCHPOST_DATA_DIR", dir.path())
        .env("MEDIA_RECORDINGS_DIR", dir.path().join("rec"))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    let child = command.spawn().expect("the server starts");
    let server = ServerProcess {
        pid: child.id().to_string(),
        child,
        base: format!("http://127.0.0.1:{port}"),
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = http.get(format!("{}/healthz", server.base)).send().await
            && r.status().is_success()
        {
            return server;
        }
        assert!(Instant::now() < deadline, "the server did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The server's counts of datagrams its media loops sent and of the messages they went in
/// (a GSO run is one message; 0 from a build without the count).
pub(crate) async fn server_datagrams_sent(http: &reqwest::Client, base: &str) -> (u64, u64) {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let counter = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    (
        counter("watchpost_media_packets_out_total"),
        counter("watchpost_media_send_messages_total"),
    )
}
