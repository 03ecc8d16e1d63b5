//! Real media for the test publisher: VP8 video and Opus audio encoded by ffmpeg from its
//! test sources, read back frame by frame (IVF and Ogg), so what the server records is a
//! stream players can decode.

use std::path::Path;
use std::process::Command;

/// One loop of real media: 30 fps VP8 frames (keyframe every 2 s) and 20 ms Opus packets.
pub struct Clip {
    /// (keyframe, frame)
    pub video: Vec<(bool, Vec<u8>)>,
    pub audio: Vec<Vec<u8>>,
}

impl Clip {
    /// Encodes `seconds` of ffmpeg's test pattern and a sine tone (`bitrate` for video).
    pub fn encode(dir: &Path, seconds: u32, bitrate: &str) -> Clip {
        let ivf = dir.join("clip.ivf");
        let ogg = dir.join("clip.ogg");
        let status = Command::new("ffmpeg")
            .args(["-loglevel", "error", "-y", "-f", "lavfi", "-i"])
            .arg(format!("testsrc2=size=640x360:rate=30:duration={seconds}"))
            .args(["-c:v", "libvpx", "-deadline", "realtime", "-cpu-used", "8"])
            .args([
                "-g",
                "60",
                "-keyint_min",
                "60",
                "-b:v",
                bitrate,
                "-auto-alt-ref",
                "0",
            ])
            .arg(&ivf)
            .status()
            .expect("ffmpeg runs (scripts/setup.sh installs it)");
        assert!(status.success(), "ffmpeg could not encode VP8");
        let status = Command::new("ffmpeg")
            .args(["-loglevel", "error", "-y", "-f", "lavfi", "-i"])
            .arg(format!(
                "sine=frequency=440:sample_rate=48000:duration={seconds}"
            ))
            .args([
                "-ac",
                "2",
                "-c:a",
                "libopus",
                "-frame_duration",
                "20",
                "-b:a",
                "48k",
            ])
            .arg(&ogg)
            .status()
            .expect("ffmpeg runs");
        assert!(status.success(), "ffmpeg could not encode Opus");
        let clip = Clip {
            video: read_ivf(&std::fs::read(&ivf).unwrap()),
            audio: read_ogg_packets(&std::fs::read(&ogg).unwrap()),
        };
        assert!(
            clip.video.first().is_some_and(|f| f.0),
            "the clip starts with a keyframe"
        );
        clip
    }
}

/// IVF: a 32-byte file header, then per frame a 12-byte header (size, timestamp).
fn read_ivf(bytes: &[u8]) -> Vec<(bool, Vec<u8>)> {
    let mut frames = Vec::new();
    let mut at = 32;
    while at + 12 <= bytes.len() {
        let size = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        at += 12;
        let frame = bytes[at..at + size].to_vec();
        // VP8 frame tag: bit 0 clear on a keyframe.
        frames.push((frame[0] & 1 == 0, frame));
        at += size;
    }
    frames
}

/// Opus packets from an Ogg stream, without its two header packets.
fn read_ogg_packets(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut packets = Vec::new();
    let mut current = Vec::new();
    let mut at = 0;
    while at + 27 <= bytes.len() && &bytes[at..at + 4] == b"OggS" {
        let segments = bytes[at + 26] as usize;
        let table = &bytes[at + 27..at + 27 + segments];
        let mut body = at + 27 + segments;
        for &lace in table {
            current.extend_from_slice(&bytes[body..body + lace as usize]);
            body += lace as usize;
            if lace < 255 {
                packets.push(std::mem::take(&mut current));
            }
        }
        at = body;
    }
    packets
        .into_iter()
        .filter(|p| !p.starts_with(b"OpusHead") && !p.starts_with(b"OpusTags"))
        .collect()
}
