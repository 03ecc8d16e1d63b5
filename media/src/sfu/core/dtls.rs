//! The SFU's DTLS: one identity and one handshake configuration for every peer.
//!
//! A peer's `Rtc` asks its crypto provider for a DTLS endpoint when it is built, on the
//! media loop, while the room's packets wait. str0m's stock provider makes a new
//! certificate (a key pair and a signature) unless given one, and builds a new dimpl
//! configuration each time, and building one checks the crypto backend end to end: a key
//! exchange on every supported group and signature checks, ~0.8 ms of a ~1.3 ms join.
//! Here both are made once: the certificate when the SFU starts, the configuration on the
//! first join; each peer's endpoint starts from them. Every session still gets its own
//! ephemeral keys and its own SRTP keys from its handshake.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use str0m::crypto::dtls::{
    DtlsCert, DtlsImplError, DtlsInstance, DtlsOutput, DtlsProvider, DtlsVersion, ProtocolVersion,
};
use str0m::crypto::{CryptoError, CryptoProvider};

/// The certificate the SFU presents to every peer, made once when it starts. One identity
/// per server is what WebRTC servers present: each answer's fingerprint pins it. `None` if
/// the crypto backend cannot make one.
pub(crate) fn identity() -> Option<DtlsCert> {
    str0m::crypto::from_feature_flags()
        .dtls_provider
        .generate_certificate()
}

/// The compiled-in crypto backend (aws-lc-rs) with DTLS endpoints made from a shared
/// configuration.
pub(crate) fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(CryptoProvider {
        dtls_provider: &SHARED,
        ..str0m::crypto::from_feature_flags()
    })
}

static SHARED: SharedConfigDtls = SharedConfigDtls {
    configs: Mutex::new(Vec::new()),
};

/// Makes DTLS endpoints (dimpl on aws-lc-rs, as str0m's own provider does) from one
/// configuration per MTU, built and checked once.
#[derive(Debug)]
struct SharedConfigDtls {
    /// By MTU; str0m asks with one value, so this holds one entry.
    configs: Mutex<Vec<(Option<usize>, Arc<dimpl::Config>)>>,
}

impl SharedConfigDtls {
    fn config(&self, mtu: Option<usize>) -> Result<Arc<dimpl::Config>, CryptoError> {
        let mut configs = self.configs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, config)) = configs.iter().find(|(m, _)| *m == mtu) {
            return Ok(config.clone());
        }
        // ICE has checked the peer's address before DTLS starts: a cookie round adds
        // nothing (str0m's own provider leaves it out too).
        let mut builder = dimpl::Config::builder().use_server_cookie(false);
        if let Some(mtu) = mtu {
            builder = builder.mtu(mtu);
        }
        let config = Arc::new(
            builder
                .build()
                .map_err(|e| CryptoError::Other(format!("DTLS configuration: {e}")))?,
        );
        configs.push((mtu, config.clone()));
        Ok(config)
    }
}

impl DtlsProvider for SharedConfigDtls {
    fn generate_certificate(&self) -> Option<DtlsCert> {
        identity()
    }

    fn new_dtls(
        &self,
        cert: &DtlsCert,
        now: Instant,
        version: DtlsVersion,
        mtu: Option<usize>,
    ) -> Result<Box<dyn DtlsInstance>, CryptoError> {
        let config = self.config(mtu)?;
        let cert = cert.clone();
        let dtls = match version {
            DtlsVersion::Dtls12 => dimpl::Dtls::new_12(config, cert, now),
            DtlsVersion::Dtls13 => dimpl::Dtls::new_13(config, cert, now),
            DtlsVersion::Auto => dimpl::Dtls::new_auto(config, cert, now),
            other => return Err(CryptoError::Other(format!("DTLS version {other:?}"))),
        };
        Ok(Box::new(Endpoint(dtls)))
    }
}

/// One peer's DTLS endpoint.
struct Endpoint(dimpl::Dtls);

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Endpoint")
    }
}

impl DtlsInstance for Endpoint {
    fn set_active(&mut self, active: bool) {
        self.0.set_active(active);
    }

    fn handle_packet(&mut self, packet: &[u8]) -> Result<(), DtlsImplError> {
        self.0.handle_packet(packet)
    }

    fn poll_output<'a>(&mut self, buf: &'a mut [u8]) -> DtlsOutput<'a> {
        self.0.poll_output(buf)
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), DtlsImplError> {
        self.0.handle_timeout(now)
    }

    fn send_application_data(&mut self, data: &[u8]) -> Result<usize, DtlsImplError> {
        self.0.send_application_data(data)
    }

    fn is_active(&self) -> bool {
        self.0.is_active()
    }

    fn protocol_version(&self) -> Option<ProtocolVersion> {
        self.0.protocol_version()
    }

    fn is_closing(&self) -> bool {
        self.0.is_closing()
    }

    fn is_closed(&self) -> bool {
        self.0.is_closed()
    }

    fn close(&mut self) -> Result<(), DtlsImplError> {
        self.0.close()
    }
}
