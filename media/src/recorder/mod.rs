//! The recorder: a published stream's frames, handed over by the SFU, muxed without
//! transcoding into standalone segment files by one GStreamer pipeline per recording.
//!
//! The SFU's side is a [`RecorderTap`] held by the room: a bounded, non-blocking queue.
//! When the recorder falls behind, frames are dropped and counted (video then waits for the
//! next keyframe so the file never holds a broken picture) and live viewers are untouched.
//! The recorder's side runs on its own thread ([`pipeline`], with the `recording` feature)
//! and reports through [`RecorderEvent`]s: each segment closed on disk, then the end.
//! What happens to the files (upload, database) is the server's business.

#[cfg(feature = "recording")]
mod pipeline;
#[cfg(feature = "recording")]
mod timeline;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedReceiver;

/// Whether this build can record (the `recording` feature, GStreamer).
pub const AVAILABLE: bool = cfg!(feature = "recording");

#[derive(Debug, thiserror::Error)]
pub enum RecorderError {
    #[error("recording is not available in this build (compiled without the `recording` feature)")]
    Unavailable,
    #[error("GStreamer could not start: {0}")]
    Init(String),
    #[error("recording directory: {0}")]
    Io(#[from] std::io::Error),
}

#[derive(Debug, Clone)]
pub struct RecorderConfig {
    /// Where this recording's segments are written (created if missing).
    pub dir: PathBuf,
    /// Target segment length; cuts happen at the first keyframe after it.
    pub segment: Duration,
    /// Frames the hand-off queue holds before it drops (about 4 s of 30 fps video + audio).
    pub queue_frames: usize,
    /// How long the end of a recording may take to write its last segment.
    pub finish_timeout: Duration,
}

impl RecorderConfig {
    pub fn new(dir: impl Into<PathBuf>, segment: Duration) -> Self {
        Self {
            dir: dir.into(),
            segment,
            queue_frames: 512,
            finish_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    Vp8,
    H264,
}

impl VideoCodec {
    pub fn name(self) -> &'static str {
        match self {
            VideoCodec::Vp8 => "vp8",
            VideoCodec::H264 => "h264",
        }
    }

    /// The container a codec is recorded into: VP8 in WebM, H.264 in MP4.
    pub fn container(self) -> Container {
        match self {
            VideoCodec::Vp8 => Container::Webm,
            VideoCodec::H264 => Container::Mp4,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Container {
    Webm,
    Mp4,
}

impl Container {
    pub fn extension(self) -> &'static str {
        match self {
            Container::Webm => "webm",
            Container::Mp4 => "mp4",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Container::Webm => "video/webm",
            Container::Mp4 => "video/mp4",
        }
    }

    pub fn from_path(path: &Path) -> Option<Container> {
        match path.extension()?.to_str()? {
            "webm" => Some(Container::Webm),
            "mp4" => Some(Container::Mp4),
            _ => None,
        }
    }
}

/// What a recording reports, in order: `Started` once the first keyframe arrived, a
/// `SegmentClosed` per finished file, then exactly one of `Finished` or `Failed`.
#[derive(Debug, Clone, PartialEq)]
pub enum RecorderEvent {
    Started {
        video: VideoCodec,
        audio: Option<&'static str>,
        container: Container,
    },
    SegmentClosed(ClosedSegment),
    /// The stream ended (or the recording was stopped) and the last segment is closed.
    Finished,
    /// The pipeline broke; the segments already closed stay valid.
    Failed {
        error: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClosedSegment {
    /// 0, 1, 2, ... in this recording.
    pub index: u32,
    pub path: PathBuf,
    /// Where the segment starts, from the recording's first frame.
    pub offset: Duration,
    pub duration: Duration,
}

/// Figures shared by the tap (SFU side) and the pipeline thread.
#[derive(Debug, Default)]
pub struct RecorderStats {
    pub frames_in: AtomicU64,
    /// Frames the queue had no room for (or skipped until the next keyframe after a drop).
    pub frames_dropped: AtomicU64,
    /// The pipeline needs a keyframe (it is starting, or wants to cut a segment); the SFU
    /// turns this into a rate-limited PLI to the camera.
    keyframe_wanted: AtomicBool,
}

impl RecorderStats {
    pub(crate) fn want_keyframe(&self) {
        self.keyframe_wanted.store(true, Ordering::Relaxed);
    }
}

/// The server's handle on a running recording.
pub struct Recording {
    pub events: UnboundedReceiver<RecorderEvent>,
    pub stats: Arc<RecorderStats>,
}

/// Starts a recording's pipeline thread. The returned tap goes to the SFU
/// ([`crate::sfu::Sfu::attach_recorder`]); dropping it (detach, or the room ending) ends
/// the recording cleanly.
pub fn start(config: RecorderConfig) -> Result<(Recording, RecorderTap), RecorderError> {
    #[cfg(feature = "recording")]
    {
        pipeline::start(config)
    }
    #[cfg(not(feature = "recording"))]
    {
        let _ = config;
        Err(RecorderError::Unavailable)
    }
}

/// Makes a segment left unfinished by a crash playable where possible (its container is
/// rewritten from what was on disk). Returns the playable duration, or an error when
/// nothing usable is in the file.
pub fn finalise_segment(path: &Path) -> Result<Duration, RecorderError> {
    #[cfg(feature = "recording")]
    {
        pipeline::finalise(path)
    }
    #[cfg(not(feature = "recording"))]
    {
        let _ = path;
        Err(RecorderError::Unavailable)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackKind {
    Audio,
    Video,
}

/// One depacketised frame on its way to the recorder. The SFU makes these from what
/// cameras publish; anything else that has encoded frames (a benchmark, a test) can too.
#[derive(Debug)]
pub struct TapFrame {
    pub kind: TrackKind,
    /// `None` for audio (always Opus).
    pub video: Option<VideoCodec>,
    pub keyframe: bool,
    /// RTP time in `clock_rate` units.
    pub rtp_time: u64,
    pub clock_rate: u32,
    pub arrival: Instant,
    pub data: Arc<[u8]>,
}

#[derive(Debug)]
// Read by the pipeline thread, which exists only with the `recording` feature.
#[cfg_attr(not(feature = "recording"), allow(dead_code))]
pub(crate) enum TapMessage {
    /// Which tracks the publisher sends: the pipeline waits for both before it starts.
    Tracks {
        audio: bool,
        video: bool,
    },
    Frame(TapFrame),
}

/// The SFU room's end of the hand-off. Owned by the room (no locking); every call is
/// non-blocking.
pub struct RecorderTap {
    tx: SyncSender<TapMessage>,
    stats: Arc<RecorderStats>,
    /// A video frame was dropped: skip video until the next keyframe.
    video_gap: bool,
    /// The simulcast layer recorded (the first one seen with a keyframe).
    layer: Option<Option<str0m::media::Rid>>,
    closed: bool,
}

impl RecorderTap {
    #[cfg_attr(not(feature = "recording"), allow(dead_code))]
    pub(crate) fn new(tx: SyncSender<TapMessage>, stats: Arc<RecorderStats>) -> Self {
        Self {
            tx,
            stats,
            video_gap: false,
            layer: None,
            closed: false,
        }
    }

    /// The recorder thread is gone (failed or finished): the room drops the tap.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// The room has a new publisher: start again at its first keyframe.
    pub(crate) fn new_source(&mut self) {
        self.layer = None;
        self.video_gap = false;
    }

    /// A video frame never arrived whole: what follows waits for the next keyframe, which
    /// is asked for.
    pub(crate) fn lost_video(&mut self) {
        if self.layer.is_some() && !self.video_gap {
            self.video_gap = true;
            self.stats.frames_dropped.fetch_add(1, Ordering::Relaxed);
            self.stats.want_keyframe();
        }
    }

    /// Which tracks are coming: the pipeline waits for this (or assumes video only).
    pub fn tracks(&mut self, audio: bool, video: bool) {
        self.send(TapMessage::Tracks { audio, video });
    }

    /// Takes the pipeline's pending keyframe wish, if any.
    pub fn take_keyframe_wish(&self) -> bool {
        self.stats.keyframe_wanted.swap(false, Ordering::Relaxed)
    }

    /// Offers a frame; drops it (counted) when the queue is full.
    pub fn offer(&mut self, frame: TapFrame, rid: Option<str0m::media::Rid>) {
        if frame.kind == TrackKind::Video {
            match self.layer {
                None if frame.keyframe => self.layer = Some(rid),
                None => {
                    self.stats.want_keyframe();
                    return;
                }
                Some(layer) if layer != rid => return,
                Some(_) => {}
            }
            if self.video_gap {
                if !frame.keyframe {
                    self.stats.frames_dropped.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                self.video_gap = false;
            }
        }
        let video = frame.kind == TrackKind::Video;
        if !self.send(TapMessage::Frame(frame)) && video && !self.closed {
            self.video_gap = true;
            self.stats.want_keyframe();
        }
    }

    fn send(&mut self, message: TapMessage) -> bool {
        if self.closed {
            return false;
        }
        match self.tx.try_send(message) {
            Ok(()) => {
                self.stats.frames_in.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(TrySendError::Full(_)) => {
                self.stats.frames_dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
            Err(TrySendError::Disconnected(_)) => {
                self.closed = true;
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: TrackKind, keyframe: bool) -> TapFrame {
        TapFrame {
            kind,
            video: (kind == TrackKind::Video).then_some(VideoCodec::Vp8),
            keyframe,
            rtp_time: 0,
            clock_rate: 90_000,
            arrival: Instant::now(),
            data: Arc::from(&b"x"[..]),
        }
    }

    #[test]
    fn a_full_queue_drops_and_counts_and_video_resumes_at_a_keyframe() {
        let (tx, rx) = std::sync::mpsc::sync_channel(2);
        let stats = Arc::new(RecorderStats::default());
        let mut tap = RecorderTap::new(tx, stats.clone());
        // Video before any keyframe is not recorded, and asks for one.
        tap.offer(frame(TrackKind::Video, false), None);
        assert!(tap.take_keyframe_wish());
        assert!(!tap.take_keyframe_wish());
        tap.offer(frame(TrackKind::Video, true), None);
        tap.offer(frame(TrackKind::Video, false), None);
        // Queue full (2): this one is dropped and the next deltas are skipped.
        tap.offer(frame(TrackKind::Video, false), None);
        assert_eq!(stats.frames_dropped.load(Ordering::Relaxed), 1);
        assert!(tap.take_keyframe_wish());
        rx.recv().unwrap();
        rx.recv().unwrap();
        tap.offer(frame(TrackKind::Video, false), None);
        assert_eq!(stats.frames_dropped.load(Ordering::Relaxed), 2);
        assert!(rx.try_recv().is_err());
        tap.offer(frame(TrackKind::Audio, false), None);
        tap.offer(frame(TrackKind::Video, true), None);
        assert!(matches!(
            rx.try_recv(),
            Ok(TapMessage::Frame(TapFrame {
                kind: TrackKind::Audio,
                ..
            }))
        ));
        assert!(matches!(
            rx.try_recv(),
            Ok(TapMessage::Frame(TapFrame { keyframe: true, .. }))
        ));
        assert_eq!(stats.frames_in.load(Ordering::Relaxed), 4);
        // The recorder went away: the tap says so and stops trying.
        drop(rx);
        tap.offer(frame(TrackKind::Audio, false), None);
        assert!(tap.is_closed());
    }
}
