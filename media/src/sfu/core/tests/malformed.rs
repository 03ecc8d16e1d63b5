//! Offers from the outside world: whatever bytes arrive as an SDP offer, the media core
//! answers with an error (never a panic), and stays able to serve the next real peer.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use proptest::prelude::*;
use str0m::media::{Direction, MediaKind};
use str0m::{Candidate, Rtc};

use super::super::sim::{Sim, owned_by};
use crate::sfu::check_offer_size;

/// A real offer from a str0m peer (audio + video), as a camera would send it.
fn real_offer(publisher: bool) -> String {
    let mut rtc = Rtc::builder().build(std::time::Instant::now());
    let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 9, 9, 9)), 4000);
    rtc.add_local_candidate(Candidate::host(addr, "udp").expect("candidate"));
    let dir = if publisher {
        Direction::SendOnly
    } else {
        Direction::RecvOnly
    };
    let mut change = rtc.sdp_api();
    change.add_media(MediaKind::Audio, dir, None, None, None);
    change.add_media(MediaKind::Video, dir, None, None, None);
    let (offer, _) = change.apply().expect("an offer");
    offer.to_sdp_string()
}

/// What the HTTP layer and the core do with an offer: the size check, then the join.
fn offer_to_core(sim: &mut Sim, participant: &str, offer: &str) -> bool {
    // Each participant in a room of its own: one publisher per room is a rule, not a fault.
    if check_offer_size(offer).is_err() {
        return false;
    }
    let now = sim.now;
    sim.core
        .join(
            now,
            participant,
            participant,
            owned_by(participant),
            true,
            offer,
        )
        .is_ok()
}

/// One way of damaging a real offer's lines.
#[derive(Debug, Clone)]
enum Damage {
    Drop(usize),
    Repeat(usize),
    Replace(usize, String),
    Truncate(usize),
    FlipByte(usize, u8),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        any::<usize>().prop_map(Damage::Drop),
        any::<usize>().prop_map(Damage::Repeat),
        (any::<usize>(), any::<String>()).prop_map(|(i, s)| Damage::Replace(i, s)),
        any::<usize>().prop_map(Damage::Truncate),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Damage::FlipByte(i, b)),
    ]
}

fn apply(offer: &str, damages: &[Damage]) -> String {
    let mut lines: Vec<String> = offer.lines().map(str::to_string).collect();
    for d in damages {
        if lines.is_empty() {
            break;
        }
        let n = lines.len();
        match d {
            Damage::Drop(i) => {
                lines.remove(i % n);
            }
            Damage::Repeat(i) => {
                let line = lines[i % n].clone();
                lines.insert(i % n, line);
            }
            Damage::Replace(i, s) => lines[i % n] = s.clone(),
            Damage::Truncate(i) => {
                let line = &mut lines[i % n];
                let mut cut = i % (line.len() + 1);
                while !line.is_char_boundary(cut) {
                    cut -= 1;
                }
                line.truncate(cut);
            }
            Damage::FlipByte(i, b) => {
                let line = &mut lines[i % n];
                let mut bytes = std::mem::take(line).into_bytes();
                if !bytes.is_empty() {
                    let at = i % bytes.len();
                    bytes[at] = *b;
                }
                *line = String::from_utf8_lossy(&bytes).into_owned();
            }
        }
    }
    lines.join("\r\n") + "\r\n"
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Any text is refused (or, if it happens to be an offer, answered): never a panic.
    #[test]
    fn arbitrary_text_is_never_a_panic(text in any::<String>()) {
        let mut sim = Sim::new(Duration::ZERO);
        prop_assert!(!offer_to_core(&mut sim, "junk", &text) || text.starts_with("v=0"));
    }

    /// Arbitrary bytes in an SDP-shaped envelope.
    #[test]
    fn sdp_shaped_garbage_is_never_a_panic(
        lines in proptest::collection::vec(("[vosctmab]", any::<String>()), 0..40)
    ) {
        let text: String = lines.iter().map(|(k, v)| format!("{k}={v}\r\n")).collect();
        let mut sim = Sim::new(Duration::ZERO);
        let _ = offer_to_core(&mut sim, "junk", &text);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// A real offer damaged in up to four places is refused or answered, never a panic,
    /// and the core still takes the next real peer.
    #[test]
    fn damaged_real_offers_are_never_a_panic(
        damages in proptest::collection::vec(damage(), 1..5),
        publisher in any::<bool>(),
    ) {
        let mut sim = Sim::new(Duration::ZERO);
        let damaged = apply(&real_offer(publisher), &damages);
        let _ = offer_to_core(&mut sim, "damaged", &damaged);
        prop_assert!(offer_to_core(&mut sim, "real", &real_offer(true)));
    }
}

#[test]
fn oversized_and_many_lined_offers_are_refused_before_parsing() {
    let big = format!("{}a=x:{}\r\n", real_offer(true), "y".repeat(70 * 1024));
    assert!(check_offer_size(&big).is_err());
    let many = real_offer(true) + &"m=video 9 UDP/TLS/RTP/SAVPF 96\r\n".repeat(9);
    assert!(check_offer_size(&many).is_err());
    assert!(check_offer_size(&real_offer(true)).is_ok());
}
