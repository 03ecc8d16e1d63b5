//! What the recording service keeps while the process runs: the recordings in progress (by
//! stream session), the local backlog's size, the upload slots, the tasks a shutdown waits
//! for, and the figures `/metrics` shows. No policy lives here (that is
//! `recordings::service`); this is the shared state it needs, held by [`AppState`].
//!
//! [`AppState`]: crate::state::AppState

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;
use watchpost_media::recorder::RecorderStats;

/// Uploads running at once: enough to drain a backlog quickly, few enough not to starve
/// the live traffic of bandwidth.
const UPLOAD_SLOTS: usize = 4;

#[derive(Default, Debug)]
pub struct RecordingCounters {
    pub segments_written: AtomicU64,
    pub segments_uploaded: AtomicU64,
    pub upload_failures: AtomicU64,
    /// Segments refused because the local backlog was full.
    pub segments_refused: AtomicU64,
    pub recordings_failed: AtomicU64,
    /// Frames the recorders dropped, from recordings that have ended.
    pub frames_dropped_finished: AtomicU64,
}

/// One recording in progress.
#[derive(Clone)]
pub struct ActiveRecording {
    pub recording_id: String,
    pub stats: Arc<RecorderStats>,
}

#[derive(Clone)]
pub struct RecordingRuntime {
    inner: Arc<Inner>,
}

/// A camera's motion, as recording sees it: segments overlapping
/// `[since − pre-roll, until]` are kept (`until` is open while motion is).
#[derive(Debug, Clone, Default)]
pub struct MotionWindow {
    pub open_events: Vec<String>,
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Last motion end + post-roll, once no motion is open.
    pub until: Option<chrono::DateTime<chrono::Utc>>,
    /// The stream session the server opened for this motion, ended after the post-roll.
    pub session_id: Option<String>,
    /// A stream is being opened for this motion: of two motion starts at once, one opens
    /// it (the other's session would never be ended, as only one id is kept).
    pub opening: bool,
}

impl MotionWindow {
    /// Whether a segment spanning `[start, end]` is kept, given `pre_roll`.
    pub fn covers(
        &self,
        start: chrono::DateTime<chrono::Utc>,
        end: chrono::DateTime<chrono::Utc>,
        pre_roll: chrono::Duration,
    ) -> bool {
        let Some(since) = self.since else {
            return false;
        };
        end >= since - pre_roll && self.until.is_none_or(|until| start <= until)
    }
}

struct Inner {
    dir: PathBuf,
    motion: Mutex<HashMap<String, MotionWindow>>,
    active: Mutex<HashMap<String, ActiveRecording>>,
    backlog_bytes: AtomicU64,
    counters: RecordingCounters,
    upload_slots: Semaphore,
    tasks: TaskTracker,
}

impl RecordingRuntime {
    pub fn new(dir: PathBuf) -> Self {
        Self {
            inner: Arc::new(Inner {
                dir,
                active: Mutex::new(HashMap::new()),
                motion: Mutex::new(HashMap::new()),
                backlog_bytes: AtomicU64::new(0),
                counters: RecordingCounters::default(),
                upload_slots: Semaphore::new(UPLOAD_SLOTS),
                tasks: TaskTracker::new(),
            }),
        }
    }

    /// `MEDIA_RECORDINGS_DIR`: one directory per recording holds its local segments.
    pub fn dir(&self) -> &PathBuf {
        &self.inner.dir
    }

    pub fn counters(&self) -> &RecordingCounters {
        &self.inner.counters
    }

    fn active_map(&self) -> std::sync::MutexGuard<'_, HashMap<String, ActiveRecording>> {
        self.inner.active.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a recording for a stream; false if the stream already has one.
    pub fn begin(&self, stream_id: &str, recording: ActiveRecording) -> bool {
        let mut active = self.active_map();
        if active.contains_key(stream_id) {
            return false;
        }
        active.insert(stream_id.to_string(), recording);
        true
    }

    /// Reads or changes a camera's motion window (created empty on first use).
    pub fn with_motion<T>(&self, camera_id: &str, f: impl FnOnce(&mut MotionWindow) -> T) -> T {
        let mut motion = self.inner.motion.lock().unwrap_or_else(|p| p.into_inner());
        f(motion.entry(camera_id.to_string()).or_default())
    }

    /// Every camera's open motion event ids (for the sweeper to notice events closed
    /// elsewhere, e.g. as stale).
    pub fn open_motion_events(&self) -> Vec<(String, String)> {
        let motion = self.inner.motion.lock().unwrap_or_else(|p| p.into_inner());
        motion
            .iter()
            .flat_map(|(camera, w)| w.open_events.iter().map(|e| (camera.clone(), e.clone())))
            .collect()
    }

    /// A copy of a camera's motion window, if it has one.
    pub fn motion_of(&self, camera_id: &str) -> Option<MotionWindow> {
        let motion = self.inner.motion.lock().unwrap_or_else(|p| p.into_inner());
        motion.get(camera_id).cloned()
    }

    /// The sessions the server opened for motion whose post-roll ended before `now`; each
    /// is handed out once. Windows stay a while longer: the last segments' keep decisions
    /// still need them.
    pub fn motion_sessions_to_end(&self, now: chrono::DateTime<chrono::Utc>) -> Vec<String> {
        let mut motion = self.inner.motion.lock().unwrap_or_else(|p| p.into_inner());
        motion.retain(|_, w| {
            !w.open_events.is_empty()
                || w.until
                    .is_none_or(|u| u + chrono::Duration::minutes(10) > now)
        });
        motion
            .values_mut()
            .filter(|w| w.open_events.is_empty() && w.until.is_some_and(|u| u < now))
            .filter_map(|w| w.session_id.take())
            .collect()
    }

    pub fn is_recording(&self, stream_id: &str) -> bool {
        self.active_map().contains_key(stream_id)
    }

    /// Forgets a stream's recording (when it has ended), keeping its dropped-frame count.
    pub fn end(&self, stream_id: &str, recording_id: &str) {
        let mut active = self.active_map();
        if active
            .get(stream_id)
            .is_some_and(|a| a.recording_id == recording_id)
            && let Some(done) = active.remove(stream_id)
        {
            self.inner.counters.frames_dropped_finished.fetch_add(
                done.stats.frames_dropped.load(Ordering::Relaxed),
                Ordering::Relaxed,
            );
        }
    }

    pub fn active_count(&self) -> usize {
        self.active_map().len()
    }

    pub fn active_recording_ids(&self) -> Vec<String> {
        self.active_map()
            .values()
            .map(|a| a.recording_id.clone())
            .collect()
    }

    /// Frames dropped by every recorder since start.
    pub fn frames_dropped(&self) -> u64 {
        let live: u64 = self
            .active_map()
            .values()
            .map(|a| a.stats.frames_dropped.load(Ordering::Relaxed))
            .sum();
        live + self
            .inner
            .counters
            .frames_dropped_finished
            .load(Ordering::Relaxed)
    }

    /// Bytes of closed segments on disk waiting for upload.
    pub fn backlog_bytes(&self) -> u64 {
        self.inner.backlog_bytes.load(Ordering::Relaxed)
    }

    pub fn add_backlog(&self, bytes: u64) {
        self.inner.backlog_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn remove_backlog(&self, bytes: u64) {
        let _ = self
            .inner
            .backlog_bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some(b.saturating_sub(bytes))
            });
    }

    pub fn upload_slots(&self) -> &Semaphore {
        &self.inner.upload_slots
    }

    /// Recording drivers and uploads run here, so a shutdown can wait for them.
    pub fn tasks(&self) -> &TaskTracker {
        &self.inner.tasks
    }
}
