//! The GStreamer side of a recording: one thread per recording owns one pipeline.
//!
//! ```text
//! appsrc (VP8 | H.264 AU) [→ h264parse] → queue ─┐
//!                                                ├→ splitmuxsink (webmmux | mp4mux) → NNNNNN.webm|mp4
//! appsrc (Opus) → opusparse → queue ─────────────┘
//! ```
//!
//! Frames come in depacketised, with the timestamps [`super::timeline`] gives them and the
//! delta-unit flag on every non-keyframe, so `splitmuxsink` can cut at keyframes. When it
//! wants to cut it sends a force-key-unit event upstream; a probe on the video source turns
//! that into a keyframe wish the SFU answers with a (rate-limited) PLI.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use gst::prelude::*;
use gstreamer as gst;
use gstreamer_app as gst_app;
use tokio::sync::mpsc::UnboundedSender;

use super::timeline::TrackClock;
use super::{
    ClosedSegment, Container, RecorderConfig, RecorderError, RecorderEvent, RecorderStats,
    RecorderTap, Recording, TapFrame, TapMessage, TrackKind, VideoCodec,
};

pub(super) fn start(config: RecorderConfig) -> Result<(Recording, RecorderTap), RecorderError> {
    gst::init().map_err(|e| RecorderError::Init(e.to_string()))?;
    std::fs::create_dir_all(&config.dir)?;
    let (tx, rx) = std::sync::mpsc::sync_channel(config.queue_frames.max(1));
    let (events_tx, events) = tokio::sync::mpsc::unbounded_channel();
    let stats = Arc::new(RecorderStats::default());
    // The recording starts at a keyframe: ask for one now rather than wait for the next.
    stats.want_keyframe();
    let worker = Worker {
        config,
        rx,
        events: events_tx,
        stats: stats.clone(),
        tracks: None,
        pipe: None,
        start: None,
        video_clock: TrackClock::default(),
        audio_clock: TrackClock::default(),
    };
    std::thread::Builder::new()
        .name("recorder".into())
        .spawn(move || worker.run())?;
    Ok((
        Recording {
            events,
            stats: stats.clone(),
        },
        RecorderTap::new(tx, stats),
    ))
}

struct Pipe {
    pipeline: gst::Pipeline,
    video: gst_app::AppSrc,
    audio: Option<gst_app::AppSrc>,
    bus: gst::Bus,
    /// The open fragment's running time at its start.
    opened_at: Option<u64>,
    /// Where the current fragment started (kept across the close/open pair).
    fragment_start: u64,
    /// The last video keyframe's timestamp, and when a keyframe was last asked for.
    last_keyframe: u64,
    last_wish: Option<u64>,
}

struct Worker {
    config: RecorderConfig,
    rx: Receiver<TapMessage>,
    events: UnboundedSender<RecorderEvent>,
    stats: Arc<RecorderStats>,
    tracks: Option<(bool, bool)>,
    pipe: Option<Pipe>,
    /// Arrival of the first recorded keyframe: time zero of the recording.
    start: Option<Instant>,
    video_clock: TrackClock,
    audio_clock: TrackClock,
}

enum Step {
    Continue,
    Eos,
}

impl Worker {
    fn run(mut self) {
        loop {
            let result = match self.rx.recv_timeout(Duration::from_millis(50)) {
                Ok(TapMessage::Tracks { audio, video }) => {
                    self.tracks = Some((audio, video));
                    Ok(())
                }
                Ok(TapMessage::Frame(frame)) => self.push(frame),
                Err(RecvTimeoutError::Timeout) => Ok(()),
                Err(RecvTimeoutError::Disconnected) => {
                    self.finish();
                    return;
                }
            };
            if let Err(error) = result.and_then(|()| self.poll_bus().map(|_| ())) {
                self.fail(error);
                return;
            }
        }
    }

    fn push(&mut self, frame: TapFrame) -> Result<(), String> {
        if self.pipe.is_none() {
            let Some(codec) = frame.video.filter(|_| frame.keyframe) else {
                // Nothing is written before the first keyframe.
                self.stats.want_keyframe();
                return Ok(());
            };
            let (audio, _) = self.tracks.unwrap_or((false, true));
            self.pipe = Some(build(&self.config, codec, &frame.data, audio, &self.stats)?);
            self.start = Some(frame.arrival);
            let _ = self.events.send(RecorderEvent::Started {
                video: codec,
                audio: audio.then_some("opus"),
                container: codec.container(),
            });
        }
        let (Some(pipe), Some(start)) = (&mut self.pipe, self.start) else {
            return Ok(());
        };
        let (src, clock) = match frame.kind {
            TrackKind::Video => (&pipe.video, &mut self.video_clock),
            TrackKind::Audio => match &pipe.audio {
                Some(src) => (src, &mut self.audio_clock),
                None => return Ok(()),
            },
        };
        let Some(pts) = clock.pts(start, frame.arrival, frame.rtp_time, frame.clock_rate) else {
            return Ok(());
        };
        if frame.kind == TrackKind::Video {
            // The cut is due at the segment length, and only a keyframe can start the next
            // segment: shortly before it is due, ask the camera for one (again every half
            // second until one comes) rather than wait for its own next keyframe.
            const LEAD: u64 = 300_000_000;
            const AGAIN: u64 = 500_000_000;
            let due = pipe.fragment_start + self.config.segment.as_nanos() as u64;
            if frame.keyframe {
                pipe.last_keyframe = pts;
            } else if pts + LEAD >= due
                // Only a keyframe at or after the due time cuts: one that came just before
                // it (the camera's own, or the answer to an early wish) does not.
                && pipe.last_keyframe < due
                && pipe.last_wish.is_none_or(|w| pts >= w + AGAIN)
            {
                pipe.last_wish = Some(pts);
                self.stats.want_keyframe();
            }
        }
        // The frame's bytes are shared with the SFU, not copied.
        let mut buffer = gst::Buffer::from_slice(ArcBytes(frame.data));
        {
            let buffer = buffer.get_mut().expect("a new buffer is writable");
            buffer.set_pts(gst::ClockTime::from_nseconds(pts));
            if frame.kind == TrackKind::Video && !frame.keyframe {
                buffer.set_flags(gst::BufferFlags::DELTA_UNIT);
            }
        }
        match src.push_buffer(buffer) {
            Ok(_) | Err(gst::FlowError::Flushing) => Ok(()),
            Err(e) => Err(format!("pushing a frame failed: {e:?}")),
        }
    }

    /// Handles what the pipeline said since the last look.
    fn poll_bus(&mut self) -> Result<Step, String> {
        let Some(pipe) = &mut self.pipe else {
            return Ok(Step::Continue);
        };
        while let Some(message) = pipe.bus.pop() {
            if let Step::Eos = handle_message(pipe, &message, &self.events)? {
                return Ok(Step::Eos);
            }
        }
        Ok(Step::Continue)
    }

    /// The stream ended: close the open segment, then report the end.
    fn finish(mut self) {
        if let Some(pipe) = &self.pipe {
            let _ = pipe.video.end_of_stream();
            if let Some(audio) = &pipe.audio {
                let _ = audio.end_of_stream();
            }
            let deadline = Instant::now() + self.config.finish_timeout;
            let outcome = loop {
                let Some(pipe) = &mut self.pipe else {
                    break Ok(());
                };
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break Err("the last segment did not close in time".to_string());
                }
                let wait = gst::ClockTime::from_mseconds(left.as_millis().min(100) as u64);
                let Some(message) = pipe.bus.timed_pop(wait) else {
                    continue;
                };
                match handle_message(pipe, &message, &self.events) {
                    Ok(Step::Eos) => break Ok(()),
                    Ok(Step::Continue) => {}
                    Err(e) => break Err(e),
                }
            };
            if let Err(error) = outcome {
                self.fail(error);
                return;
            }
            let _ = pipe_stop(&self.pipe);
        }
        let _ = self.events.send(RecorderEvent::Finished);
    }

    fn fail(self, error: String) {
        tracing::warn!(dir = %self.config.dir.display(), %error, "recording failed");
        let _ = pipe_stop(&self.pipe);
        let _ = self.events.send(RecorderEvent::Failed { error });
    }
}

fn pipe_stop(pipe: &Option<Pipe>) -> Result<(), gst::StateChangeError> {
    if let Some(pipe) = pipe {
        pipe.pipeline.set_state(gst::State::Null)?;
    }
    Ok(())
}

fn handle_message(
    pipe: &mut Pipe,
    message: &gst::Message,
    events: &UnboundedSender<RecorderEvent>,
) -> Result<Step, String> {
    use gst::MessageView;
    match message.view() {
        MessageView::Eos(_) => return Ok(Step::Eos),
        MessageView::Error(err) => {
            return Err(format!(
                "{} ({})",
                err.error(),
                err.debug().map(|d| d.to_string()).unwrap_or_default()
            ));
        }
        MessageView::Element(element) => {
            let Some(s) = element.structure() else {
                return Ok(Step::Continue);
            };
            let running_time = s.get::<u64>("running-time").unwrap_or(0);
            match s.name().as_str() {
                "splitmuxsink-fragment-opened" => {
                    pipe.opened_at = Some(running_time);
                    pipe.fragment_start = running_time;
                }
                "splitmuxsink-fragment-closed" => {
                    let Ok(location) = s.get::<String>("location") else {
                        return Ok(Step::Continue);
                    };
                    let path = PathBuf::from(location);
                    let opened = pipe.opened_at.take().unwrap_or(0);
                    let index = path
                        .file_stem()
                        .and_then(|s| s.to_str())
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0);
                    let _ = events.send(RecorderEvent::SegmentClosed(ClosedSegment {
                        index,
                        path,
                        offset: Duration::from_nanos(opened),
                        duration: Duration::from_nanos(running_time.saturating_sub(opened)),
                    }));
                }
                _ => {}
            }
        }
        _ => {}
    }
    Ok(Step::Continue)
}

/// Lets GStreamer read a frame the SFU shares.
struct ArcBytes(Arc<[u8]>);

impl AsRef<[u8]> for ArcBytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

fn make(factory: &str) -> Result<gst::Element, String> {
    gst::ElementFactory::make(factory).build().map_err(|_| {
        format!("GStreamer element `{factory}` is missing (install gstreamer1.0-plugins-good/bad)")
    })
}

/// Width and height from a VP8 keyframe's header (RFC 6386 §9.1).
fn vp8_dimensions(frame: &[u8]) -> Option<(i32, i32)> {
    if frame.len() < 10 || frame[0] & 1 != 0 || frame[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let width = u16::from_le_bytes([frame[6], frame[7]]) & 0x3fff;
    let height = u16::from_le_bytes([frame[8], frame[9]]) & 0x3fff;
    Some((i32::from(width), i32::from(height)))
}

fn build(
    config: &RecorderConfig,
    codec: VideoCodec,
    keyframe: &[u8],
    audio: bool,
    stats: &Arc<RecorderStats>,
) -> Result<Pipe, String> {
    let pipeline = gst::Pipeline::new();
    let container = codec.container();
    let video_caps = match codec {
        VideoCodec::Vp8 => {
            let (width, height) = vp8_dimensions(keyframe).unwrap_or((640, 480));
            gst::Caps::builder("video/x-vp8")
                .field("width", width)
                .field("height", height)
                .field("framerate", gst::Fraction::new(0, 1))
                .build()
        }
        VideoCodec::H264 => gst::Caps::builder("video/x-h264")
            .field("stream-format", "byte-stream")
            .field("alignment", "au")
            .build(),
    };
    let video = appsrc(video_caps);
    let muxer = match container {
        Container::Webm => make("webmmux")?,
        Container::Mp4 => {
            let mux = make("mp4mux")?;
            // Fragmented: a file cut short by a crash still holds every finished fragment.
            mux.set_property("fragment-duration", 1000u32);
            mux
        }
    };
    let split = make("splitmuxsink")?;
    split.set_property("muxer", &muxer);
    split.set_property("max-size-time", config.segment.as_nanos() as u64);
    split.set_property("send-keyframe-requests", true);
    split.set_property(
        "location",
        config
            .dir
            .join(format!("%06d.{}", container.extension()))
            .to_string_lossy()
            .to_string(),
    );
    let video_queue = make("queue")?;
    pipeline
        .add_many([video.upcast_ref(), &video_queue, &split])
        .map_err(|e| e.to_string())?;
    let mut chain: Vec<gst::Element> = vec![video.clone().upcast()];
    if codec == VideoCodec::H264 {
        let parse = make("h264parse")?;
        pipeline.add(&parse).map_err(|e| e.to_string())?;
        chain.push(parse);
    }
    chain.push(video_queue.clone());
    gst::Element::link_many(&chain).map_err(|e| e.to_string())?;
    link_to_split(&video_queue, &split, "video")?;

    // splitmuxsink asks for a keyframe where it wants to cut: pass that on to the camera.
    let wish = stats.clone();
    if let Some(pad) = video.static_pad("src") {
        pad.add_probe(gst::PadProbeType::EVENT_UPSTREAM, move |_, info| {
            if let Some(gst::PadProbeData::Event(event)) = &info.data
                && event
                    .structure()
                    .is_some_and(|s| s.name() == "GstForceKeyUnit")
            {
                wish.want_keyframe();
            }
            gst::PadProbeReturn::Ok
        });
    }

    let audio_src = if audio {
        let src = appsrc(
            gst::Caps::builder("audio/x-opus")
                .field("channel-mapping-family", 0i32)
                .field("channels", 2i32)
                .field("rate", 48_000i32)
                .build(),
        );
        let parse = make("opusparse")?;
        let queue = make("queue")?;
        pipeline
            .add_many([src.upcast_ref(), &parse, &queue])
            .map_err(|e| e.to_string())?;
        gst::Element::link_many([src.upcast_ref(), &parse, &queue]).map_err(|e| e.to_string())?;
        link_to_split(&queue, &split, "audio_%u")?;
        Some(src)
    } else {
        None
    };
    let bus = pipeline.bus().ok_or("the pipeline has no bus")?;
    pipeline
        .set_state(gst::State::Playing)
        .map_err(|e| format!("the recording pipeline would not start: {e}"))?;
    Ok(Pipe {
        pipeline,
        video,
        audio: audio_src,
        bus,
        opened_at: None,
        fragment_start: 0,
        last_keyframe: 0,
        last_wish: None,
    })
}

fn appsrc(caps: gst::Caps) -> gst_app::AppSrc {
    gst_app::AppSrc::builder()
        .caps(&caps)
        .format(gst::Format::Time)
        .is_live(true)
        .do_timestamp(false)
        .stream_type(gst_app::AppStreamType::Stream)
        // The hand-off queue in front bounds memory; this only smooths bursts.
        .max_bytes(8 * 1024 * 1024)
        .block(false)
        .build()
}

fn link_to_split(from: &gst::Element, split: &gst::Element, pad: &str) -> Result<(), String> {
    let sink = split
        .request_pad_simple(pad)
        .ok_or_else(|| format!("splitmuxsink has no `{pad}` pad"))?;
    from.static_pad("src")
        .ok_or("no source pad")?
        .link(&sink)
        .map_err(|e| format!("linking to splitmuxsink: {e:?}"))?;
    Ok(())
}

/// Rewrites a segment a crash left unfinished: demuxes what is on disk and muxes it again,
/// so the container's index and duration are complete. Returns the playable duration.
pub(super) fn finalise(path: &Path) -> Result<Duration, RecorderError> {
    gst::init().map_err(|e| RecorderError::Init(e.to_string()))?;
    let container = Container::from_path(path)
        .ok_or_else(|| RecorderError::Init("not a segment file".into()))?;
    let fail = |e: String| RecorderError::Init(e);
    let tmp = path.with_extension(format!("{}.fixing", container.extension()));
    let pipeline = gst::Pipeline::new();
    let src = make("filesrc").map_err(fail)?;
    src.set_property("location", path.to_string_lossy().to_string());
    let parse = make("parsebin").map_err(fail)?;
    let mux = match container {
        Container::Webm => make("webmmux").map_err(fail)?,
        Container::Mp4 => make("mp4mux").map_err(fail)?,
    };
    let sink = make("filesink").map_err(fail)?;
    sink.set_property("location", tmp.to_string_lossy().to_string());
    pipeline
        .add_many([&src, &parse, &mux, &sink])
        .map_err(|e| fail(e.to_string()))?;
    src.link(&parse).map_err(|e| fail(e.to_string()))?;
    mux.link(&sink).map_err(|e| fail(e.to_string()))?;
    let end = Arc::new(std::sync::atomic::AtomicU64::new(0));
    // Timestamps continue the recording's clock: the file starts where its first one is.
    let begin = Arc::new(std::sync::atomic::AtomicU64::new(u64::MAX));
    let has_video = Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let pipeline = pipeline.downgrade();
        let mux = mux.clone();
        let end = end.clone();
        let begin = begin.clone();
        let has_video = has_video.clone();
        parse.connect_pad_added(move |_, pad| {
            let Some(pipeline) = pipeline.upgrade() else {
                return;
            };
            let caps = pad.current_caps().or_else(|| Some(pad.query_caps(None)));
            let Some(name) = caps
                .as_ref()
                .and_then(|c| c.structure(0))
                .map(|s| s.name().to_string())
            else {
                return;
            };
            let template = if name.starts_with("video/") {
                has_video.store(true, std::sync::atomic::Ordering::Relaxed);
                "video_%u"
            } else if name.starts_with("audio/") {
                "audio_%u"
            } else {
                return;
            };
            let Ok(queue) = make("queue") else { return };
            if pipeline.add(&queue).is_err() || queue.sync_state_with_parent().is_err() {
                return;
            }
            let Some(sink) = mux.request_pad_simple(template) else {
                return;
            };
            let end = end.clone();
            let begin = begin.clone();
            pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
                if let Some(gst::PadProbeData::Buffer(buffer)) = &info.data
                    && let Some(pts) = buffer.pts()
                {
                    let until = pts.nseconds() + buffer.duration().map_or(0, |d| d.nseconds());
                    end.fetch_max(until, std::sync::atomic::Ordering::Relaxed);
                    begin.fetch_min(pts.nseconds(), std::sync::atomic::Ordering::Relaxed);
                }
                gst::PadProbeReturn::Ok
            });
            let _ = pad.link(&queue.static_pad("sink").expect("queue sink"));
            let _ = queue.static_pad("src").expect("queue src").link(&sink);
        });
    }
    let bus = pipeline.bus().ok_or_else(|| fail("no bus".into()))?;
    pipeline
        .set_state(gst::State::Playing)
        .map_err(|e| fail(e.to_string()))?;
    let mut outcome = Err(fail("timed out".into()));
    for message in bus.iter_timed(gst::ClockTime::from_seconds(30)) {
        match message.view() {
            gst::MessageView::Eos(_) => {
                outcome = Ok(());
                break;
            }
            gst::MessageView::Error(e) => {
                outcome = Err(fail(e.error().to_string()));
                break;
            }
            _ => {}
        }
    }
    let _ = pipeline.set_state(gst::State::Null);
    let result = outcome.and_then(|()| {
        if !has_video.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(fail("no video in the file".into()));
        }
        let end = end.load(std::sync::atomic::Ordering::Relaxed);
        let begin = begin.load(std::sync::atomic::Ordering::Relaxed).min(end);
        std::fs::rename(&tmp, path)?;
        Ok(Duration::from_nanos(end - begin))
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vp8_keyframe_dimensions() {
        let mut frame = vec![0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a];
        frame.extend_from_slice(&640u16.to_le_bytes());
        frame.extend_from_slice(&(480u16 | 0x4000).to_le_bytes()); // scaling bits ignored
        assert_eq!(vp8_dimensions(&frame), Some((640, 480)));
        frame[0] |= 1; // an interframe has no dimensions
        assert_eq!(vp8_dimensions(&frame), None);
        assert_eq!(vp8_dimensions(&[0; 4]), None);
    }
}

/// The recorder fed real VP8 and Opus frames (encoded here by GStreamer) through the tap,
/// with arrival times as a camera would give them, but without waiting for the clock.
#[cfg(test)]
mod recording_tests {
    use super::*;
    use crate::recorder::{RecorderEvent, start};
    use gst_app::AppSink;

    /// Offers encoded video and audio to a tap in presentation order, with the arrival
    /// times and RTP timestamps a camera's frames would have, pausing `pace` after each.
    fn feed(
        tap: &mut RecorderTap,
        video: Vec<(u64, bool, Vec<u8>)>,
        audio: Vec<(u64, bool, Vec<u8>)>,
        codec: VideoCodec,
        t0: Instant,
        pace: Duration,
    ) {
        let mut frames: Vec<(u64, TrackKind, bool, Vec<u8>)> = video
            .into_iter()
            .map(|(pts, key, data)| (pts, TrackKind::Video, key, data))
            .chain(
                audio
                    .into_iter()
                    .map(|(pts, _, data)| (pts, TrackKind::Audio, false, data)),
            )
            .collect();
        frames.sort_by_key(|f| f.0);
        for (pts, kind, keyframe, data) in frames {
            let rate = if kind == TrackKind::Video {
                90_000
            } else {
                48_000
            };
            tap.offer(
                TapFrame {
                    kind,
                    video: (kind == TrackKind::Video).then_some(codec),
                    keyframe,
                    rtp_time: 7_000 + pts * rate / 1_000_000_000,
                    clock_rate: rate as u32,
                    arrival: t0 + Duration::from_nanos(pts),
                    data: data.into(),
                },
                None,
            );
            if !pace.is_zero() {
                std::thread::sleep(pace);
            }
        }
    }

    pub(super) fn encode_for_test(description: &str) -> Vec<(u64, bool, Vec<u8>)> {
        encode(description)
    }

    /// Encodes `seconds` of test video (keyframe every 2 s) or audio with GStreamer.
    fn encode(description: &str) -> Vec<(u64, bool, Vec<u8>)> {
        gst::init().unwrap();
        let pipeline = gst::parse::launch(description)
            .unwrap()
            .downcast::<gst::Pipeline>()
            .unwrap();
        let sink = pipeline
            .by_name("out")
            .unwrap()
            .downcast::<AppSink>()
            .unwrap();
        pipeline.set_state(gst::State::Playing).unwrap();
        let mut frames = Vec::new();
        while let Ok(sample) = sink.pull_sample() {
            let buffer = sample.buffer().unwrap();
            let map = buffer.map_readable().unwrap();
            frames.push((
                buffer.pts().unwrap().nseconds(),
                !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT),
                map.to_vec(),
            ));
        }
        pipeline.set_state(gst::State::Null).unwrap();
        frames
    }

    #[test]
    fn frames_become_keyframe_aligned_segments_of_vp8_and_opus() {
        let seconds = 13;
        let video = encode(&format!(
            "videotestsrc num-buffers={} ! video/x-raw,width=320,height=240,framerate=30/1 \
             ! vp8enc keyframe-max-dist=60 deadline=1 ! appsink name=out sync=false",
            seconds * 30
        ));
        let audio = encode(&format!(
            "audiotestsrc num-buffers={} samplesperbuffer=960 ! audio/x-raw,rate=48000,channels=2 \
             ! opusenc frame-size=20 ! appsink name=out sync=false",
            seconds * 50
        ));
        let dir = std::env::temp_dir().join(format!("wp-rec-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut config = RecorderConfig::new(&dir, Duration::from_secs(5));
        config.queue_frames = 4096;
        let (mut recording, mut tap) = start(config).unwrap();
        tap.tracks(true, true);
        let t0 = Instant::now();
        feed(&mut tap, video, audio, VideoCodec::Vp8, t0, Duration::ZERO);
        assert_eq!(
            recording
                .stats
                .frames_dropped
                .load(std::sync::atomic::Ordering::Relaxed),
            0
        );
        drop(tap);
        let mut segments = Vec::new();
        let end = loop {
            match recording
                .events
                .blocking_recv()
                .expect("the recorder reports its end")
            {
                RecorderEvent::Started {
                    video,
                    audio,
                    container,
                } => {
                    assert_eq!(
                        (video, audio, container),
                        (VideoCodec::Vp8, Some("opus"), Container::Webm)
                    );
                }
                RecorderEvent::SegmentClosed(s) => segments.push(s),
                other => break other,
            }
        };
        assert_eq!(end, RecorderEvent::Finished);
        // Cuts at the keyframes after 5 s: 0-6, 6-12, 12-13.
        assert_eq!(segments.len(), 3, "{segments:?}");
        let total: Duration = segments.iter().map(|s| s.duration).sum();
        assert!(
            total.abs_diff(Duration::from_secs(seconds)) < Duration::from_millis(200),
            "{total:?}"
        );
        for (i, segment) in segments.iter().enumerate() {
            assert_eq!(segment.index, i as u32);
            assert_eq!(segment.path, dir.join(format!("{i:06}.webm")));
            // Each file plays on its own: it demuxes to VP8 starting at a keyframe, and Opus.
            let probe = encode(&format!(
                "filesrc location={} ! matroskademux name=d d.video_0 ! appsink name=out sync=false",
                segment.path.display()
            ));
            assert!(
                probe.first().is_some_and(|f| f.1),
                "segment {i} starts with a keyframe"
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn h264_and_opus_become_fragmented_mp4_segments() {
        let dir = std::env::temp_dir().join(format!("wp-rec-h264-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let source = dir.join("source.mp4");
        let ok = std::process::Command::new("ffmpeg")
            .args(["-loglevel", "error", "-y", "-f", "lavfi", "-i"])
            .arg("testsrc2=size=320x240:rate=30:duration=9")
            .args([
                "-c:v",
                "libx264",
                "-profile:v",
                "baseline",
                "-g",
                "60",
                "-keyint_min",
                "60",
            ])
            .args(["-sc_threshold", "0", "-bf", "0", "-pix_fmt", "yuv420p"])
            .arg(&source)
            .status()
            .expect("ffmpeg runs (scripts/setup.sh installs it for the tests)");
        assert!(ok.success());
        let video = encode(&format!(
            "filesrc location={} ! qtdemux ! h264parse \
             ! video/x-h264,stream-format=byte-stream,alignment=au ! appsink name=out sync=false",
            source.display()
        ));
        let audio = encode(
            "audiotestsrc num-buffers=450 samplesperbuffer=960 ! audio/x-raw,rate=48000,channels=2 \
             ! opusenc frame-size=20 ! appsink name=out sync=false",
        );
        let out = dir.join("rec");
        let (mut recording, mut tap) =
            start(RecorderConfig::new(&out, Duration::from_secs(4))).unwrap();
        tap.tracks(true, true);
        let t0 = Instant::now();
        // Real time is not needed, but the hand-off queue is bounded.
        feed(
            &mut tap,
            video,
            audio,
            VideoCodec::H264,
            t0,
            Duration::from_micros(300),
        );
        drop(tap);
        let mut segments = Vec::new();
        loop {
            match recording
                .events
                .blocking_recv()
                .expect("the recorder reports its end")
            {
                RecorderEvent::Started {
                    video, container, ..
                } => {
                    assert_eq!((video, container), (VideoCodec::H264, Container::Mp4));
                }
                RecorderEvent::SegmentClosed(s) => segments.push(s),
                RecorderEvent::Finished => break,
                other => panic!("{other:?}"),
            }
        }
        assert!(segments.len() >= 2, "{segments:?}");
        for segment in &segments {
            assert_eq!(segment.path.extension().unwrap(), "mp4");
            let video = encode(&format!(
                "filesrc location={} ! qtdemux name=d d.video_0 ! appsink name=out sync=false",
                segment.path.display()
            ));
            assert!(video.first().is_some_and(|f| f.1), "starts with a keyframe");
            let audio = encode(&format!(
                "filesrc location={} ! qtdemux name=d d.audio_0 ! appsink name=out sync=false",
                segment.path.display()
            ));
            assert!(!audio.is_empty(), "has Opus audio");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[cfg(test)]
mod keyframe_wish_probe {
    use super::*;
    use crate::recorder::{RecorderEvent, start};

    /// What a run of the recorder saw: the frames after which it wished for a keyframe,
    /// and how many segments it closed.
    struct Run {
        wishes: Vec<usize>,
        segments: usize,
    }

    /// Records `seconds` of VP8 (a keyframe only at the start) in 2 s segments, offered at
    /// their pace; `keyframe(i, encoded_as_key, asked)` decides which frames are flagged as
    /// keyframes, `asked` telling whether the recorder wished for one after the last frame.
    /// The muxer reads only the flags, so a delta frame's bytes can stand in for a keyframe.
    fn record(seconds: u32, mut keyframe: impl FnMut(usize, bool, bool) -> bool) -> Run {
        let video = super::recording_tests::encode_for_test(&format!(
            "videotestsrc num-buffers={} ! video/x-raw,width=320,height=240,framerate=30/1 \
             ! vp8enc keyframe-max-dist=1000 deadline=1 ! appsink name=out sync=false",
            seconds * 30
        ));
        let dir = std::env::temp_dir().join(format!("wp-wish-{}-{seconds}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (mut recording, mut tap) =
            start(RecorderConfig::new(&dir, Duration::from_secs(2))).unwrap();
        tap.tracks(false, true);
        let t0 = Instant::now();
        let (mut wishes, mut asked) = (Vec::new(), false);
        for (i, (pts, key, data)) in video.into_iter().enumerate() {
            tap.offer(
                TapFrame {
                    kind: TrackKind::Video,
                    video: Some(VideoCodec::Vp8),
                    keyframe: keyframe(i, key, asked),
                    rtp_time: pts * 90_000 / 1_000_000_000,
                    clock_rate: 90_000,
                    arrival: t0 + Duration::from_nanos(pts),
                    data: data.into(),
                },
                None,
            );
            std::thread::sleep(Duration::from_millis(2));
            asked = tap.take_keyframe_wish();
            if asked {
                wishes.push(i);
            }
        }
        drop(tap);
        let mut segments = 0;
        while let Some(e) = recording.events.blocking_recv() {
            match e {
                RecorderEvent::SegmentClosed(_) => segments += 1,
                RecorderEvent::Finished | RecorderEvent::Failed { .. } => break,
                _ => {}
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        Run { wishes, segments }
    }

    #[test]
    fn splitmuxsink_asks_for_keyframes_where_it_wants_to_cut() {
        // A camera that ignores the wishes: only the encoder's own keyframe.
        let run = record(8, |_, key, _| key);
        assert!(
            run.wishes.len() > 1,
            "keyframe wishes at frames {:?}",
            run.wishes
        );
    }

    /// A camera that sends keyframes only when asked (Chromium's encoder does), and once on
    /// its own just before a cut is due: the recorder keeps asking until a keyframe comes
    /// at or after the due time, so every segment still gets cut near its length.
    #[test]
    fn a_keyframe_just_before_the_cut_does_not_stop_the_cuts() {
        // Frame 52 (1.73 s): the camera's own keyframe, 270 ms before the first cut is due.
        let run = record(6, |i, first, asked| first || i == 52 || asked);
        // 6 s in 2 s segments: cuts near 2 s and 4 s, and the rest at the end.
        assert!(
            run.segments >= 3,
            "{} segments for 6 s of 2 s segments",
            run.segments
        );
    }
}
