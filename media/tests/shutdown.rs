//! The media plane's stop path, against the real sockets.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::Rtc;
use str0m::media::{Direction, MediaKind};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpStream, UdpSocket};
use watchpost_media::sfu::{MediaEvent, Owner, SfuConfig, SfuError};
use watchpost_media::{MediaEngine, MediaLimits, MediaMode};

fn offer() -> String {
    let mut rtc = Rtc::builder().build(Instant::now());
    let mut change = rtc.sdp_api();
    change.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
    change.apply().expect("an offer").0.to_sdp_string()
}

#[tokio::test]
async fn shutdown_closes_peers_and_stops_loops_router_and_ice_tcp() {
    let engine = MediaEngine::start(
        MediaMode::SingleServerSfu,
        MediaLimits::server_wide(4, 4),
        SfuConfig {
            bind: "127.0.0.1:0".parse().expect("address"),
            public_ips: Vec::new(),
            shards: 2,
            reconnect_grace: Duration::from_secs(5),
        },
    )
    .await
    .expect("started");
    let sfu = engine.sfu().expect("an SFU").clone();
    let addr: SocketAddr = sfu.local_addr();
    let mut events = sfu.subscribe_events();
    sfu.publish("room", "cam", Owner::default(), offer())
        .await
        .expect("answered");
    let mut tcp = TcpStream::connect(addr).await.expect("ICE-TCP listens");
    // The port is taken while the SFU runs.
    assert!(UdpSocket::bind(addr).await.is_err());

    let started = Instant::now();
    engine.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // Harmless twice, from any clone.
    engine.shutdown().await;
    sfu.shutdown().await;

    assert_eq!(
        events.try_recv().expect("an event"),
        MediaEvent::PublisherLeft {
            room: "room".into(),
            reason: "media server stopping".into()
        }
    );
    // The open ICE-TCP connection was closed and the listener is gone.
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(1), tcp.read(&mut buf))
        .await
        .expect("the connection ended");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(TcpStream::connect(addr).await.is_err());
    // The router and the shards let go of the UDP socket.
    UdpSocket::bind(addr)
        .await
        .expect("the UDP port is free again");

    assert!(matches!(
        sfu.publish("room2", "cam", Owner::default(), offer()).await,
        Err(SfuError::Stopped)
    ));
    assert!(matches!(
        sfu.subscribe("room", "v", Owner::default(), offer()).await,
        Err(SfuError::Stopped)
    ));
    assert!(sfu.describe("room").await.is_empty());
}
