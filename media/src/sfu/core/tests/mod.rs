//! The core in simulated time, against real str0m peers over an in-memory link.

mod malformed;

use std::sync::atomic::Ordering;
use std::time::Duration;

use str0m::format::Codec;
use str0m::media::MediaKind;

use super::sim::{ClientId, Sim, frame_id, owned_by, vp8_frame};
use super::{Output, RouteUpdate};
use crate::sfu::{MediaEvent, SfuError};
use str0m::net::Protocol;

const FRAME: Duration = Duration::from_millis(33);
const LAYER_L: u8 = b'l';
const LAYER_H: u8 = b'h';

/// Sends `count` VP8 frames 33 ms apart, the first a keyframe if `keyframe_first`, and
/// returns them. Frame sizes vary up to several packets.
fn stream(
    sim: &mut Sim,
    camera: ClientId,
    first: u32,
    count: u32,
    keyframe_first: bool,
) -> Vec<Vec<u8>> {
    let mut sent = Vec::new();
    for n in first..first + count {
        let keyframe = keyframe_first && n == first;
        let frame = vp8_frame(
            keyframe,
            0,
            n,
            if keyframe {
                4000
            } else {
                300 + (n as usize * 37) % 900
            },
        );
        sim.send_video(camera, None, &frame);
        sent.push(frame);
        sim.run_for(FRAME);
    }
    sent
}

fn received_video(sim: &Sim, client: ClientId) -> Vec<Vec<u8>> {
    sim.clients[client]
        .video_frames()
        .iter()
        .map(|f| f.data.to_vec())
        .collect()
}

/// Asserts the RTP sequence numbers of one stream go up by exactly one, with no gap.
fn assert_contiguous(seqs: &[u16], what: &str) {
    assert!(seqs.len() > 10, "{what}: too few packets ({})", seqs.len());
    for pair in seqs.windows(2) {
        assert_eq!(
            pair[1],
            pair[0].wrapping_add(1),
            "{what}: sequence gap in {seqs:?}"
        );
    }
}

#[test]
fn publish_reaches_two_subscribers_byte_exact() {
    let mut sim = Sim::new(Duration::ZERO);
    let camera = sim.publisher("room", "cam", &[]);
    assert!(sim.events.contains(&MediaEvent::PublisherConnected {
        room: "room".into()
    }));
    let a = sim.viewer("room", "a");
    let b = sim.viewer("room", "b");
    let mut video = Vec::new();
    let mut audio = Vec::new();
    for n in 0..60u32 {
        // A keyframe first, then deltas of varied sizes (some split over several packets).
        let frame = vp8_frame(
            n == 0,
            0,
            n,
            if n == 0 {
                5000
            } else {
                200 + (n as usize * 97) % 2500
            },
        );
        sim.send_video(camera, None, &frame);
        video.push(frame);
        let packet: Vec<u8> = (0..80).map(|i| (i as u32 * 7 + n) as u8).collect();
        sim.send_audio(camera, &packet);
        audio.push(packet);
        sim.run_for(Duration::from_millis(20));
    }
    sim.run_for(Duration::from_millis(200));
    for viewer in [a, b] {
        assert_eq!(received_video(&sim, viewer), video, "viewer {viewer} video");
        let got_audio: Vec<Vec<u8>> = sim.clients[viewer]
            .audio_frames()
            .iter()
            .map(|f| f.data.to_vec())
            .collect();
        assert_eq!(got_audio, audio, "viewer {viewer} audio");
    }
    assert_eq!(
        sim.counters.frames_forwarded.load(Ordering::Relaxed),
        2 * 120
    );
    let described = sim.describe("room");
    assert_eq!(described.len(), 3);
    assert_eq!(described[0].role, "publisher");
    assert!(described.iter().all(|p| p.connected));
    assert!(described[0].bytes_in > 60 * 200);
}

/// The DTLS identity is made once, not per peer on the media loop: every answer pins the
/// same certificate, and peers still connect and get media through it (the test above).
#[test]
fn every_answer_presents_the_one_dtls_identity_of_the_server() {
    let fingerprint = |answer: &str| {
        answer
            .lines()
            .find(|l| l.starts_with("a=fingerprint:sha-256 "))
            .expect("a SHA-256 fingerprint")
            .to_string()
    };
    let mut sim = Sim::new(Duration::ZERO);
    let offer = sim.viewer_offer();
    let first = fingerprint(&sim.answer_viewer("room", "a", &offer));
    let second = fingerprint(&sim.answer_viewer("room", "b", &offer));
    sim.leave("room", "a");
    let third = fingerprint(&sim.answer_viewer("other", "c", &offer));
    assert_eq!(first, second);
    assert_eq!(first, third);
    // Made when the SFU starts, not built in: another server presents its own.
    let mut other = Sim::new(Duration::ZERO);
    assert_ne!(
        first,
        fingerprint(&other.answer_viewer("room", "a", &offer))
    );
}

#[test]
fn video_starts_on_a_keyframe() {
    let mut sim = Sim::new(Duration::ZERO);
    let camera = sim.publisher("room", "cam", &[]);
    let viewer = sim.viewer("room", "v");
    // The viewer connected: the camera was asked for a keyframe.
    assert!(!sim.clients[camera].keyframe_requests.is_empty());
    // Deltas alone are useless to a decoder that has nothing: none is forwarded.
    stream(&mut sim, camera, 0, 10, false);
    assert!(received_video(&sim, viewer).is_empty());
    let sent = stream(&mut sim, camera, 10, 10, true);
    let got = received_video(&sim, viewer);
    assert_eq!(
        got, sent,
        "the stream starts at the keyframe, deltas follow"
    );
    assert!(sim.clients[viewer].video_frames()[0].keyframe);
}

#[test]
fn keyframe_requests_are_rate_limited() {
    let mut sim = Sim::new(Duration::ZERO);
    let camera = sim.publisher("room", "cam", &[]);
    let viewers = [sim.viewer("room", "a"), sim.viewer("room", "b")];
    stream(&mut sim, camera, 0, 5, true);
    let before = sim.clients[camera].keyframe_requests.len();
    let counted_before = sim.counters.keyframe_requests.load(Ordering::Relaxed);
    // Both viewers ask every 10 ms for a second: 200 requests.
    let start = sim.now;
    for _ in 0..100 {
        for v in viewers {
            sim.viewer_requests_keyframe(v);
        }
        sim.run_for(Duration::from_millis(10));
    }
    let requests: Vec<_> = sim.clients[camera].keyframe_requests[before..].to_vec();
    // One every 250 ms at most: 4 in a second, 5 if the window straddles the edges.
    assert!(
        (3..=5).contains(&requests.len()),
        "camera got {} keyframe requests in {:?}",
        requests.len(),
        sim.now - start
    );
    for pair in requests.windows(2) {
        assert!(
            pair[1].0 - pair[0].0 >= Duration::from_millis(250),
            "{requests:?}"
        );
    }
    let counted = sim.counters.keyframe_requests.load(Ordering::Relaxed) - counted_before;
    assert_eq!(counted as usize, requests.len());
}

#[test]
fn a_publisher_silent_for_8_s_is_dropped() {
    let mut sim = Sim::new(Duration::ZERO);
    let camera = sim.publisher("room", "cam", &[]);
    let viewer = sim.viewer("room", "v");
    stream(&mut sim, camera, 0, 30, true);
    // The camera's network dies: nothing more arrives from it.
    sim.clients[camera].link_up = false;
    sim.run_for(Duration::from_millis(7_500));
    assert!(
        sim.events_left().is_empty(),
        "dropped before 8 s of silence"
    );
    assert_eq!(sim.describe("room").len(), 2);
    sim.run_for(Duration::from_millis(2_000));
    assert_eq!(
        sim.events_left(),
        vec![&MediaEvent::PublisherLeft {
            room: "room".into(),
            reason: "publisher disconnected".into()
        }]
    );
    let left = sim.describe("room");
    assert_eq!(left.len(), 1, "only the viewer is left");
    assert_eq!(left[0].role, "subscriber");
    assert!(sim.clients[viewer].rtc.is_alive());
}

#[test]
fn never_connected_transports_are_dropped_after_30_s() {
    let mut sim = Sim::new(Duration::ZERO);
    let camera = sim.publisher("room", "cam", &[]);
    // A viewer that signalled and went away before its first ICE check.
    let index = sim.clients.len();
    sim.run_for(Duration::from_millis(10));
    let answer_only = sim
        .core
        .join(sim.now, "room", "ghost", owned_by("ghost"), false, &{
            let mut rtc = str0m::Rtc::builder().build(sim.now);
            let mut change = rtc.sdp_api();
            change.add_media(
                MediaKind::Video,
                str0m::media::Direction::RecvOnly,
                None,
                None,
                None,
            );
            change.apply().expect("offer").0.to_sdp_string()
        });
    assert!(answer_only.is_ok());
    assert_eq!(sim.clients.len(), index);
    assert_eq!(sim.describe("room").len(), 2);
    // The live camera keeps talking meanwhile (RTCP, consent checks).
    sim.run_for(Duration::from_secs(29));
    assert_eq!(sim.describe("room").len(), 2);
    sim.run_for(Duration::from_secs(2));
    assert_eq!(sim.describe("room").len(), 1);
    assert!(sim.events.contains(&MediaEvent::SubscriberLeft {
        room: "room".into(),
        participant: "ghost".into()
    }));
    assert!(sim.clients[camera].rtc.is_alive());
    assert!(sim.events_left().is_empty());
}

#[test]
fn reconnect_within_the_grace_keeps_viewer_streams_continuous() {
    let mut sim = Sim::new(Duration::from_secs(5));
    let first = sim.publisher("room", "cam", &[]);
    let viewer = sim.viewer("room", "v");
    let vp8 = sim.clients[viewer].pt_of(MediaKind::Video, Codec::Vp8);
    let mut sent = stream(&mut sim, first, 0, 30, true);
    let before = sim.clients[viewer].rtp_with_pt(vp8);
    let last_before = *before.last().expect("video before");
    let lost_at = sim.now;
    sim.clients[first].link_up = false;
    // Silence drops the camera after ~8 s; viewers wait for it.
    sim.run_for(Duration::from_secs(10));
    assert!(sim.events_left().is_empty());
    assert_eq!(
        sim.describe("room").len(),
        1,
        "old camera gone, viewer stays"
    );
    // The camera comes back on a new transport within the grace.
    let second = sim.publisher("room", "cam", &[]);
    let back_at = sim.now;
    sent.extend(stream(&mut sim, second, 1000, 30, true));
    sim.run_for(Duration::from_secs(7));
    assert!(
        sim.events_left().is_empty(),
        "the room lives on: {:?}",
        sim.events
    );
    assert!(
        !sim.events
            .iter()
            .any(|e| matches!(e, MediaEvent::SubscriberLeft { .. })),
        "the viewer was never dropped"
    );
    assert_eq!(
        received_video(&sim, viewer),
        sent,
        "frames from both transports, in order"
    );
    let all = sim.clients[viewer].rtp_with_pt(vp8);
    let after = &all[before.len()..];
    assert!(after.len() >= 30);
    assert!(
        all.iter().all(|r| r.ssrc == last_before.ssrc),
        "one SSRC throughout"
    );
    let seqs: Vec<u16> = all.iter().map(|r| r.seq).collect();
    assert_contiguous(&seqs, "viewer video across the reconnect");
    // Time moves on by the wall-clock gap, not by the new camera's random base.
    let jump = after[0].timestamp.wrapping_sub(last_before.timestamp) as u64;
    let gap = (back_at - lost_at).as_secs_f64() * 90_000.0;
    assert!(
        (jump as f64 - gap).abs() < 90_000.0 * 0.5,
        "timestamp jump {jump} for a gap of {gap:.0} ticks"
    );
    for pair in all.windows(2) {
        let step = pair[1].timestamp.wrapping_sub(pair[0].timestamp);
        assert!(
            step < 90_000 * 12,
            "timestamps only move forward by sane steps"
        );
    }
}

#[test]
fn a_room_ends_when_the_camera_misses_the_grace() {
    let mut sim = Sim::new(Duration::from_secs(2));
    let camera = sim.publisher("room", "cam", &[]);
    sim.viewer("room", "v");
    stream(&mut sim, camera, 0, 10, true);
    sim.clients[camera].link_up = false;
    sim.run_for(Duration::from_secs(10));
    assert!(sim.events_left().is_empty(), "within silence + grace");
    sim.run_for(Duration::from_secs(2));
    assert_eq!(
        sim.events_left(),
        vec![&MediaEvent::PublisherLeft {
            room: "room".into(),
            reason: "publisher did not reconnect".into()
        }]
    );
}

#[test]
fn simulcast_layers_switch_only_at_keyframes() {
    let mut sim = Sim::new(Duration::ZERO);
    let camera = sim.publisher("room", "cam", &["l", "h"]);
    let viewer = sim.viewer("room", "v");
    // The low layer starts with a keyframe; the high one only sends a keyframe when asked.
    let mut sent_h_deltas_before_key = 0;
    let mut next_key = [true, false];
    for n in 0..150u32 {
        for (i, (rid, layer, size)) in [("l", LAYER_L, 250), ("h", LAYER_H, 1100)]
            .into_iter()
            .enumerate()
        {
            let requested = sim.clients[camera]
                .keyframe_requests
                .iter()
                .any(|(_, r)| r.as_deref() == Some(rid));
            let keyframe = std::mem::take(&mut next_key[i]);
            if layer == LAYER_H && !keyframe && !requested {
                sent_h_deltas_before_key += 1;
            }
            sim.send_video(camera, Some(rid), &vp8_frame(keyframe, layer, n, size));
        }
        // Answer keyframe requests on the next frame of that layer, as an encoder does.
        let asked: Vec<_> = sim.clients[camera].keyframe_requests.drain(..).collect();
        for (_, rid) in asked {
            match rid.as_deref() {
                Some("l") => next_key[0] = true,
                Some("h") => next_key[1] = true,
                _ => next_key = [true, true],
            }
        }
        sim.run_for(FRAME);
    }
    assert!(sent_h_deltas_before_key > 0);
    let frames = sim.clients[viewer].video_frames();
    assert!(!frames.is_empty());
    assert!(frames[0].keyframe && frame_id(&frames[0].data).0 == LAYER_L);
    let mut switches = 0;
    for pair in frames.windows(2) {
        let (from, to) = (frame_id(&pair[0].data).0, frame_id(&pair[1].data).0);
        if from != to {
            switches += 1;
            assert!(
                pair[1].keyframe,
                "switched from {from} to {to} on a delta frame"
            );
        }
    }
    assert!(switches >= 1, "the viewer never climbed to the high layer");
    assert_eq!(frame_id(&frames.last().expect("frames").data).0, LAYER_H);
    let described = sim.describe("room");
    let v = described.iter().find(|p| p.id == "v").expect("viewer");
    assert_eq!(v.layer.as_deref(), Some("h"));
    assert_eq!(v.layer_switches, Some(switches));
    // Frames arrive in order, none duplicated; at a switch the new layer's keyframe may be
    // the same picture as the old layer's last frame.
    let ids: Vec<(u8, u32)> = frames.iter().map(|f| frame_id(&f.data)).collect();
    for w in ids.windows(2) {
        let in_order = if w[0].0 == w[1].0 {
            w[1].1 == w[0].1 + 1
        } else {
            w[1].1 >= w[0].1
        };
        assert!(in_order, "{ids:?}");
    }
}

#[test]
fn a_viewer_leaving_does_not_disturb_the_others() {
    let mut sim = Sim::new(Duration::ZERO);
    let camera = sim.publisher("room", "cam", &[]);
    let viewers = [
        sim.viewer("room", "a"),
        sim.viewer("room", "b"),
        sim.viewer("room", "c"),
    ];
    let vp8 = sim.clients[viewers[0]].pt_of(MediaKind::Video, Codec::Vp8);
    let mut sent = stream(&mut sim, camera, 0, 30, true);
    let requests_before = sim.clients[camera].keyframe_requests.len();
    sim.core.leave(sim.now, "room", "b");
    sent.extend(stream(&mut sim, camera, 30, 30, false));
    sim.run_for(Duration::from_millis(200));
    assert!(sim.events.contains(&MediaEvent::SubscriberLeft {
        room: "room".into(),
        participant: "b".into()
    }));
    assert!(!sim.clients[viewers[1]].rtc.is_alive(), "b got a close");
    for v in [viewers[0], viewers[2]] {
        assert_eq!(received_video(&sim, v), sent, "viewer {v}");
        let seqs: Vec<u16> = sim.clients[v]
            .rtp_with_pt(vp8)
            .iter()
            .map(|r| r.seq)
            .collect();
        assert_contiguous(&seqs, "remaining viewer");
    }
    assert_eq!(
        sim.clients[camera].keyframe_requests.len(),
        requests_before,
        "no keyframe request because someone left"
    );
    let ids: Vec<String> = sim.describe("room").into_iter().map(|p| p.id).collect();
    assert_eq!(ids, ["cam", "a", "c"]);
}

#[test]
fn closing_a_device_hangs_up_its_transports_only() {
    let mut sim = Sim::new(Duration::from_secs(5));
    let camera = sim.publisher("room", "cam", &[]);
    let revoked = sim.viewer("room", "phone");
    let kept = sim.viewer("room", "tablet");
    let mut sent = stream(&mut sim, camera, 0, 10, true);
    // A device's transports in another room are left alone when the close names a room.
    sim.core.close_device(sim.now, "phone", Some("elsewhere"));
    sim.run_for(Duration::from_millis(100));
    assert!(sim.clients[revoked].rtc.is_alive());
    sim.core.close_device(sim.now, "phone", None);
    sent.extend(stream(&mut sim, camera, 10, 10, false));
    sim.run_for(Duration::from_millis(200));
    assert!(
        !sim.clients[revoked].rtc.is_alive(),
        "the phone got a close"
    );
    assert!(sim.events.contains(&MediaEvent::SubscriberLeft {
        room: "room".into(),
        participant: "phone".into()
    }));
    assert_eq!(
        received_video(&sim, kept),
        sent,
        "the tablet keeps watching"
    );
    // The camera's device revoked: its hang-up ends the room at once, grace or not.
    sim.core.close_device(sim.now, "cam", Some("room"));
    sim.run_for(Duration::from_millis(200));
    assert!(
        !sim.clients[camera].rtc.is_alive(),
        "the camera got a close"
    );
    assert!(sim.events.contains(&MediaEvent::PublisherLeft {
        room: "room".into(),
        reason: "publisher hung up".into()
    }));
    let ids: Vec<String> = sim.describe("room").into_iter().map(|p| p.id).collect();
    assert_eq!(ids, ["tablet"]);
}

#[test]
fn shutdown_closes_every_peer_and_refuses_joins() {
    let mut sim = Sim::new(Duration::from_secs(5));
    let camera = sim.publisher("room", "cam", &[]);
    let viewer = sim.viewer("room", "v");
    // A second room whose camera is lost and within its grace.
    let lost = sim.publisher("other", "cam2", &[]);
    stream(&mut sim, camera, 0, 5, true);
    sim.clients[lost].link_up = false;
    sim.run_for(Duration::from_secs(10));
    assert_eq!(sim.describe("other").len(), 0);
    sim.core.shutdown(sim.now);
    sim.core.shutdown(sim.now); // harmless twice
    sim.run_for(Duration::from_millis(100));
    let mut left: Vec<_> = sim.events_left().into_iter().cloned().collect();
    left.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
    assert_eq!(
        left,
        vec![
            MediaEvent::PublisherLeft {
                room: "other".into(),
                reason: "media server stopping".into()
            },
            MediaEvent::PublisherLeft {
                room: "room".into(),
                reason: "media server stopping".into()
            },
        ]
    );
    assert!(sim.describe("room").is_empty());
    assert!(
        !sim.clients[camera].rtc.is_alive(),
        "the camera heard the close"
    );
    assert!(
        !sim.clients[viewer].rtc.is_alive(),
        "the viewer heard the close"
    );
    let claimed = sim
        .routes
        .iter()
        .filter(|r| matches!(r, RouteUpdate::Claim(_)))
        .count();
    let released = sim
        .routes
        .iter()
        .filter(|r| matches!(r, RouteUpdate::Release(_)))
        .count();
    assert_eq!((claimed, released), (3, 3), "every ufrag route is released");
    assert!(matches!(sim.join_error("room", "late"), SfuError::Stopped));
}

/// A camera and three viewers in one room, the camera's first keyframe (frame 0) sent and
/// given 100 ms to arrive.
fn camera_and_three_viewers_on_a_keyframe() -> (Sim, ClientId, Vec<ClientId>) {
    let mut sim = Sim::new(Duration::from_secs(5));
    let camera = sim.publisher("room", "camera", &[]);
    let viewers: Vec<ClientId> = (0..3)
        .map(|i| sim.viewer("room", &format!("viewer-{i}")))
        .collect();
    sim.send_video(camera, None, &vp8_frame(true, 0, 0, 1_100));
    sim.run_for(Duration::from_millis(100));
    (sim, camera, viewers)
}

/// The forwarding micro-benchmark's path: a camera's packets held back, handed to the core
/// with nothing delivered, then delivered: every viewer gets every frame, in order.
#[test]
fn held_packets_are_forwarded_to_every_viewer() {
    let (mut sim, camera, viewers) = camera_and_three_viewers_on_a_keyframe();
    for &v in &viewers {
        assert_eq!(
            sim.clients[v].video_frames().len(),
            1,
            "the keyframe arrived"
        );
    }
    let mut number = 1;
    let held = sim.held_video(camera, 20, 1_100, &mut number);
    assert_eq!(held.len(), 20, "one datagram per frame");
    assert_eq!(number, 21);
    let mut sent = Vec::new();
    sim.forward_only(&held, &mut sent);
    assert!(
        sent.len() >= 60,
        "20 packets for each of 3 viewers, got {}",
        sent.len()
    );
    for &v in &viewers {
        assert_eq!(
            sim.clients[v].video_frames().len(),
            1,
            "nothing delivered yet"
        );
    }
    sim.deliver(&mut sent);
    assert!(sent.is_empty());
    sim.run_for(Duration::from_millis(10));
    for &v in &viewers {
        let numbers: Vec<u32> = sim.clients[v]
            .video_frames()
            .iter()
            .map(|f| frame_id(&f.data).1)
            .collect();
        assert_eq!(numbers, (0..21).collect::<Vec<_>>());
    }
}

/// A keyframe whose first packet reaches the SFU after the rest (reordered, or repaired
/// by a retransmission) cannot start a viewer: the rest of it went by unforwarded. The
/// viewer keeps waiting (no undecodable deltas follow), asks for another keyframe, and
/// starts on the next one.
#[test]
fn a_keyframe_whose_start_comes_late_does_not_start_a_viewer() {
    let mut sim = Sim::new(Duration::from_secs(5));
    let camera = sim.publisher("room", "camera", &[]);
    let viewer = sim.viewer("room", "viewer");
    // The camera's stream is under way (deltas the viewer waits through).
    for n in 0..3 {
        sim.send_video(camera, None, &vp8_frame(false, 0, n, 500));
        sim.run_for(Duration::from_millis(100));
    }
    let mut held = sim.held_frame(camera, &vp8_frame(true, 0, 3, 3_000));
    assert!(held.len() >= 3, "a keyframe of several packets");
    held.reverse();
    let mut sent = Vec::new();
    sim.forward_only(&held, &mut sent);
    sim.deliver(&mut sent);
    let asked = sim.clients[camera].keyframe_requests.len();
    for n in 4..7 {
        sim.send_video(camera, None, &vp8_frame(false, 0, n, 500));
        sim.run_for(Duration::from_millis(100));
    }
    // Not a packet of it, nor of the deltas after it, was sent to the viewer.
    let vp8 = sim.clients[viewer].pt_of(MediaKind::Video, Codec::Vp8);
    assert_eq!(
        sim.clients[viewer].rtp_with_pt(vp8).len(),
        0,
        "nothing before a keyframe the viewer can decode"
    );
    assert!(
        sim.clients[camera].keyframe_requests.len() > asked,
        "the camera was asked for another keyframe"
    );
    sim.send_video(camera, None, &vp8_frame(true, 0, 7, 3_000));
    sim.run_for(Duration::from_millis(50));
    sim.send_video(camera, None, &vp8_frame(false, 0, 8, 500));
    sim.run_for(Duration::from_millis(50));
    assert_eq!(video_frame_numbers(&sim, viewer), [7, 8]);
}

/// A camera's packet reaches every viewer in the round it arrived in: str0m releases a
/// written packet only once its clock moves, and the core gives the viewers that time
/// itself rather than asking its driver for a wake-up and a second round.
#[test]
fn a_forwarded_packet_leaves_in_the_round_it_arrived() {
    let (mut sim, camera, viewers) = camera_and_three_viewers_on_a_keyframe();
    let mut number = 1;
    for _ in 0..5 {
        let held = sim.held_video(camera, 1, 1_100, &mut number);
        let (mut sent, wake_at) = sim.forward_one_round(&held[0]);
        for &v in &viewers {
            let addr = sim.clients[v].addr;
            assert!(
                sent.iter().any(|t| t.destination == addr),
                "viewer {v} got the packet in the same round"
            );
        }
        assert!(
            wake_at > held[0].at,
            "nothing left that wants the loop woken at once"
        );
        sim.deliver(&mut sent);
        sim.run_for(Duration::from_millis(30));
    }
    for &v in &viewers {
        assert_eq!(video_frame_numbers(&sim, v), [0, 1, 2, 3, 4, 5]);
    }
}

/// A round's datagrams come out viewer by viewer, each before the next viewer is polled,
/// so the driver can send them in batches while the rest of the round is still being
/// made; the round as a whole is unchanged.
#[test]
fn a_viewers_datagrams_come_out_before_the_next_viewer_is_polled() {
    let (mut sim, camera, viewers) = camera_and_three_viewers_on_a_keyframe();
    let addrs: Vec<_> = viewers.iter().map(|&v| sim.clients[v].addr).collect();
    let mut number = 1;
    for _ in 0..3 {
        let held = sim.held_video(camera, 1, 1_100, &mut number);
        let d = &held[0];
        sim.core.handle_timeout(d.at);
        sim.core
            .handle_datagram(d.at, Protocol::Udp, d.source, &d.data);
        let mut sent = Vec::new();
        // For each viewer's copy: how many viewers were still waiting to be polled.
        let mut waiting = Vec::new();
        loop {
            match sim.core.poll_output() {
                Output::Transmit(t) => {
                    if addrs.contains(&t.destination) {
                        waiting.push(sim.core.work.len());
                    }
                    sent.push(t);
                }
                Output::Timeout(t) if t <= d.at => sim.core.handle_timeout(d.at),
                Output::Timeout(_) => break,
                _ => {}
            }
        }
        assert_eq!(
            waiting,
            [2, 1, 0],
            "each copy left before the next viewer was polled"
        );
        sim.deliver(&mut sent);
        sim.run_for(Duration::from_millis(30));
    }
    for &v in &viewers {
        assert_eq!(video_frame_numbers(&sim, v), [0, 1, 2, 3]);
    }
}

/// Forwards `count` one-packet frames from `camera`, drops `viewer`'s copy of the `lost`-th
/// on the way, delivers the rest and returns the lost frame's number.
fn forward_losing_one(
    sim: &mut Sim,
    camera: ClientId,
    viewer: ClientId,
    number: &mut u32,
    count: usize,
    lost: usize,
) -> u32 {
    let first = *number;
    let held = sim.held_video(camera, count, 1_100, number);
    let mut sent = Vec::new();
    sim.forward_only(&held, &mut sent);
    let addr = sim.clients[viewer].addr;
    let vp8 = sim.clients[viewer].pt_of(MediaKind::Video, Codec::Vp8);
    let mut video_packets = 0;
    let before = sent.len();
    sent.retain(|t| {
        // The RTP header is not encrypted: its payload type shows through SRTP.
        if t.destination != addr || t.contents.len() < 12 || t.contents[1] & 0x7f != vp8 {
            return true;
        }
        video_packets += 1;
        video_packets != lost + 1
    });
    assert_eq!(
        sent.len(),
        before - 1,
        "one packet to the viewer was dropped"
    );
    sim.deliver(&mut sent);
    first + lost as u32
}

fn video_frame_numbers(sim: &Sim, client: ClientId) -> Vec<u32> {
    sim.clients[client]
        .video_frames()
        .iter()
        .map(|f| frame_id(&f.data).1)
        .collect()
}

fn watching(sim: &mut Sim) -> (ClientId, ClientId) {
    let camera = sim.publisher("room", "camera", &[]);
    let viewer = sim.viewer("room", "viewer");
    sim.send_video(camera, None, &vp8_frame(true, 0, 0, 1_100));
    sim.run_for(Duration::from_millis(100));
    assert_eq!(
        video_frame_numbers(sim, viewer),
        [0],
        "the keyframe arrived"
    );
    (camera, viewer)
}

#[test]
fn a_packet_lost_on_the_way_to_a_viewer_is_resent_on_its_nack() {
    let mut sim = Sim::new(Duration::from_secs(5));
    let (camera, viewer) = watching(&mut sim);
    let mut number = 1;
    let lost = forward_losing_one(&mut sim, camera, viewer, &mut number, 20, 5);
    assert!(!video_frame_numbers(&sim, viewer).contains(&lost));
    // Long enough for the per-second stats that count NACKs.
    sim.run_for(Duration::from_millis(1_200));
    assert!(sim.counters.nacks_received.load(Ordering::Relaxed) > 0);
    assert!(
        video_frame_numbers(&sim, viewer).contains(&lost),
        "the lost frame {lost} arrived once resent: {:?}",
        video_frame_numbers(&sim, viewer)
    );
}

/// Packets sent to `client` since the `since`-th that are neither VP8 nor Opus: resends
/// (RTX), as the viewers here do not probe bandwidth.
fn resent_to(sim: &mut Sim, client: ClientId, since: usize) -> usize {
    let vp8 = sim.clients[client].pt_of(MediaKind::Video, Codec::Vp8);
    let opus = sim.clients[client].pt_of(MediaKind::Audio, Codec::Opus);
    sim.clients[client].rtp_in[since..]
        .iter()
        .filter(|p| p.pt != vp8 && p.pt != opus)
        .count()
}

/// A viewer's retransmission cache is bounded (memory per viewer): a NACK for a packet
/// sent more than `VIDEO_RETRANSMIT_PACKETS` ago finds nothing to resend, while one for a
/// recent packet is answered.
#[test]
fn a_nack_past_the_retransmission_window_finds_nothing_to_resend() {
    for (frames, lost, resent) in [(120, 0, true), (300, 0, false)] {
        let mut sim = Sim::new(Duration::from_secs(5));
        let (camera, viewer) = watching(&mut sim);
        let mut number = 1;
        forward_losing_one(&mut sim, camera, viewer, &mut number, frames, lost);
        let since = sim.clients[viewer].rtp_in.len();
        sim.run_for(Duration::from_millis(1_200));
        assert!(
            sim.counters.nacks_received.load(Ordering::Relaxed) > 0,
            "the viewer asked for the lost packet"
        );
        assert_eq!(
            resent_to(&mut sim, viewer, since) > 0,
            resent,
            "lost the first of {frames}: resent?"
        );
    }
}

/// Transport-wide sequence numbers are negotiated only where TWCC feedback feeds an
/// estimator: with a camera (its encoder's) and with viewers of a simulcast camera (the
/// layer choice); a viewer of a single-layer camera is answered without them, so it keeps
/// no send register for them and sends no feedback.
#[test]
fn transport_cc_is_negotiated_only_where_an_estimator_uses_it() {
    const TRANSPORT_CC: &str = "transport-wide-cc";
    let mut sim = Sim::new(Duration::ZERO);
    sim.publisher("single", "cam", &[]);
    sim.publisher("layers", "cam2", &["h", "l"]);
    let answer = |sim: &mut Sim, room: &str, id: &str, publisher: bool| {
        let mut rtc = str0m::Rtc::builder().build(sim.now);
        let dir = if publisher {
            str0m::media::Direction::SendOnly
        } else {
            str0m::media::Direction::RecvOnly
        };
        let mut change = rtc.sdp_api();
        change.add_media(MediaKind::Audio, dir, None, None, None);
        change.add_media(MediaKind::Video, dir, None, None, None);
        let offer = change.apply().expect("offer").0.to_sdp_string();
        assert!(offer.contains(TRANSPORT_CC), "the offer asks for it");
        sim.core
            .join(sim.now, room, id, owned_by(id), publisher, &offer)
            .expect("answered")
    };
    let single = answer(&mut sim, "single", "viewer", false);
    assert!(!single.contains(TRANSPORT_CC), "{single}");
    assert!(
        single.contains("a=extmap:"),
        "other extensions stay: {single}"
    );
    assert!(answer(&mut sim, "layers", "viewer2", false).contains(TRANSPORT_CC));
    assert!(answer(&mut sim, "fresh", "cam3", true).contains(TRANSPORT_CC));
}

/// A STUN binding request whose USERNAME names the server's `ufrag`, well formed but with
/// a MESSAGE-INTEGRITY nobody computed: the routing reads the USERNAME before str0m
/// checks integrity.
fn check_naming(ufrag: &str) -> Vec<u8> {
    let username = format!("{ufrag}:remote");
    let padded = username.len().div_ceil(4) * 4;
    let body = 8 + 4 + padded + 24;
    let mut packet = vec![0x00, 0x01, 0x00, body as u8, 0x21, 0x12, 0xa4, 0x42];
    packet.extend_from_slice(&[9; 12]);
    packet.extend_from_slice(&[0x00, 0x24, 0x00, 0x04, 1, 2, 3, 4]);
    packet.extend_from_slice(&[0x00, 0x06, 0x00, username.len() as u8]);
    packet.extend_from_slice(username.as_bytes());
    packet.resize(20 + 8 + 4 + padded, 0);
    packet.extend_from_slice(&[0x00, 0x08, 0x00, 20]);
    packet.extend_from_slice(&[0xab; 20]);
    packet
}

/// Checks naming one transport from ever more source addresses (spoofed, say) keep only
/// its most recently checked addresses routed; the transport still gets its media, and
/// leaving takes all of its routes with it.
#[test]
fn checks_from_ever_more_addresses_keep_the_newest_routed() {
    let mut sim = Sim::new(Duration::ZERO);
    let camera = sim.publisher("room", "cam", &[]);
    let viewer = sim.viewer("room", "v");
    let (&key, peer) = sim
        .core
        .peers
        .iter()
        .find(|(_, p)| p.id == "v")
        .expect("the viewer's transport");
    let check = check_naming(&peer.ufrag.clone());
    let routes_before = sim.core.by_addr.len();
    for n in 0..500u16 {
        let source = std::net::SocketAddr::from(([10, 9, (n >> 8) as u8, n as u8], 5000));
        let now = sim.now;
        sim.core.handle_datagram(now, Protocol::Udp, source, &check);
    }
    let viewer_routes = sim.core.by_addr.values().filter(|k| **k == key).count();
    assert_eq!(viewer_routes, super::MAX_BOUND_ADDRS);
    assert!(sim.core.by_addr.len() <= routes_before + super::MAX_BOUND_ADDRS);
    // Its own address checks again (consent) and keeps receiving.
    let sent = stream(&mut sim, camera, 0, 150, true);
    assert_eq!(received_video(&sim, viewer).last(), sent.last());
    sim.leave("room", "v");
    assert!(sim.core.by_addr.values().all(|k| *k != key));
}
