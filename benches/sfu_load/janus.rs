//! Janus 1.1 as a process of its own, with a Streaming mountpoint.

use std::net::{IpAddr, Ipv4Addr};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::watchpost::free_port;

/// Janus's interface: Janus gathers no candidates on loopback interfaces, so the
/// benchmark gives it one end of a veth pair with an address of this machine's own
/// (traffic to a local address is delivered locally and never leaves the host), removed
/// again at the end.
pub(crate) struct JanusNet {
    pub(crate) ip: IpAddr,
}

pub(crate) const JANUS_INTERFACE: &str = "wpbench0";
pub(crate) const JANUS_VP8_PT: u8 = 96;
pub(crate) const JANUS_OPUS_PT: u8 = 111;

impl JanusNet {
    pub(crate) fn setup() -> Result<JanusNet, String> {
        let ip: IpAddr = Ipv4Addr::new(10, 254, 77, 1).into();
        let run = |args: &[&str]| {
            Command::new("ip")
                .args(args)
                .stderr(Stdio::null())
                .status()
                .map_err(|e| format!("ip {args:?}: {e}"))
        };
        let _ = run(&["link", "del", JANUS_INTERFACE]);
        for args in [
            &[
                "link",
                "add",
                JANUS_INTERFACE,
                "type",
                "veth",
                "peer",
                "name",
                "wpbench1",
            ][..],
            &["addr", "add", "10.254.77.1/32", "dev", JANUS_INTERFACE],
            &["link", "set", JANUS_INTERFACE, "up"],
            &["link", "set", "wpbench1", "up"],
        ] {
            if !run(args)?.success() {
                return Err(format!(
                    "ip {} failed (root is needed for Janus's interface)",
                    args.join(" ")
                ));
            }
        }
        Ok(JanusNet { ip })
    }
}

impl Drop for JanusNet {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", JANUS_INTERFACE])
            .status();
    }
}

/// Janus 1.1 (Debian's package) with only its HTTP transport and Streaming plugin, and one
/// plain-RTP mountpoint (id 1) for the camera's packets.
pub(crate) struct JanusProcess {
    pub(crate) child: Child,
    pub(crate) pid: String,
    pub(crate) base: String,
    pub(crate) ip: IpAddr,
    pub(crate) audio_port: u16,
    pub(crate) video_port: u16,
    pub(crate) dir: tempfile::TempDir,
}

impl Drop for JanusProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) const JANUS_LIBRARIES: &str = "/usr/lib/x86_64-linux-gnu/janus";

pub(crate) fn free_udp_port(ip: IpAddr) -> u16 {
    std::net::UdpSocket::bind((ip, 0))
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free UDP port")
}

impl JanusProcess {
    pub(crate) async fn start(
        http: &reqwest::Client,
        ip: IpAddr,
        cpu: Option<usize>,
    ) -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let d = dir.path().display().to_string();
        let (port, audio_port, video_port) = (free_port(), free_udp_port(ip), free_udp_port(ip));
        for (sub, library) in [
            ("plugins", "plugins/libjanus_streaming.so"),
            ("transports", "transports/libjanus_http.so"),
            ("events", ""),
            ("loggers", ""),
        ] {
            std::fs::create_dir(dir.path().join(sub)).map_err(|e| e.to_string())?;
            if !library.is_empty() {
                let name = library.rsplit('/').next().unwrap_or(library);
                std::os::unix::fs::symlink(
                    format!("{JANUS_LIBRARIES}/{library}"),
                    dir.path().join(sub).join(name),
                )
                .map_err(|e| e.to_string())?;
            }
        }
        let files = [
            (
                "janus.jcfg",
                format!(
                    "general: {{\n  configs_folder = \"{d}\"\n  plugins_folder = \"{d}/plugins\"\n  \
                     transports_folder = \"{d}/transports\"\n  events_folder = \"{d}/events\"\n  \
                     loggers_folder = \"{d}/loggers\"\n  debug_level = 3\n  session_timeout = 0\n}}\n\
                     media: {{\n  rtp_port_range = \"40000-49999\"\n}}\n\
                     nat: {{\n  ice_enforce_list = \"{JANUS_INTERFACE}\"\n}}\n"
                ),
            ),
            (
                "janus.transport.http.jcfg",
                format!(
                    "general: {{\n  base_path = \"/janus\"\n  http = true\n  port = {port}\n  \
                     ip = \"127.0.0.1\"\n  https = false\n}}\nadmin: {{\n  admin_http = false\n}}\n"
                ),
            ),
            (
                "janus.plugin.streaming.jcfg",
                format!(
                    "general: {{\n}}\nbench: {{\n  type = \"rtp\"\n  id = 1\n  description = \"bench\"\n  \
                     media = (\n    {{ type = \"audio\" mid = \"a\" label = \"audio\" port = {audio_port} \
                     pt = {JANUS_OPUS_PT} codec = \"opus\" }},\n    {{ type = \"video\" mid = \"v\" \
                     label = \"video\" port = {video_port} pt = {JANUS_VP8_PT} codec = \"vp8\" }}\n  )\n}}\n"
                ),
            ),
        ];
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).map_err(|e| e.to_string())?;
        }
        let log = std::fs::File::create(dir.path().join("janus.log")).map_err(|e| e.to_string())?;
        let config = format!("{d}/janus.jcfg");
        let janus_args = ["-F", &d, "-C", &config, "-P", &format!("{d}/plugins"), "-o"];
        let mut command = match cpu {
            Some(cpu) => {
                let mut c = Command::new("taskset");
                c.args(["-c", &cpu.to_string(), "janus"]);
                c
            }
            None => Command::new("janus"),
        };
        let child = command
            .args(janus_args)
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("janus did not start ({e}): apt-get install janus"))?;
        let janus = JanusProcess {
            pid: child.id().to_string(),
            child,
            base: format!("http://127.0.0.1:{port}"),
            ip,
            audio_port,
            video_port,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = http.get(format!("{}/janus/info", janus.base)).send().await
                && r.status().is_success()
            {
                return Ok(janus);
            }
            if Instant::now() > deadline {
                let log =
                    std::fs::read_to_string(janus.dir.path().join("janus.log")).unwrap_or_default();
                return Err(format!("janus did not come up:\n{log}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
