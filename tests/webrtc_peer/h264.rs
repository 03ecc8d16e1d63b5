//! H.264 test access units and their RTP packetization (RFC 6184, mode 1), both ways.

/// H.264 access units as NAL units (without start codes): a keyframe is SPS, PPS and an
/// IDR slice, other frames one non-IDR slice. Index and filler are chosen so no NAL holds
/// two zero bytes in a row, which keeps Annex-B start codes out of the payload.
pub fn h264_frame(index: u32, keyframe: bool) -> Vec<Vec<u8>> {
    let slice = |header: u8| {
        let mut nal = vec![header];
        nal.extend_from_slice(H264_MAGIC);
        nal.extend_from_slice(format!("{index:010}").as_bytes());
        let len = 100 + (index as usize * 397) % 3000;
        nal.extend((0..len).map(|k| (index as usize * 31 + k * 7) as u8 | 1));
        nal
    };
    if keyframe {
        vec![
            // Baseline profile 3.1, matching profile-level-id=42001f.
            vec![0x67, 0x42, 0x00, 0x1f, 0x95, 0xa8, 0x14, 0x01, 0x6e, 0x40],
            vec![0x68, 0xce, 0x3c, 0x80],
            slice(0x65),
        ]
    } else {
        vec![slice(0x41)]
    }
}

const H264_MAGIC: &[u8; 3] = b"WPH";

/// Checks a received access unit: `(index, keyframe)` if it is exactly what was sent.
pub fn check_h264_frame(nals: &[Vec<u8>]) -> Option<(u32, bool)> {
    let slice = nals.last()?;
    let keyframe = slice.first()? & 0x1f == 5;
    if slice.get(1..4)? != H264_MAGIC {
        return None;
    }
    let index: u32 = std::str::from_utf8(slice.get(4..14)?).ok()?.parse().ok()?;
    (h264_frame(index, keyframe) == nals).then_some((index, keyframe))
}

/// RTP payloads for one access unit (RFC 6184 packetization mode 1): small NAL units as
/// they are, large ones as FU-A fragments.
pub(super) fn h264_payloads(nals: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut payloads = Vec::new();
    for nal in nals {
        if nal.len() <= 1000 {
            payloads.push(nal.clone());
            continue;
        }
        let chunks: Vec<&[u8]> = nal[1..].chunks(1000).collect();
        for (k, chunk) in chunks.iter().enumerate() {
            let mut fu_header = nal[0] & 0x1f;
            if k == 0 {
                fu_header |= 0x80;
            }
            if k + 1 == chunks.len() {
                fu_header |= 0x40;
            }
            let mut payload = vec![(nal[0] & 0xe0) | 28, fu_header];
            payload.extend_from_slice(chunk);
            payloads.push(payload);
        }
    }
    payloads
}

/// Splits one access unit's RTP payloads back into NAL units (single NAL, STAP-A, FU-A).
pub(super) fn h264_nals(payloads: &[Vec<u8>]) -> Option<Vec<Vec<u8>>> {
    let mut nals = Vec::new();
    let mut fragment: Option<Vec<u8>> = None;
    for p in payloads {
        match p.first()? & 0x1f {
            1..=23 => nals.push(p.clone()),
            24 => {
                let mut at = 1;
                while at + 2 <= p.len() {
                    let len = u16::from_be_bytes([p[at], p[at + 1]]) as usize;
                    nals.push(p.get(at + 2..at + 2 + len)?.to_vec());
                    at += 2 + len;
                }
            }
            28 => {
                let fu = *p.get(1)?;
                if fu & 0x80 != 0 {
                    fragment = Some(vec![(p[0] & 0xe0) | (fu & 0x1f)]);
                }
                fragment.as_mut()?.extend_from_slice(p.get(2..)?);
                if fu & 0x40 != 0 {
                    nals.push(fragment.take()?);
                }
            }
            _ => return None,
        }
    }
    Some(nals)
}
