//! The real server binary as a child process, for the tests that need a process boundary
//! (start-up time, configuration errors, signals).

/// The server binary. scripts/test.sh points `WATCHPOST_RELEASE_BIN` at the release build
/// (the start-up criterion is about release start-up); a plain `cargo test` falls back to
/// the debug binary.
pub fn binary() -> String {
    std::env::var("WATCHPOST_RELEASE_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_watchpost").to_string())
}

/// A TCP port free on loopback right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Kills the child when the test ends, pass or fail.
pub struct Child(pub std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
