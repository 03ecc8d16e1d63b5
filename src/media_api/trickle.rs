//! Trickled ICE input, checked before it is accepted. The server is ICE-lite and learns a
//! client's addresses from its connectivity checks, so nothing trickled is acted on; it is
//! still checked, so that a broken client hears about it instead of a silent 204.

use std::net::IpAddr;

/// The largest trickle body taken (`PATCH` on a WHIP/WHEP resource): a fragment carries a
/// handful of candidate lines, each well under 256 bytes.
pub const MAX_SDPFRAG_BYTES: usize = 16 * 1024;

/// One ICE candidate (RFC 8839 §5.1), with or without its `a=` prefix:
/// `candidate:<foundation> <component> <transport> <priority> <address> <port> typ <type> …`.
pub fn check_candidate(line: &str) -> Result<(), String> {
    let line = line.strip_prefix("a=").unwrap_or(line);
    let Some(rest) = line.strip_prefix("candidate:") else {
        return Err("a candidate line starts with candidate:".into());
    };
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    let [
        foundation,
        component,
        transport,
        priority,
        address,
        port,
        typ,
        kind,
        ..,
    ] = fields.as_slice()
    else {
        return Err("a candidate has at least 8 fields".into());
    };
    let is_token = |s: &str| {
        !s.is_empty()
            && s.len() <= 32
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+/".contains(&b))
    };
    if !is_token(foundation) {
        return Err("candidate foundation must be 1-32 letters, digits, + or /".into());
    }
    if !component.parse::<u8>().is_ok_and(|c| c >= 1) {
        return Err("candidate component must be 1-255".into());
    }
    if !transport.eq_ignore_ascii_case("udp") && !transport.eq_ignore_ascii_case("tcp") {
        return Err("candidate transport must be udp or tcp".into());
    }
    if priority.parse::<u32>().is_err() {
        return Err("candidate priority must be a 32-bit number".into());
    }
    check_address(address)?;
    if port.parse::<u16>().is_err() {
        return Err("candidate port must be 0-65535".into());
    }
    if *typ != "typ" || !["host", "srflx", "prflx", "relay"].contains(kind) {
        return Err("candidate type must be typ host, srflx, prflx or relay".into());
    }
    Ok(())
}

/// An IP address, or a name (an mDNS `.local` name hides a browser's own address). Text
/// that looks like an IPv4 address must be one.
fn check_address(address: &str) -> Result<(), String> {
    if address.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    let looks_numeric = address.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    let is_name = !address.is_empty()
        && address.len() <= 253
        && address
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.".contains(&b));
    if looks_numeric || !is_name {
        return Err("candidate address must be an IP address or a host name".into());
    }
    Ok(())
}

/// A trickle-ICE SDP fragment (RFC 8840): SDP lines (`x=…`), its candidates well formed.
pub fn check_sdpfrag(body: &str) -> Result<(), String> {
    for line in body.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        if line.chars().any(char::is_control) {
            return Err("the fragment holds control characters".into());
        }
        let bytes = line.as_bytes();
        if bytes.len() < 2 || !bytes[0].is_ascii_lowercase() || bytes[1] != b'=' {
            return Err("every line of the fragment is an SDP line (x=...)".into());
        }
        if line.starts_with("a=candidate:") {
            check_candidate(line)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_formed_candidates_pass() {
        for line in [
            "candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host",
            "a=candidate:842163049 1 udp 1677729535 203.0.113.7 61234 typ srflx raddr 0.0.0.0 rport 0 generation 0",
            "candidate:2 1 tcp 1518280447 ::1 9 typ host tcptype active",
            "candidate:3 1 UDP 2122262783 9b36eaac-bb2e-49bb-bb78-21c41c499900.local 54321 typ host",
            "candidate:Zm9v+/ 2 udp 1 relay.example.net 3478 typ relay",
        ] {
            assert_eq!(check_candidate(line), Ok(()), "{line}");
        }
    }

    #[test]
    fn malformed_candidates_are_refused() {
        for line in [
            "",
            "not a candidate",
            "candidate:",
            "candidate:1 1 udp 1 127.0.0.1 9 typ",
            "candidate:1 0 udp 1 127.0.0.1 9 typ host",
            "candidate:1 1 sctp 1 127.0.0.1 9 typ host",
            "candidate:1 1 udp -1 127.0.0.1 9 typ host",
            "candidate:1 1 udp 99999999999 127.0.0.1 9 typ host",
            "candidate:1 1 udp 1 999.1.1.1 9 typ host",
            "candidate:1 1 udp 1 127.0.0.1 99999 typ host",
            "candidate:1 1 udp 1 127.0.0.1 9 kind host",
            "candidate:1 1 udp 1 127.0.0.1 9 typ other",
            "candidate:1 1 udp 1 bad_name! 9 typ host",
        ] {
            assert!(check_candidate(line).is_err(), "{line}");
        }
    }

    #[test]
    fn fragments_are_sdp_lines_with_sound_candidates() {
        let good = "a=ice-ufrag:EsAw\r\na=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\nm=audio 9 RTP/AVP 0\r\na=mid:0\r\na=candidate:1 1 udp 2122260223 192.0.2.1 50000 typ host\r\na=end-of-candidates\r\n";
        assert_eq!(check_sdpfrag(good), Ok(()));
        assert_eq!(check_sdpfrag(""), Ok(()));
        for bad in [
            "garbage\u{0}",
            "garbage",
            "a=candidate:1 1 udp 1 999.1.1.1 99999 typ host",
            "a=ice-ufrag:x\u{7}y",
            "A=candidate:1 1 udp 1 127.0.0.1 9 typ host",
        ] {
            assert!(check_sdpfrag(bad).is_err(), "{bad:?}");
        }
    }
}
