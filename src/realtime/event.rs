//! Socket.IO event names, each defined once. Clients match on these strings; they are part
//! of the wire format.

/// Server → camera: a command to act on (re-sent until answered or expired).
pub const COMMAND_RECEIVED: &str = "command:received";
/// Server → source client and owner: a command changed status.
pub const COMMAND_STATUS: &str = "command:status";
/// Camera → server: the answer to a command.
pub const COMMAND_ACK: &str = "command:ack";
/// Device ↔ device (relayed): WebRTC signalling in legacy media mode.
pub const WEBRTC_SIGNAL: &str = "webrtc:signal";
/// Device → server: presence ping, answered with the server time.
pub const HEARTBEAT: &str = "heartbeat";
pub const STREAM_REQUESTED: &str = "stream:requested";
pub const STREAM_STARTED: &str = "stream:started";
pub const STREAM_ENDED: &str = "stream:ended";
pub const MOTION_DETECTED: &str = "motion:detected";
pub const MOTION_ENDED: &str = "motion:ended";
/// Server → owner's user sessions: a device came online or went offline (its first socket
/// connected or its last one closed). `{deviceId, online, lastSeenAt}`.
pub const DEVICE_PRESENCE: &str = "device:presence";
