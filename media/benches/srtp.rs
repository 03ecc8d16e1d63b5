//! What the SRTP profile costs per forwarded packet: one protect of a 1,200-byte RTP packet
//! under each profile str0m offers, through the crypto provider the SFU installs (aws-lc-rs,
//! AES-NI and carry-less multiply where the CPU has them), done the way str0m's
//! `SrtpContext::protect_rtp` does it: a fresh output buffer, the payload encrypted into it
//! behind the header, and for AES-CM the HMAC-SHA1 tag over header, ciphertext and
//! rollover counter.
//!
//! str0m prefers AEAD_AES_256_GCM, then AEAD_AES_128_GCM, then AES128_CM_HMAC_SHA1_80, and
//! browsers offer all three, so every viewer is protected with AES-256-GCM; this benchmark
//! records what that preference buys over the mandatory-to-implement profile.
//!
//! ```sh
//! cargo bench -p watchpost-media --bench srtp
//! ```

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput};
use str0m::crypto::{AeadAes128Gcm, AeadAes256Gcm, Aes128CmSha1_80};

/// An RTP header with one-byte extensions (a VP8 viewer's: 12 bytes, then 8 of extensions).
const HEADER: usize = 20;
const PACKET: usize = 1_200;

fn packet() -> Vec<u8> {
    let mut p: Vec<u8> = (0..PACKET).map(|i| (i * 7 + 3) as u8).collect();
    p[0] = 0x90; // V=2, X=1
    p
}

fn protect(c: &mut Criterion, quick: bool) {
    let provider = str0m::crypto::from_feature_flags();
    let srtp = provider.srtp_provider;
    let hmac = provider.sha1_hmac_provider;
    let buf = packet();
    let (aad, input) = buf.split_at(HEADER);

    let mut group = c.benchmark_group("SRTP protect, one 1,200-byte RTP packet");
    group
        .sample_size(if quick { 10 } else { 50 })
        .measurement_time(Duration::from_secs(if quick { 1 } else { 3 }))
        .throughput(Throughput::Bytes(PACKET as u64));

    let mut gcm256 = srtp.aead_aes_256_gcm().create_cipher([7; 32], true);
    group.bench_function("AEAD_AES_256_GCM", |b| {
        let mut seq = 0u16;
        b.iter(|| {
            seq = seq.wrapping_add(1);
            let iv = AeadAes256Gcm::rtp_iv([1; 12], 0x1234_5678, 0, seq);
            let mut out = vec![0u8; PACKET + AeadAes256Gcm::TAG_LEN];
            gcm256
                .encrypt(&iv, aad, input, &mut out[HEADER..])
                .expect("encrypt");
            out[..HEADER].copy_from_slice(aad);
            black_box(out)
        })
    });

    let mut gcm128 = srtp.aead_aes_128_gcm().create_cipher([7; 16], true);
    group.bench_function("AEAD_AES_128_GCM", |b| {
        let mut seq = 0u16;
        b.iter(|| {
            seq = seq.wrapping_add(1);
            let iv = AeadAes128Gcm::rtp_iv([1; 12], 0x1234_5678, 0, seq);
            let mut out = vec![0u8; PACKET + AeadAes128Gcm::TAG_LEN];
            gcm128
                .encrypt(&iv, aad, input, &mut out[HEADER..])
                .expect("encrypt");
            out[..HEADER].copy_from_slice(aad);
            black_box(out)
        })
    });

    let mut ctr = srtp.aes_128_cm_sha1_80().create_cipher([7; 16], true);
    let auth_key = [9u8; Aes128CmSha1_80::HMAC_KEY_LEN];
    group.bench_function("AES128_CM_HMAC_SHA1_80", |b| {
        let mut index = 0u64;
        b.iter(|| {
            index += 1;
            let iv = Aes128CmSha1_80::rtp_iv([1; 14], 0x1234_5678, index);
            // aws-lc's CTR wants 15 bytes of scratch behind the payload, as in str0m.
            let mut out = vec![0u8; PACKET + 15];
            ctr.encrypt(&iv, input, &mut out[HEADER..])
                .expect("encrypt");
            out[..HEADER].copy_from_slice(aad);
            let sha1_hmac = |k: &[u8], p: &[&[u8]]| hmac.sha1_hmac(k, p);
            Aes128CmSha1_80::rtp_hmac(sha1_hmac, &auth_key, &mut out, index, PACKET);
            out.truncate(PACKET + Aes128CmSha1_80::HMAC_TAG_LEN);
            black_box(out)
        })
    });
    group.finish();
}

fn main() {
    // `cargo test --all-targets -- --test-threads=N` hands the harness's flags to every
    // target, and criterion's argument parser refuses them: only `cargo bench` (which passes
    // `--bench`) gets criterion's options; a test run is a short measurement of each.
    let bench = std::env::args().any(|a| a == "--bench");
    let mut c = if bench {
        Criterion::default().configure_from_args()
    } else {
        // Its figures (a debug build) stay out of the benchmark's saved baseline.
        Criterion::default()
            .warm_up_time(Duration::from_millis(100))
            .output_directory(&std::env::temp_dir().join("watchpost-srtp-smoke"))
    };
    protect(&mut c, !bench);
    c.final_summary();
}
