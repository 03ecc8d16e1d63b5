//! Idle CPUs poll instead of halting while the benchmark runs.
//!
//! On a virtual machine a halted vCPU wakes through the host's scheduler: a datagram for a
//! server whose core went idle between frames can wait milliseconds for it, and the wake-up
//! costs CPU that lands on whatever runs next. That is the host's noise, not the server's
//! work, and it would be measured as both. So the run holds `/dev/cpu_dma_latency` at 0, as
//! `cyclictest` does: the kernel's PM QoS then keeps idle CPUs in the polling state. Both
//! servers run under it. The idle loop's polling is the idle task's time, never the server's
//! (`/proc/<pid>/stat` counts only the server's threads).

use std::fs::File;
use std::io::Write;

/// Holds the request; the kernel drops it when the file closes.
pub(crate) struct IdlePoll {
    _request: File,
}

impl IdlePoll {
    /// Asks for idle CPUs to poll (needs root).
    pub(crate) fn hold() -> Result<IdlePoll, String> {
        let mut request = File::options()
            .write(true)
            .open("/dev/cpu_dma_latency")
            .map_err(|e| format!("/dev/cpu_dma_latency: {e}"))?;
        // A latency bound of 0 µs, as a binary s32.
        request
            .write_all(&0i32.to_ne_bytes())
            .map_err(|e| format!("/dev/cpu_dma_latency: {e}"))?;
        Ok(IdlePoll { _request: request })
    }
}
